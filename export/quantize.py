"""int8 graphs for the cpu target: ONNX Runtime's dynamic quantization of the validated fp32
export, checked against that export on SQuAD 2.0 dev prompts (`PRECISION=int8` of the cpu
target; `export.precision` lists what each target serves in).

  python -m serving.pipeline build --model CHECKPOINT --target cpu --precision int8

How (`quantize_graph`, `settings`), chosen by measurement on the demo t5-base and the tests' tiny
checkpoint; token agreement on the 32 validation prompts below, all numbers in docs/export.md:
- Weights of every MatMul with a constant weight (attention projections, feed-forward, lm_head),
  per output channel, as int8 of the type the CPU multiplies fastest without losing the sums
  (`int8_dot`, read from the CPU's flags where the graphs are made, which is where
  `make serve` serves them):
  - with an 8-bit dot product into 32-bit sums (x86 VNNI: `avx512_vnni`, `avx_vnni`): QInt8.
    ONNX Runtime's U8S8 kernels use it; on a 2-core Xeon with AVX512-VNNI the demo t5-base's
    encoder took 62 ms with QInt8 weights, 154 ms with QUInt8, 149 ms in fp32 (197 tokens),
    at the same 90.6% agreement (the tests' extreme-logit tiny checkpoint: 66%, QUInt8 81%);
  - without (AVX2 only): QUInt8. There the U8S8 kernels' 16-bit intermediate sums saturate
    (2-core AMD EPYC: QInt8 per channel 81% and 21% agreement, with 7-bit weights
    (`reduce_range`) 97% and 62%, QUInt8 per channel 97% and 79%, as fast as the fastest).
  Activations are quantized on the fly, per tensor (what "dynamic" means), so a row's
  activations share their scale with the rest of its batch, padding included: int8 answers
  depend on what they are batched with, fp32 answers do not (the validation prompts in batches
  of 8 and alone: the same tokens at 97% on the demo t5-base, 76% on the tiny test checkpoint;
  fp32 100%). The validation decodes in batches of 8, as the cpu target's requests come.
- Not Gather (the embeddings, the relative-attention bias): a table quantized per tensor puts
  every token's input on one coarse scale; it took the demo t5-base from 97% to 3% (and the
  random demo-tiny from 94% to 0%). It would save 74 MB per t5-base graph and no time.
- `EnableSubgraph`: the merged decoder's nodes live in the two branches of its `If` on
  `use_cache_branch`, with the shared weights in the outer graph; without this option
  `quantize_dynamic` quantizes nothing in it. With it, each weight is quantized once in the
  outer graph and both branches use it (the decoder's weights stay loaded once), and the
  quantization of `encoder_hidden_states` is hoisted into the outer graph (negligible at the
  with-past steps, which feed a one-position stand-in).

The int8 graphs are made once per fp32 export (`INT8_GRAPHS`, beside the fp32 ones) and reused
while the export, `QUANTIZER_VERSION` and the settings are unchanged; their validation
(`export.validate.validate_agreement`) is recorded under the export manifest's "int8" entry, and
a repository with int8 graphs installed reports it under `validation.int8`.

The floor (`AGREEMENT_FLOOR`, 0.5): quantization that works leaves most greedy answers as they
were (measured: demo t5-base 91–97% of the tokens, the tiny test checkpoints 66–84% over two
seeds, both weight types and 32 or 64 prompts, their flat or extreme logits making them the hard
cases); quantization
that is broken agrees on almost nothing, because the first token of nearly every answer
changes (measured: the graphs of another checkpoint 0%, the embeddings on one per-tensor scale
0–3%). Half the tokens separates the two with a wide margin on both sides. A real fine-tuned
checkpoint, with confident logits, should sit at the top of the first range.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from onnxruntime.quantization import QuantType, quantize_dynamic

from contract.names import DECODER, ENCODER, MANIFEST
from export.onnx_export import GRAPHS, INT8_GRAPHS, graph_signature
from export.validate import ValidationError, validate_agreement

AGREEMENT_FLOOR = 0.5
QUANTIZER_VERSION = 1  # bump when the quantized graphs change, so older ones are not reused
# CPU flags (Linux /proc/cpuinfo) of an 8-bit dot product with 32-bit sums, which ONNX Runtime's
# U8S8 kernels use: with one, QInt8 weights are exact in their sums and the fastest.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni")
CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """Each field of Linux's /proc/cpuinfo as it first appears (the first processor's: model
    name, flags, ...); `cpuinfo`: the file's text, read when not given; {} where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def int8_dot(cpuinfo: str | None = None) -> str | None:
    """The first of INT8_DOT_FLAGS among the CPU's flags (`cpuinfo` as for `cpuinfo_fields`;
    None where it cannot be read)."""
    flags = set(cpuinfo_fields(cpuinfo).get("flags", "").split())
    return next((flag for flag in INT8_DOT_FLAGS if flag in flags), None)


def settings(cpuinfo: str | None = None) -> dict[str, Any]:
    """How this machine quantizes (the module docstring says why): recorded in the manifest, and
    graphs made with other settings are made again."""
    dot = int8_dot(cpuinfo)
    return {"weight_type": "QInt8" if dot else "QUInt8", "int8_dot": dot, "per_channel": True,
            "reduce_range": False, "op_types": ["MatMul"]}


def quantize_graph(source: Path, destination: Path, chosen: dict[str, Any]) -> None:
    """`source`'s MatMul weights as int8 with the `chosen` settings (`settings()`), into `destination`."""
    quantize_dynamic(source, destination, op_types_to_quantize=chosen["op_types"],
                     weight_type=QuantType[chosen["weight_type"]], per_channel=chosen["per_channel"],
                     reduce_range=chosen["reduce_range"], extra_options={"EnableSubgraph": True})


def quantize_export(model: str, workdir: Path, floor: float = AGREEMENT_FLOOR) -> dict:
    """The int8 graphs of the fp32 export in `workdir` (made by `export.onnx_export.export_model`
    from `model`): reused when recorded there with the current settings, else quantized and
    validated against the fp32 graphs; ValidationError (and nothing kept) below `floor`.
    Returns the manifest's "int8" entry."""
    manifest_path = workdir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    recorded, chosen = manifest.get("int8"), settings()
    if recorded and _reusable(recorded, workdir, chosen):
        _check_floor(recorded["validation"], floor)
        return recorded
    started = time.monotonic()
    partial = {name: workdir / f"{INT8_GRAPHS[name]}.partial" for name in INT8_GRAPHS}
    try:
        for name, source in GRAPHS.items():
            quantize_graph(workdir / source, partial[name], chosen)
            if graph_signature(partial[name]) != graph_signature(workdir / source):
                raise ValidationError(f"quantizing {source} changed its inputs or outputs")
        seconds = time.monotonic() - started
        report = validate_agreement(model, (workdir / GRAPHS[ENCODER], workdir / GRAPHS[DECODER]),
                                    (partial[ENCODER], partial[DECODER]), floor)
        for name, path in partial.items():
            path.replace(workdir / INT8_GRAPHS[name])
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    manifest["int8"] = {
        "quantizer": QUANTIZER_VERSION, "settings": chosen, "graphs": INT8_GRAPHS,
        "quantize_seconds": round(seconds, 1),
        "bytes": {name: {"fp32": (workdir / GRAPHS[name]).stat().st_size, "int8": (workdir / f).stat().st_size}
                  for name, f in INT8_GRAPHS.items()},
        "validation": {**report.as_dict(), "weight_type": chosen["weight_type"],
                       "per_channel": chosen["per_channel"]},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["int8"]


def _reusable(recorded: dict, workdir: Path, chosen: dict[str, Any]) -> bool:
    return (recorded.get("quantizer") == QUANTIZER_VERSION and recorded.get("settings") == chosen
            and all((workdir / f).is_file() for f in INT8_GRAPHS.values()))


def _check_floor(validation: dict, floor: float) -> None:
    """A recorded agreement that a stricter floor no longer accepts."""
    if validation["token_agreement"] < floor:
        raise ValidationError(f"the int8 graphs agree with fp32 on {validation['token_agreement']:.1%} of the answer "
                              f"tokens, below the floor of {floor:.0%}. Report: {validation}")
