"""Names shared across the process boundary: Triton models, their tensors, and the files the
export writes into the model repository."""
from __future__ import annotations

SEED_MODEL = "mrm8488/t5-base-finetuned-squadv2"  # the checkpoint served by default

# Models of the repository (`serving.repository` writes their configs).
QA = "t5_qa"  # the token-id ensemble clients call
QA_TEXT = "t5_qa_text"  # the text ensemble
VALIDATE = "t5_validate"
ENCODER = "t5_encoder"
DECODER = "t5_decoder"
DECODER_INIT = "t5_decoder_init"  # first decoder step, TensorRT only (split graphs)
GREEDY = "t5_greedy"
TOKENIZER = "t5_tokenizer"  # both ends of the text ensemble: text to token ids, generated ids to text

# Tensors clients send and receive.
INPUT_IDS, ATTENTION_MASK, MAX_NEW_TOKENS = "input_ids", "attention_mask", "max_new_tokens"
OUTPUT_IDS, OUTPUT_LENGTHS, OUTPUT_SCORES = "output_ids", "output_lengths", "output_scores"
GENERATION_OUTPUTS = (OUTPUT_IDS, OUTPUT_LENGTHS, OUTPUT_SCORES)
QUESTION, CONTEXT, NO_ANSWER_THRESHOLD = "question", "context", "no_answer_threshold"
ANSWER, SCORE, NO_ANSWER = "answer", "score", "no_answer"
# Between the ensemble's steps.
ENCODER_HIDDEN_STATES = "encoder_hidden_states"
LAST_HIDDEN_STATE = "last_hidden_state"  # the encoder graph's output

# Files in the model repository, relative to its root.
MANIFEST = "export_manifest.json"
GRAPH = "model.onnx"  # in each graph model's version folder
ENGINE = "model.plan"
TOKENIZER_FILE = f"{TOKENIZER}/1/tokenizer.json"  # the exported checkpoint's own tokenizer
CHECKPOINT = f"{GREEDY}/1/checkpoint"  # config and weights, for t5_greedy's `torch` executor


def version_file(model: str, filename: str = GRAPH) -> str:
    """`<model>/1/<filename>`, relative to the repository root."""
    return f"{model}/1/{filename}"
