"""Seeded T5 checkpoints with random weights, for machines that cannot reach the Hugging Face
Hub, in the layouts and file formats users bring: the t5-base architecture (223M parameters),
t5-small, a tiny one, and tiny variants of the other T5-family shapes (a decoder deeper than
the encoder, heads narrower than the model, T5 v1.1/flan-t5's gated-GELU with an untied
`lm_head`, other relative-attention buckets); weights as safetensors or `pytorch_model.bin`; the
real t5-base tokenizer as `tokenizer.json` or, as 2020-era Hub repositories ship it, only
`spiece.model`. Their answers are meaningless; `config.json` carries `t5qa_demo` so that every
later stage (export manifest, served config, client) can say so.

One adjustment keeps the random model from answering every question with `<pad>`: with tied
embeddings, the decoder start token's own embedding dominates the first logits, so it is
shrunk (x0.01), and the output then depends on the input. (`realistic` shrinks every
embedding instead.)

`realistic=True` makes the checkpoint behave like a trained one where serving can go wrong:
logits in the hundreds (the decoder's final norm is scaled so that the largest |logit| is
about 150), and answers that end with `</s>` after different numbers of tokens (`</s>` takes
the output embedding of a token the model produces, enlarged by 5%, chosen so that some of the
tuning prompts, the export validation's included, stop early at different steps, some at the
first where a token allows it (an empty answer: the model abstains), and others run to the limit)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer, T5TokenizerFast

from shared_data import T5_TOKENIZER_DIR

SHARED_TOKENIZER = T5_TOKENIZER_DIR

COMMON = dict(vocab_size=32128, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
              feed_forward_proj="relu", tie_word_embeddings=True, relative_attention_num_buckets=32)
TINY = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4)
SIZES = {
    "base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
    "small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
    "tiny": TINY,
    "tiny-deep-decoder": {**TINY, "num_decoder_layers": 3},  # transformers' generate cannot decode it
    "tiny-narrow-heads": {**TINY, "d_kv": 8},  # d_kv * num_heads = 32 != d_model = 64
    "tiny-v1.1": {**TINY, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},  # flan-t5's
    "tiny-relative-buckets": {**TINY, "relative_attention_num_buckets": 16, "relative_attention_max_distance": 48},
}
WEIGHTS = ("safetensors", "bin")
TOKENIZER_FORMATS = ("tokenizer.json", "spiece.model")
TARGET_MAX_LOGIT = 150.0
TUNING_TOKENS = 16


def is_demo(config: T5Config) -> bool:
    return bool(getattr(config, "t5qa_demo", None))


def build_demo_model(size: str, output: Path, seed: int = 0, tokenizer_dir: Path = SHARED_TOKENIZER,
                     weights: str = "safetensors", tokenizer_format: str = "tokenizer.json",
                     realistic: bool = False) -> Path:
    """Write a random-weight checkpoint of layout `size` (see `SIZES`) to `output`."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {sorted(SIZES)}")
    if weights not in WEIGHTS or tokenizer_format not in TOKENIZER_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHTS} and the tokenizer one of {TOKENIZER_FORMATS}")
    tokenizer_file = tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"t5-base tokenizer not found at {tokenizer_file} (set T5QA_SHARED_DATA)")
    config = T5Config(**{**COMMON, **SIZES[size]})
    config.t5qa_demo = {"size": size, "seed": seed, "realistic": realistic}
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    if realistic:
        make_realistic(model, T5TokenizerFast(tokenizer_file=str(tokenizer_file)).backend_tokenizer)
    else:
        with torch.no_grad():
            model.shared.weight[config.decoder_start_token_id] *= 0.01
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=weights == "safetensors")
    if tokenizer_format == "tokenizer.json":
        T5TokenizerFast(tokenizer_file=str(tokenizer_file), model_max_length=512).save_pretrained(output)
    else:
        T5Tokenizer(vocab_file=str(tokenizer_dir / "spiece.model"), model_max_length=512,
                    legacy=True).save_pretrained(output)
        (output / "tokenizer.json").unlink(missing_ok=True)
    return output


def tuning_pairs() -> list[tuple[str, str]]:
    """The export validation's prompts, then 28 SQuAD 2.0 dev questions spread over the set."""
    from shared_data import load_questions, select
    from export.validate import VALIDATION_PAIRS

    return VALIDATION_PAIRS + [(q.question, q.context) for q in select(load_questions(), 28)]


def make_realistic(model: T5ForConditionalGeneration, tokenizer) -> None:
    """Large logits and early stops at different steps, in place (see the module docstring)."""
    from contract.prompt import PromptEncoder
    from export.reference import greedy_reference

    eos = model.config.eos_token_id
    ids, mask = PromptEncoder(tokenizer, eos, model.config.pad_token_id).encode_batch(tuning_pairs())
    with torch.no_grad():
        # Random embeddings dominate the residual stream, so a random decoder repeats its input
        # token forever; small ones let the answers depend on the context and the position.
        model.shared.weight *= 0.01
        reference = greedy_reference(model, ids, mask, TUNING_TOKENS)
        model.decoder.final_layer_norm.weight *= TARGET_MAX_LOGIT / float(np.abs(reference.logits).max())
        output = model.get_output_embeddings().weight
        fallback = None  # the first token that gives early stops, but no abstention
        for token in _stop_candidates(reference.tokens):
            row = output[token] * 1.05
            stops = _stops(greedy_reference_with(model, eos, row, ids, mask), eos)
            if _stops_well(stops, abstentions=3):
                output[eos] = row
                return
            if fallback is None and _stops_well(stops, abstentions=0):
                fallback = row
        if fallback is None:
            raise RuntimeError("no token gave a mix of early-stopping and full-length answers")
        output[eos] = fallback


def greedy_reference_with(model: T5ForConditionalGeneration, eos: int, row, ids, mask):
    """The reference answers with `row` as `</s>`'s output embedding (restored afterwards)."""
    from export.reference import greedy_reference

    output = model.get_output_embeddings().weight
    original = output[eos].clone()
    output[eos] = row
    try:
        return greedy_reference(model, ids, mask, TUNING_TOKENS)
    finally:
        output[eos] = original


def _stop_candidates(answers: np.ndarray, count: int = 30) -> list[int]:
    """Tokens whose output embedding `</s>` could take, most promising first: an answer would
    stop where the token first appears in it (exactly so with an untied `lm_head`)."""
    from export.validate import VALIDATION_PAIRS

    firsts: dict[int, dict[int, int]] = {}  # token -> {answer: step at which it first appears}
    for i, row in enumerate(answers.tolist()):
        for token in set(row) - {0, 1, 2}:
            firsts.setdefault(token, {})[i] = row.index(token) + 1
    validation = range(len(VALIDATION_PAIRS))
    return sorted(firsts, key=lambda t: (not any(i in firsts[t] for i in validation),
                                         list(firsts[t].values()).count(1) < 3,
                                         -len(set(firsts[t].values())) - len(firsts[t])))[:count]


def _stops(result, eos: int) -> list[int | None]:
    """Per answer: the step at which it ended with `</s>`, or None."""
    return [int(n) if result.tokens[i, n - 1] == eos else None for i, n in enumerate(result.lengths)]


def _stops_well(stops: list[int | None], abstentions: int) -> bool:
    """Between 15% and 85% of the answers end with `</s>`, at three or more different steps,
    `abstentions` or more of them at the first step (an empty answer: the model abstains, SQuAD
    2.0's "no answer"), and the export validation's answers end at different steps, one or more
    with `</s>`."""
    from export.validate import VALIDATION_PAIRS

    early = [n for n in stops if n is not None]
    validation = stops[: len(VALIDATION_PAIRS)]
    return (0.15 <= len(early) / len(stops) <= 0.85 and len(set(early)) >= 3 and early.count(1) >= abstentions
            and any(validation) and len(set(validation)) >= 2)
