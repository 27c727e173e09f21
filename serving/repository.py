"""The one generator of the model repository's `config.pbtxt` files.

    python -m serving.repository --target cpu --repository model_repository

Configs are built as Triton's own `ModelConfig` protobuf messages and written in text format,
so every target produces configs that Triton's schema accepts. Tensor names and shapes come
from the exported graphs (`export_manifest.json`), so the configs cannot drift from them.

Targets:
  cpu  the Python backend running ONNX Runtime for `t5_encoder` and `t5_decoder` (the Triton
       server that ships on PyPI has no onnxruntime/TensorRT backend). GPU targets, which serve
       the same graphs with the native backends, are added to TARGETS beside it.

How `t5_greedy` reaches the decoder (`--decoder-mode`):
  in_process  it runs `t5_decoder`'s graph in its own process. The cpu default: over BLS the
              Python backend copies the whole key/value cache through shared memory twice per
              step (measured on t5-base, 180 tokens: 28 ms per step instead of 20). `t5_decoder`
              stays served for direct step calls and opens its session on first use, so the
              weights are not held twice.
  bls         it calls the `t5_decoder` model once per step (for GPU targets, where tensors
              stay on the device).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.limits import DEFAULT_NEW_TOKENS, MAX_INPUT_TOKENS, MAX_NEW_TOKENS_CAP
from serving.text_repository import text_configs

MANIFEST = "export_manifest.json"
DECODER_MODES = ("in_process", "bls")
ONNX_TO_TRITON = {"FLOAT": mc.TYPE_FP32, "FLOAT16": mc.TYPE_FP16, "BFLOAT16": mc.TYPE_BF16,
                  "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32, "BOOL": mc.TYPE_BOOL}


@dataclass(frozen=True)
class Target:
    """What differs between deployments; everything else is shared by construction."""

    name: str
    graph_backend: str  # backend serving t5_encoder / t5_decoder
    decoder_mode: str  # how t5_greedy runs decoder steps: "in_process" or "bls"
    instance_kind: int
    max_batch_size: int
    encoder_instances: int
    greedy_instances: int
    max_active_rows: int  # rows t5_greedy decodes in one step
    max_queued_rows: int  # rows waiting to join before new requests get UNAVAILABLE
    batching: str = "iteration"  # "request": admit only into an empty batch (benchmark baseline)


TARGETS = {
    "cpu": Target("cpu", "python", "in_process", mc.ModelInstanceGroup.KIND_CPU, max_batch_size=8,
                  encoder_instances=1, greedy_instances=1, max_active_rows=32, max_queued_rows=256),
}


def _tensor(cls, name: str, dtype: int, dims: list[int], optional: bool = False):
    message = cls(name=name, data_type=dtype, dims=dims)
    if optional:
        message.optional = True
    return message


def _params(config: mc.ModelConfig, **values: object) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _graph_tensors(cls, signature: dict, batched: bool) -> list:
    """Config tensors for an ONNX graph's inputs or outputs; drops the batch dim if `batched`."""
    return [_tensor(cls, name, ONNX_TO_TRITON[dtype], dims[1:] if batched else dims)
            for name, (dtype, dims) in signature.items()]


def generation_outputs() -> list:
    """What the decode loop returns, and the ensemble with it: per row the new token ids
    (`</s>` included when emitted, then padding), their count, their mean log-probability."""
    return [_tensor(mc.ModelOutput, "output_ids", mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, "output_lengths", mc.TYPE_INT32, [1]),
            _tensor(mc.ModelOutput, "output_scores", mc.TYPE_FP32, [1])]


def build_configs(manifest: dict, target: Target) -> dict[str, mc.ModelConfig]:
    """All four models' configs for `target`, from the export manifest."""
    encoder_sig = manifest["graphs"]["t5_encoder"]
    decoder_sig = manifest["graphs"]["t5_decoder"]
    hidden_dims = encoder_sig["outputs"]["last_hidden_state"][1][1:]  # [-1, d_model]
    batch = target.max_batch_size
    cpu = target.instance_kind

    encoder = mc.ModelConfig(name="t5_encoder", backend=target.graph_backend, max_batch_size=batch)
    encoder.input.extend(_graph_tensors(mc.ModelInput, encoder_sig["inputs"], batched=True))
    encoder.output.extend(_graph_tensors(mc.ModelOutput, encoder_sig["outputs"], batched=True))
    encoder.dynamic_batching.max_queue_delay_microseconds = 0  # batch only what already waits
    encoder.instance_group.add(count=target.encoder_instances, kind=cpu)
    _params(encoder, max_input_tokens=MAX_INPUT_TOKENS, vocab_size=manifest["vocab_size"], intra_op_threads=0)

    # Decode steps of different requests have different cache lengths, so Triton cannot batch
    # them; t5_greedy batches its own rows. Hence no batch dimension in this config.
    decoder = mc.ModelConfig(name="t5_decoder", backend=target.graph_backend, max_batch_size=0)
    decoder.input.extend(_graph_tensors(mc.ModelInput, decoder_sig["inputs"], batched=False))
    decoder.output.extend(_graph_tensors(mc.ModelOutput, decoder_sig["outputs"], batched=False))
    decoder.instance_group.add(count=1, kind=cpu)
    _params(decoder, intra_op_threads=0, load_session="lazy" if target.decoder_mode == "in_process" else "eager")

    past = [n for n in decoder_sig["inputs"] if n.startswith("past_key_values.")]
    _, past_dims = decoder_sig["inputs"][past[0]]
    d_model = decoder_sig["inputs"]["encoder_hidden_states"][1][2]
    greedy = mc.ModelConfig(name="t5_greedy", backend="python", max_batch_size=batch)
    greedy.input.extend([
        _tensor(mc.ModelInput, "encoder_hidden_states", mc.TYPE_FP32, hidden_dims),
        _tensor(mc.ModelInput, "attention_mask", mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, "max_new_tokens", mc.TYPE_INT32, [1], optional=True),
    ])
    greedy.output.extend(generation_outputs())
    greedy.dynamic_batching.max_queue_delay_microseconds = 0
    greedy.instance_group.add(count=target.greedy_instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    _params(greedy, decoder_mode=target.decoder_mode, decoder_model="t5_decoder",
            decoder_graph="t5_decoder/1/model.onnx", intra_op_threads=0, default_new_tokens=DEFAULT_NEW_TOKENS,
            max_new_tokens_cap=MAX_NEW_TOKENS_CAP,
            max_active_rows=target.max_active_rows, max_queued_rows=target.max_queued_rows, batching=target.batching,
            decoder_signature=json.dumps({"past_names": past, "num_heads": past_dims[1], "head_dim": past_dims[3],
                                          "d_model": d_model}))

    qa = mc.ModelConfig(name="t5_qa", platform="ensemble", max_batch_size=batch)
    qa.input.extend([
        _tensor(mc.ModelInput, "input_ids", mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, "attention_mask", mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, "max_new_tokens", mc.TYPE_INT32, [1], optional=True),
    ])
    qa.output.extend(generation_outputs())
    qa.ensemble_scheduling.step.add(
        model_name="t5_encoder", model_version=-1,
        input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
        output_map={"last_hidden_state": "encoder_hidden_states"})
    qa.ensemble_scheduling.step.add(
        model_name="t5_greedy", model_version=-1,
        input_map={"encoder_hidden_states": "encoder_hidden_states", "attention_mask": "attention_mask",
                   "max_new_tokens": "max_new_tokens"},
        output_map={t.name: t.name for t in generation_outputs()})
    _params(qa, model_source=manifest["model"], demo_model=str(bool(manifest["demo"])).lower(),
            target=target.name, default_new_tokens=DEFAULT_NEW_TOKENS, max_new_tokens_cap=MAX_NEW_TOKENS_CAP,
            max_input_tokens=MAX_INPUT_TOKENS)
    configs = {c.name: c for c in (encoder, decoder, greedy, qa)}
    configs.update(text_configs(manifest, target, configs))
    return configs


def write_repository(repository: Path, target: str, decoder_mode: str | None = None,
                     batching: str | None = None) -> dict[str, Path]:
    """Write `<model>/config.pbtxt` for every model; return their paths. `decoder_mode` and
    `batching` override the target's choices."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
    if decoder_mode not in (None, *DECODER_MODES):
        raise ValueError(f"unknown decoder mode {decoder_mode!r}; choose one of {DECODER_MODES}")
    manifest_path = repository / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: run `make export` (python -m export onnx) first")
    manifest = json.loads(manifest_path.read_text())
    written = {}
    if batching not in (None, "iteration", "request"):
        raise ValueError(f"unknown batching {batching!r}; choose 'iteration' or 'request'")
    chosen = replace(TARGETS[target], decoder_mode=decoder_mode or TARGETS[target].decoder_mode,
                     batching=batching or TARGETS[target].batching)
    for name, config in build_configs(manifest, chosen).items():
        path = repository / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "1").mkdir(exist_ok=True)
        path.write_text(f"# Generated by `python -m serving.repository --target {target}`; do not edit.\n"
                        + text_format.MessageToString(config))
        written[name] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.repository", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), default="cpu", help="deployment target")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="model repository holding export_manifest.json (written by `python -m export onnx`)")
    parser.add_argument("--decoder-mode", choices=DECODER_MODES, default=None,
                        help="how t5_greedy runs decoder steps (default: the target's)")
    parser.add_argument("--batching", choices=("iteration", "request"), default=None,
                        help="t5_greedy admits new requests at every step (iteration, default) or only into an "
                             "empty batch (request: the baseline of the benchmark)")
    args = parser.parse_args(argv)
    try:
        for path in write_repository(args.repository, args.target, args.decoder_mode, args.batching).values():
            print(path)
    except (FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
