"""Numerical validation of the exported graphs against the PyTorch model they came from.

On a fixed set of prompts, greedy decoding through ONNX Runtime (the same loop that
`t5_greedy` runs) must give the same tokens as `transformers` `generate`, and every step's
logits must agree within `atol`. Any difference fails the export."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

from client.prompt import PromptEncoder
from serving.greedy import greedy_generate
from serving.onnx_runtime import OrtSeq2Seq

VALIDATION_PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Who wrote the novel?", "The novel was written in 1851 by Herman Melville, an American writer."),
    ("When did the war end?",
     "The Second World War ended in Europe on 8 May 1945 and in Asia on 2 September 1945, after "
     "Japan signed the instrument of surrender aboard the USS Missouri in Tokyo Bay. "
     "Fighting had lasted almost six years and involved most of the world's nations."),
    ("How many legs does a spider have?", "Spiders are arachnids. They have eight legs and two body segments."),
]
NEW_TOKENS = 16


class ValidationError(RuntimeError):
    """The ONNX graphs do not reproduce the PyTorch model."""


@dataclass
class ValidationReport:
    prompts: int
    new_tokens: int
    max_abs_logit_diff: float
    atol: float
    tokens_identical: bool

    def as_dict(self) -> dict:
        return asdict(self)


def validate_export(checkpoint: str, encoder: Path, decoder: Path, atol: float = 1e-4) -> ValidationReport:
    """Compare the graphs with `checkpoint`; raise ValidationError on any mismatch."""
    encoder_prompts = PromptEncoder(AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer)
    input_ids, attention_mask = encoder_prompts.encode_batch(VALIDATION_PAIRS)
    model = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        reference = model.generate(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
            max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
            output_logits=True, return_dict_in_generate=True)
    ref_tokens = reference.sequences[:, 1:].numpy()
    ref_logits = torch.stack(reference.logits, dim=1).float().numpy()  # [batch, steps, vocab]

    runtime = OrtSeq2Seq(str(encoder), str(decoder))
    step_logits: list[np.ndarray] = []

    def recording_run(feed, outputs):
        result = runtime.run_decoder(feed, outputs)
        step_logits.append(result["logits"][:, -1, :])
        return result

    states = runtime.encode(input_ids, attention_mask)
    ours = greedy_generate(recording_run, runtime.signature, states, attention_mask,
                           np.full(len(input_ids), NEW_TOKENS))
    diff = _max_logit_diff(ref_logits, step_logits, ours.lengths)
    identical = all(
        np.array_equal(ref_tokens[i, : ours.lengths[i]], ours.tokens[i, : ours.lengths[i]])
        and not ref_tokens[i, ours.lengths[i]:].any()
        for i in range(len(input_ids)))
    report = ValidationReport(len(input_ids), NEW_TOKENS, diff, atol, identical)
    if not identical:
        raise ValidationError(f"greedy tokens differ from PyTorch generate: {report.as_dict()}")
    if not diff <= atol:
        raise ValidationError(f"max |logit difference| {diff:.3g} exceeds {atol:g}: {report.as_dict()}")
    return report


def _max_logit_diff(reference: np.ndarray, steps: list[np.ndarray], lengths: np.ndarray) -> float:
    """Largest |Δlogit| over the steps where each row was still being decoded. Our loop drops
    finished rows, so step t's logits cover the rows with length > t, in order."""
    worst = 0.0
    for t, logits in enumerate(steps):
        rows = np.flatnonzero(lengths > t)
        worst = max(worst, float(np.abs(reference[rows, t] - logits).max()))
    return worst

