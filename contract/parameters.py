"""Typed parameters of each Python model. The config generator writes one of these into a
model's `config.pbtxt` (`to_strings`), the model reads it back from Triton's `args`
(`from_args`): every key is spelled once, here, and every value comes back with its type.

Values travel as Triton's `string_value`s: ints and floats as text, booleans as `true`/`false`,
nested dataclasses (`TokenIds`, `DecoderSignature`) as JSON. A field may name the key Triton
itself reads (`metadata={"key": ...}`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Mapping, get_type_hints

from contract.graphs import DecoderSignature
from contract.tokens import TokenIds

TRITON_YES_NO = {True: "yes", False: "no"}
TORCH_DTYPES = ("float32", "bfloat16")  # the torch executor's precisions; no float16: T5 overflows it


@dataclass(frozen=True)
class ModelParameters:
    """Base: conversion to and from the `parameters` block of a model config."""

    def to_strings(self) -> dict[str, str]:
        hints = get_type_hints(type(self))
        return {_key(f): _encode(getattr(self, f.name), hints[f.name], f) for f in fields(self)}

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> "ModelParameters":
        hints = get_type_hints(cls)
        missing = [_key(f) for f in fields(cls) if _key(f) not in values]
        if missing:
            raise KeyError(f"{cls.__name__}: the model config lacks parameters {missing}; regenerate it "
                           "with `python -m serving.repository`")
        return cls(**{f.name: _decode(values[_key(f)], hints[f.name], f) for f in fields(cls)})

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "ModelParameters":
        """From the `args` Triton passes to a Python model's `initialize`."""
        config = json.loads(args["model_config"])
        return cls.from_strings({k: v["string_value"] for k, v in config.get("parameters", {}).items()})


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def _encode(value: Any, kind: type, f) -> str:
    if kind is bool:
        return TRITON_YES_NO[value] if f.metadata.get("yes_no") else str(value).lower()
    if is_dataclass(kind):
        return json.dumps(asdict(value), sort_keys=True)
    return str(value)


def _decode(text: str, kind: type, f) -> Any:
    if kind is bool:
        return text == ("yes" if f.metadata.get("yes_no") else "true")
    if kind is TokenIds:
        return TokenIds.from_dict(json.loads(text))
    if kind is DecoderSignature:
        return DecoderSignature.from_dict(json.loads(text))
    return kind(text)


@dataclass(frozen=True)
class ValidateParameters(ModelParameters):
    """`t5_validate`: the token-id checks before any encoder."""

    max_input_tokens: int
    vocab_size: int


@dataclass(frozen=True)
class GraphParameters(ModelParameters):
    """`t5_encoder` and `t5_decoder` served by the Python backend: the graph on ONNX Runtime
    (cpu), or the encoder of the checkpoint on PyTorch (`executor` torch; cpu or gpu-torch)."""

    intra_op_threads: int  # 0: one per core
    lazy_session: bool = False  # open the graph on first use (the decoder, when t5_greedy runs it in-process)
    executor: str = "onnxruntime"  # or "torch" (t5_encoder only)
    checkpoint: str = ""  # relative to the repository root, for the torch executor
    device: str = "cpu"  # the torch executor's: "cpu" or "cuda"
    dtype: str = "float32"  # the torch executor's: "float32" or "bfloat16"


@dataclass(frozen=True)
class GreedyParameters(ModelParameters):
    """`t5_greedy`: the decode loop and its scheduler."""

    decoder_mode: str  # "in_process" (runs the decoder itself, with `executor`) or "bls" (calls `decoder_model`)
    decoder_model: str
    decoder_init_model: str  # "" unless the first step has its own model (TensorRT)
    decoder_graph: str  # relative to the repository root, for in_process
    intra_op_threads: int
    default_new_tokens: int
    max_new_tokens_cap: int
    max_active_rows: int
    max_queued_rows: int
    max_queue_wait_s: float  # refuse (UNAVAILABLE) a request that would wait longer
    batching: str  # "iteration" or "request" (benchmark baseline)
    signature: DecoderSignature
    tokens: TokenIds
    # Triton's own key: "no" hands the model GPU inputs where they are.
    cpu_only_inputs: bool = field(default=True, metadata={"key": "FORCE_CPU_ONLY_INPUT_TENSORS", "yes_no": True})
    executor: str = "onnxruntime"  # in_process: "onnxruntime" (`decoder_graph`) or "torch" (`checkpoint`)
    checkpoint: str = ""  # relative to the repository root, for the torch executor
    device: str = "cpu"  # where the torch executor runs: "cpu" or "cuda"
    dtype: str = "float32"  # the torch executor's: "float32" or "bfloat16"
    # Non-empty: t5_greedy takes token ids and runs this encoder graph (relative to the repository
    # root) itself, planned by the same scheduler loop as the decode steps (cpu target).
    encoder_graph: str = ""
    max_encode_tokens: int = 0  # prompt tokens encoded per iteration while rows are decoding (0: no limit)


@dataclass(frozen=True)
class TokenizerParameters(ModelParameters):
    """`t5_tokenizer` (text endpoint): question and context to the prompt's token ids, and the
    generated ids to the answer text."""

    tokenizer_file: str  # relative to the repository root
    max_input_tokens: int
    max_text_bytes: int
    tokens: TokenIds


@dataclass(frozen=True)
class ServedModel(ModelParameters):
    """Published in the ensembles' configs for clients: what is served and its limits."""

    model_source: str
    demo_model: bool
    target: str
    default_new_tokens: int
    max_new_tokens_cap: int
    max_input_tokens: int
    eos_token_id: int
    pad_token_id: int
    decoder_start_token_id: int
    vocab_size: int
