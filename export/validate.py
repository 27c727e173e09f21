"""Numerical validation of the exported graphs against the PyTorch model they came from.

On fixed prompts, greedy decoding through ONNX Runtime (the same loop that `t5_greedy` runs)
must give the tokens of the PyTorch reference (`export.reference`), and at every step where a
row is still being decoded its logits must agree within `atol + rtol * max|logit|`: trained
checkpoints have logits in the hundreds, where float32 summation order alone moves them by
~1e-3. A token that differs only where the reference's top two logits lie within that
tolerance is a tie, counted, not a failure. Anything else fails the export with the prompt,
the step and the difference in the message.

`validate_agreement` compares two pairs of graphs with each other instead (the int8 graphs of
`export.quantize` against the fp32 export they came from), where exact parity is not expected:
it measures the token agreement rate on SQuAD 2.0 dev prompts and fails below a floor."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration

from contract.prompt import PromptEncoder
from contract.tokens import TokenIds
from export.reference import Reference, greedy_reference
from runtime.greedy import greedy_generate
from runtime.onnx_runtime import OrtSeq2Seq
from shared_data import DEV_SET, squad_pairs

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
ATOL, RTOL = 1e-4, 1e-3


class ValidationError(RuntimeError):
    """The ONNX graphs do not reproduce the PyTorch model."""


@dataclass
class ValidationReport:
    prompts: int
    new_tokens: int
    answer_lengths: list[int]  # tokens per prompt, `</s>` included: early stops show here
    max_abs_logit: float  # largest |logit| of the reference: the scale of the tolerance
    max_abs_logit_diff: float
    worst_tolerance_share: float  # max over steps of |Δlogit| / (atol + rtol * max|logit|); <= 1 passes
    atol: float
    rtol: float
    tokens_identical: bool
    near_ties: list[str] = field(default_factory=list)  # "prompt i step t": a tie broken the other way

    def as_dict(self) -> dict:
        return asdict(self)


def validate_export(checkpoint: str, encoder: Path, decoder: Path, atol: float = ATOL,
                    rtol: float = RTOL) -> ValidationReport:
    """Compare the graphs with `checkpoint`; raise ValidationError on any mismatch."""
    model = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
    tokens = TokenIds.from_model_config(model.config)
    prompts = PromptEncoder(AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer, tokens.eos, tokens.pad)
    input_ids, attention_mask = prompts.encode_batch(VALIDATION_PAIRS)
    reference = greedy_reference(model, input_ids, attention_mask, NEW_TOKENS)

    runtime = OrtSeq2Seq(str(encoder), str(decoder))
    logits: dict[int, list[np.ndarray]] = defaultdict(list)  # row -> its logits, one per step

    def record(rows: list[int], step_logits: np.ndarray) -> None:
        for row, values in zip(rows, step_logits):
            logits[row].append(np.array(values, dtype=np.float32))

    ours = greedy_generate(runtime.run_decoder, runtime.signature, tokens,
                           runtime.encode(input_ids, attention_mask), attention_mask,
                           np.full(len(input_ids), NEW_TOKENS), on_logits=record)
    comparison = _Comparison(atol, rtol)
    for row in range(len(input_ids)):
        comparison.row(row, reference, ours.tokens[row, : ours.lengths[row]].tolist(), logits[row])
    report = ValidationReport(
        len(input_ids), NEW_TOKENS, ours.lengths.tolist(), float(np.abs(reference.logits).max()),
        comparison.max_diff, comparison.worst_share, atol, rtol, not comparison.failures and not comparison.ties,
        comparison.ties)
    if comparison.failures:
        raise ValidationError("; ".join(comparison.failures) + f". Report: {report.as_dict()}")
    return report


class _Comparison:
    """Accumulates the per-row comparison of our tokens and logits with the reference's."""

    def __init__(self, atol: float, rtol: float):
        self.atol, self.rtol = atol, rtol
        self.max_diff = self.worst_share = 0.0
        self.failures: list[str] = []
        self.ties: list[str] = []

    def row(self, row: int, reference: Reference, ours: list[int], logits: list[np.ndarray]) -> None:
        expected = reference.answer(row)
        for step in range(min(len(ours), len(expected))):
            ref = reference.logits[row, step]
            allowed = self.atol + self.rtol * float(np.abs(ref).max())
            diff = float(np.abs(ref - logits[step]).max())
            self.max_diff = max(self.max_diff, diff)
            self.worst_share = max(self.worst_share, diff / allowed if allowed else (np.inf if diff else 0.0))
            where = f"prompt {row} ({VALIDATION_PAIRS[row][0]!r}) step {step}"
            if diff > allowed:
                self.failures.append(f"{where}: max |logit difference| {diff:.3g} exceeds {allowed:.3g} "
                                     f"(atol {self.atol:g} + rtol {self.rtol:g} x max |logit| "
                                     f"{float(np.abs(ref).max()):.3g})")
                return
            if ours[step] != expected[step]:
                gap = float(ref[expected[step]] - ref[ours[step]])
                if gap > allowed:
                    self.failures.append(f"{where}: token {ours[step]} instead of {expected[step]} "
                                         f"(reference logits {gap:.3g} apart)")
                else:
                    self.ties.append(f"prompt {row} step {step}")
                return
        if len(ours) != len(expected):
            self.failures.append(f"prompt {row} ({VALIDATION_PAIRS[row][0]!r}): {len(ours)} tokens instead of "
                                 f"{len(expected)} ({ours} vs {expected})")


# --- agreement between two exports (int8 against fp32) -------------------------------------------

AGREEMENT_PROMPTS, AGREEMENT_STRIDE, AGREEMENT_BATCH = 32, 97, 8  # 8: the cpu target's request batch


@dataclass
class AgreementReport:
    """How often the candidate graphs (int8) choose the reference graphs' (fp32) tokens.

    `token_agreement` = Σ_rows common prefix / Σ_rows reference length: per row, the tokens of the
    two greedy answers are compared position by position up to the first position where they
    differ (after it the candidate decodes from another prefix, so later positions compare
    nothing), and the row's reference answer (`</s>` included when emitted) is the denominator.
    A candidate that stops early or runs on past the reference's `</s>` differs at that position.
    `identical_answers` is the share of rows whose token sequences are equal."""

    token_agreement: float
    identical_answers: float
    agreeing_tokens: int
    reference_tokens: int
    prompts: int
    new_tokens: int
    batch: int  # prompts encoded and decoded together (dynamic quantization's scales span the batch)
    floor: float

    def as_dict(self) -> dict:
        return asdict(self)


def token_agreement(reference: list[list[int]], candidate: list[list[int]]) -> tuple[int, int, int]:
    """(agreeing tokens, reference tokens, identical rows): see `AgreementReport`."""
    agreeing = total = identical = 0
    for expected, got in zip(reference, candidate, strict=True):
        agreeing += next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
        total += len(expected)
        identical += expected == got
    return agreeing, total, identical


def greedy_answers(runtime: OrtSeq2Seq, prompts: PromptEncoder, tokens: TokenIds, pairs: list[tuple[str, str]],
                   new_tokens: int, batch: int) -> list[list[int]]:
    """Each pair's greedy answer tokens (`</s>` included when emitted), `batch` pairs at a time."""
    answers: list[list[int]] = []
    for start in range(0, len(pairs), batch):
        input_ids, attention_mask = prompts.encode_batch(pairs[start: start + batch])
        generation = greedy_generate(
            runtime.run_decoder, runtime.signature, tokens, runtime.encode(input_ids, attention_mask),
            attention_mask, np.full(len(input_ids), new_tokens))
        answers += [generation.tokens[row, : generation.lengths[row]].tolist() for row in range(len(input_ids))]
    return answers


def agreement_pairs(count: int = AGREEMENT_PROMPTS, stride: int = AGREEMENT_STRIDE) -> list[tuple[str, str]]:
    """The SQuAD 2.0 dev prompts the agreement is measured on."""
    try:
        return squad_pairs(count, stride)
    except FileNotFoundError as error:
        raise ValidationError(f"the agreement check needs the SQuAD 2.0 dev set ({DEV_SET}): {error}") from error


def validate_agreement(checkpoint: str, reference: tuple[Path, Path], candidate: tuple[Path, Path], floor: float,
                       pairs: list[tuple[str, str]] | None = None, new_tokens: int = NEW_TOKENS,
                       batch: int = AGREEMENT_BATCH, label: str = "int8") -> AgreementReport:
    """Greedy answers of the `candidate` (encoder, decoder) graphs against the `reference` ones on
    `pairs` (default: `agreement_pairs()`), with `checkpoint`'s tokenizer and token ids; raise
    ValidationError when the token agreement is below `floor`."""
    tokens = TokenIds.from_model_config(AutoConfig.from_pretrained(checkpoint))
    prompts = PromptEncoder(AutoTokenizer.from_pretrained(checkpoint).backend_tokenizer, tokens.eos, tokens.pad)
    pairs = agreement_pairs() if pairs is None else pairs
    answers = [greedy_answers(OrtSeq2Seq(*map(str, graphs)), prompts, tokens, pairs, new_tokens, batch)
               for graphs in (reference, candidate)]  # one pair of sessions open at a time
    agreeing, total, identical = token_agreement(*answers)
    report = AgreementReport(round(agreeing / total, 4), round(identical / len(pairs), 4), agreeing, total,
                             len(pairs), new_tokens, batch, floor)
    if report.token_agreement < floor:
        raise ValidationError(
            f"{label} graphs agree with the fp32 graphs on {report.token_agreement:.1%} of the answer tokens "
            f"({agreeing} of {total}; identical answers {report.identical_answers:.1%}) on {len(pairs)} SQuAD 2.0 "
            f"dev prompts, below the floor of {floor:.0%}: the quantization is broken, not merely imprecise. "
            f"Report: {report.as_dict()}")
    return report
