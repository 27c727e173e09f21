"""The one generator of the model repository's `config.pbtxt` files.

    python -m serving.repository --target cpu --repository model_repository

Configs are built as Triton's own `ModelConfig` protobuf messages and written in text format,
so every target produces configs that Triton's schema accepts. Tensor names and shapes come
from the exported graphs (`export_manifest.json`), so the configs cannot drift from them.

Targets (`--target`):
  cpu              the Python backend running ONNX Runtime for `t5_encoder` and `t5_decoder` (the
                   Triton server that ships on PyPI has no onnxruntime/TensorRT backend).
  gpu-onnxruntime  the native onnxruntime backend on the GPU for `t5_encoder` and `t5_decoder`
                   (the merged decoder graph). No ORT TensorRT accelerator: without an engine
                   cache and profiles for a cache that grows every step it rebuilds engines at
                   run time; TensorRT is the gpu-tensorrt target, with profiles built ahead.
  gpu-tensorrt     TensorRT engines (`make engines`): `t5_encoder`, and the decoder as two engines,
                   `t5_decoder_init` (first step) and `t5_decoder` (later steps), because TensorRT
                   cannot build the merged graph's If node (NVIDIA/TensorRT#2723).
On every target a Python model `t5_validate` checks the token ids before the encoder (native
encoders would read out-of-vocabulary ids unchecked); on GPU targets `t5_greedy` asks for its
inputs on the device
(`FORCE_CPU_ONLY_INPUT_TENSORS: "no"`). The same `t5_qa` ensemble and `t5_greedy` loop serve
every target.

Where the encoder runs (`--encoder-mode`):
  in_process  cpu default: `t5_qa` sends the validated token ids straight to `t5_greedy`, whose
              scheduler runs the encoder graph between decode steps (prompts of different
              lengths batched together, a budget of prompt tokens per step while rows decode):
              one loop owns the cores, instead of an encoder process and the decode loop
              competing for them. `t5_encoder` stays served for direct calls and opens its
              session on first use, so the weights are not held twice.
  served      `t5_encoder` is a step of the ensemble, dynamically batched by Triton (GPU targets).

How `t5_greedy` reaches the decoder (`--decoder-mode`; in-process with `--executor`
onnxruntime, the decoder graph, or torch, the checkpoint's own decoder on PyTorch, which
`python -m serving.pipeline build --executor torch` installs):
  in_process  it runs `t5_decoder`'s graph in its own process. The cpu default: over BLS the
              Python backend copies the whole key/value cache through shared memory twice per
              step (measured on t5-base, 180 tokens: 28 ms per step instead of 20). `t5_decoder`
              stays served for direct step calls and opens its session on first use, so the
              weights are not held twice.
  bls         it calls the decoder model(s) once per step (GPU targets, where tensors stay on
              the device; also testable on cpu).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract.files import is_generated
from contract.graphs import DecoderSignature
from contract.limits import (DEFAULT_NEW_TOKENS, MAX_DECODER_PAST, MAX_INPUT_TOKENS, MAX_NEW_TOKENS_CAP,
                             TENSORRT_MAX_BATCH)
from contract.names import (ATTENTION_MASK, CHECKPOINT, DECODER, DECODER_INIT, ENCODER, ENCODER_HIDDEN_STATES,
                            GENERATION_OUTPUTS, GREEDY, INPUT_IDS, LAST_HIDDEN_STATE, MANIFEST, MAX_NEW_TOKENS, OUTPUT_IDS, OUTPUT_LENGTHS,
                            OUTPUT_SCORES, QA, VALIDATE, version_file)
from contract.parameters import (TORCH_DTYPES, GraphParameters, GreedyParameters, ModelParameters, ServedModel,
                                 ValidateParameters)
from contract.tokens import TokenIds
from serving.text_repository import text_configs

DECODER_MODES = ("in_process", "bls")
ENCODER_MODES = ("in_process", "served")  # the encoder run by t5_greedy's loop, or a model of the ensemble
EXECUTORS = ("onnxruntime", "torch")  # what runs the decoder in t5_greedy's process (in_process)
ONNX_TO_TRITON = {"FLOAT": mc.TYPE_FP32, "FLOAT16": mc.TYPE_FP16, "BFLOAT16": mc.TYPE_BF16,
                  "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32, "BOOL": mc.TYPE_BOOL}


@dataclass(frozen=True)
class Target:
    """What differs between deployments; everything else is shared by construction."""

    name: str
    graph_backend: str  # serves t5_encoder / t5_decoder: "python", "onnxruntime" or "tensorrt"
    instance_kind: int  # of the graph models and t5_greedy
    decoder_mode: str  # how t5_greedy runs decoder steps: "in_process" or "bls"
    max_batch_size: int
    max_active_rows: int  # rows t5_greedy decodes in one step
    max_queued_rows: int  # rows waiting to join before new requests get UNAVAILABLE
    max_queue_wait_s: float  # expected wait in the decode queue beyond which new requests get UNAVAILABLE
    encoder_instances: int = 1
    split_decoder: bool = False  # first step and later steps in two models (TensorRT)
    warmup: bool = False  # model_warmup for the graph models
    batching: str = "iteration"  # "request": admit only into an empty batch (benchmark baseline)
    executor: str = "onnxruntime"  # in_process: the decoder graph on ONNX Runtime, or the checkpoint on PyTorch
    dtype: str = "float32"  # the torch executor's
    encoder_mode: str = "served"  # "in_process": t5_greedy's scheduler runs the encoder graph (ONNX Runtime)
    max_encode_tokens: int = 0  # in_process encoder: prompt tokens encoded per step while rows decode (0: no limit)

    @property
    def on_gpu(self) -> bool:
        return self.instance_kind == mc.ModelInstanceGroup.KIND_GPU

    @property
    def needs_image(self) -> bool:
        """Served by NVIDIA's image (native onnxruntime/TensorRT backends), not by the
        tritonserver that ships on PyPI, which has only the Python backend."""
        return self.graph_backend != "python"

    @property
    def device(self) -> str:
        """Where the torch executor runs."""
        return "cuda" if self.on_gpu else "cpu"


CPU, GPU = mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU
TARGETS = {
    # ~2.5 SQuAD prompts per step while rows decode: ~0.7 s of encoder work on 2 cores (273 ms per prompt measured).
    "cpu": Target("cpu", "python", CPU, "in_process", max_batch_size=8, max_active_rows=32, max_queued_rows=256,
                  max_queue_wait_s=30.0, encoder_mode="in_process", max_encode_tokens=512),
    "gpu-onnxruntime": Target("gpu-onnxruntime", "onnxruntime", GPU, "bls", max_batch_size=64, max_active_rows=128,
                              max_queued_rows=1024, max_queue_wait_s=5.0, warmup=True),
    # Rows per decode step capped at the engines' largest profile batch.
    # Encoder and decoder of the checkpoint on PyTorch (Python backend): the decoder inside
    # t5_greedy, caches on the device; runs on the tritonserver that ships on PyPI.
    "gpu-torch": Target("gpu-torch", "python", GPU, "in_process", max_batch_size=64, max_active_rows=128,
                        max_queued_rows=1024, max_queue_wait_s=5.0, executor="torch", dtype="bfloat16"),
    "gpu-tensorrt": Target("gpu-tensorrt", "tensorrt", GPU, "bls", max_batch_size=64, max_active_rows=TENSORRT_MAX_BATCH,
                           max_queued_rows=1024, max_queue_wait_s=5.0, split_decoder=True, warmup=True),
}


def _tensor(cls, name: str, dtype: int, dims: list[int], optional: bool = False):
    message = cls(name=name, data_type=dtype, dims=dims)
    if optional:
        message.optional = True
    return message


def _params(config: mc.ModelConfig, parameters: ModelParameters) -> None:
    for key, value in parameters.to_strings().items():
        config.parameters[key].string_value = value


def _graph_tensors(cls, signature: dict, batched: bool) -> list:
    """Config tensors for an ONNX graph's inputs or outputs; drops the batch dim if `batched`."""
    return [_tensor(cls, name, ONNX_TO_TRITON[dtype], dims[1:] if batched else dims)
            for name, (dtype, dims) in signature.items()]


def generation_outputs() -> list:
    """What the decode loop returns, and the ensemble with it: per row the new token ids
    (`</s>` included when emitted, then padding), their count, their mean log-probability."""
    return [_tensor(mc.ModelOutput, OUTPUT_IDS, mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, OUTPUT_LENGTHS, mc.TYPE_INT32, [1]),
            _tensor(mc.ModelOutput, OUTPUT_SCORES, mc.TYPE_FP32, [1])]


def _graph_model(name: str, signature: dict, target: Target, batch: int, lazy: bool = False) -> mc.ModelConfig:
    """A model serving one exported graph with the target's backend; batch 0 = no batch dim."""
    config = mc.ModelConfig(name=name, max_batch_size=batch)
    if target.graph_backend == "tensorrt":
        config.platform = "tensorrt_plan"
    else:
        config.backend = target.graph_backend
    config.input.extend(_graph_tensors(mc.ModelInput, signature["inputs"], batched=batch > 0))
    config.output.extend(_graph_tensors(mc.ModelOutput, signature["outputs"], batched=batch > 0))
    config.instance_group.add(count=1, kind=target.instance_kind)
    if target.graph_backend == "python":
        if target.executor == "torch" and name == ENCODER:  # (the torch decoder runs inside t5_greedy)
            parameters = GraphParameters(0, lazy, "torch", CHECKPOINT, target.device, target.dtype)
        else:
            parameters = GraphParameters(intra_op_threads=0, lazy_session=lazy, device=target.device)
        _params(config, parameters)
    if target.warmup:
        _warmup(config, signature, batch)
    return config


def _warmup(config: mc.ModelConfig, signature: dict, batch: int) -> None:
    """One zero-filled request of modest shape, so the first real request finds the backend
    initialised (CUDA context, kernels, TensorRT profiles). Token id 0 is `<pad>`: valid.
    Decoders get one new token; a with-past graph a cache of one position; the merged graph
    runs its first-step branch (`use_cache_branch` false)."""
    inputs = signature["inputs"]
    is_decoder = "encoder_attention_mask" in inputs
    with_past = any(n.startswith("past_key_values.") for n in inputs) and "use_cache_branch" not in inputs

    def size(name: str, axis: int) -> int:
        if axis == 0:
            return 1
        if name.startswith("past_key_values."):
            return 1
        if is_decoder and name == "input_ids":
            return 1
        if is_decoder and name == "attention_mask":
            return 2 if with_past else 1
        return 16  # encoder positions

    sample = config.model_warmup.add(name="zeros", batch_size=1)
    for name, (dtype, dims) in inputs.items():
        shape = [d if d > 0 else size(name, axis) for axis, d in enumerate(dims)]
        sample.inputs[name].data_type = ONNX_TO_TRITON[dtype]
        sample.inputs[name].dims.extend(shape[1:] if batch else shape)
        sample.inputs[name].zero_data = True


def _bound_queue(config: mc.ModelConfig, batch: int) -> None:
    """Refuse at once (UNAVAILABLE) what would queue beyond two full batches at this step:
    under overload a request learns in milliseconds that it should retry, instead of waiting
    in front of the encoder and being refused by the decoder's queue seconds later."""
    config.dynamic_batching.default_queue_policy.max_queue_size = 2 * batch


def build_configs(manifest: dict, target: Target) -> dict[str, mc.ModelConfig]:
    """Every model's config for `target`, from the export manifest."""
    graphs = manifest["graphs"]
    encoder_sig = graphs[ENCODER]
    hidden_dims = encoder_sig["outputs"][LAST_HIDDEN_STATE][1][1:]  # [-1, d_model]
    batch = target.max_batch_size
    configs: dict[str, mc.ModelConfig] = {}
    tokens = TokenIds.from_dict(manifest["token_ids"])

    fused = target.encoder_mode == "in_process"
    encoder = _graph_model(ENCODER, encoder_sig, target, batch, lazy=fused)
    encoder.dynamic_batching.max_queue_delay_microseconds = 0  # batch only what already waits
    _bound_queue(encoder, batch)
    encoder.instance_group[0].count = target.encoder_instances
    configs[ENCODER] = encoder
    # One place checks the token ids, for every target, before any backend sees them.
    # The Python steps have no dynamic batcher: they batch nothing that needs Triton (a check per
    # request, a submit to the scheduler), and Triton 2.51's batcher can park a request that
    # arrives while the model's one instance executes for 500 ms (docs/operations.md, known gaps).
    validate = mc.ModelConfig(name=VALIDATE, backend="python", max_batch_size=batch)
    validate.input.extend([_tensor(mc.ModelInput, n, mc.TYPE_INT64, [-1]) for n in (INPUT_IDS, ATTENTION_MASK)])
    validate.output.extend([_tensor(mc.ModelOutput, f"valid_{n}", mc.TYPE_INT64, [-1])
                            for n in (INPUT_IDS, ATTENTION_MASK)])
    validate.instance_group.add(count=1, kind=CPU)
    _params(validate, ValidateParameters(MAX_INPUT_TOKENS, tokens.vocab_size))
    configs[VALIDATE] = validate

    # Decode steps of different requests have different cache lengths, so Triton cannot batch
    # them; t5_greedy batches its own rows. Hence no batch dimension in the decoder configs.
    if target.split_decoder:
        configs[DECODER_INIT] = _graph_model(DECODER_INIT, graphs[DECODER_INIT], target, 0)
        decoder_sig = graphs["t5_decoder_with_past"]
    else:
        decoder_sig = graphs[DECODER]
    configs[DECODER] = _graph_model(DECODER, decoder_sig, target, 0, lazy=target.decoder_mode == "in_process")
    greedy = mc.ModelConfig(name=GREEDY, backend="python", max_batch_size=batch)
    greedy.input.extend([
        _tensor(mc.ModelInput, INPUT_IDS, mc.TYPE_INT64, [-1]) if fused
        else _tensor(mc.ModelInput, ENCODER_HIDDEN_STATES, mc.TYPE_FP32, hidden_dims),
        _tensor(mc.ModelInput, ATTENTION_MASK, mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, MAX_NEW_TOKENS, mc.TYPE_INT32, [1], optional=True),
    ])
    greedy.output.extend(generation_outputs())
    greedy.instance_group.add(count=1, kind=target.instance_kind)  # one scheduler batches every request
    _params(greedy, GreedyParameters(
        decoder_mode=target.decoder_mode, decoder_model=DECODER,
        decoder_init_model=DECODER_INIT if target.split_decoder else "", decoder_graph=version_file(DECODER),
        intra_op_threads=0, default_new_tokens=DEFAULT_NEW_TOKENS, max_new_tokens_cap=MAX_NEW_TOKENS_CAP,
        max_active_rows=target.max_active_rows, max_queued_rows=target.max_queued_rows,
        max_queue_wait_s=target.max_queue_wait_s, batching=target.batching,
        signature=decoder_signature(graphs, target), tokens=tokens, cpu_only_inputs=not target.on_gpu,
        executor=target.executor, checkpoint=CHECKPOINT if target.executor == "torch" else "",
        device=target.device, dtype=target.dtype, encoder_graph=version_file(ENCODER) if fused else "",
        max_encode_tokens=target.max_encode_tokens))
    configs[GREEDY] = greedy

    qa = mc.ModelConfig(name=QA, platform="ensemble", max_batch_size=batch)
    qa.input.extend([
        _tensor(mc.ModelInput, INPUT_IDS, mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, ATTENTION_MASK, mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, MAX_NEW_TOKENS, mc.TYPE_INT32, [1], optional=True),
    ])
    qa.output.extend(generation_outputs())
    ids, mask = f"valid_{INPUT_IDS}", f"valid_{ATTENTION_MASK}"
    qa.ensemble_scheduling.step.add(
        model_name=VALIDATE, model_version=-1, input_map={INPUT_IDS: INPUT_IDS, ATTENTION_MASK: ATTENTION_MASK},
        output_map={ids: ids, mask: mask})
    if not fused:
        qa.ensemble_scheduling.step.add(
            model_name=ENCODER, model_version=-1, input_map={INPUT_IDS: ids, ATTENTION_MASK: mask},
            output_map={LAST_HIDDEN_STATE: ENCODER_HIDDEN_STATES})
    prompt = {INPUT_IDS: ids} if fused else {ENCODER_HIDDEN_STATES: ENCODER_HIDDEN_STATES}
    qa.ensemble_scheduling.step.add(
        model_name=GREEDY, model_version=-1, input_map={**prompt, ATTENTION_MASK: mask, MAX_NEW_TOKENS: MAX_NEW_TOKENS},
        output_map={name: name for name in GENERATION_OUTPUTS})
    _params(qa, ServedModel(
        model_source=manifest["model"], demo_model=bool(manifest["demo"]), target=target.name,
        default_new_tokens=DEFAULT_NEW_TOKENS, max_new_tokens_cap=MAX_NEW_TOKENS_CAP, max_input_tokens=MAX_INPUT_TOKENS,
        eos_token_id=tokens.eos, pad_token_id=tokens.pad, decoder_start_token_id=tokens.decoder_start,
        vocab_size=tokens.vocab_size))
    configs[QA] = qa
    configs.update(text_configs(manifest, target, configs))
    return configs


MIB = 1 << 20


def cuda_pool_bytes(target: Target, d_model: int, signature: DecoderSignature) -> int:
    """Triton's CUDA memory pool for `target` (`--cuda-memory-pool-byte-size=0:<bytes>`), sized
    from the configuration: the GPU tensors Triton moves between models at once. Ensemble: the
    encoder output of the batches queued in front of the encoder, running and handed to
    `t5_greedy` (four full batches of the longest input, fp32). BLS (a decoder model called per
    step): also one step's inputs and outputs at the row cap, the past at its longest and the
    cross-attention cache at the longest input. Rounded up to MiB; 0 on CPU targets (no flag).
    Beyond its pool Triton fails a transfer ("failed to copy data"), it does not grow."""
    if not target.on_gpu:
        return 0
    fp32 = 4
    total = 4 * target.max_batch_size * MAX_INPUT_TOKENS * d_model * fp32
    if target.decoder_mode == "bls":
        per_position = target.max_active_rows * signature.num_heads * signature.head_dim * fp32
        self_cache = len(signature.self_names) * (MAX_DECODER_PAST + 1) * per_position
        cross_cache = len(signature.cross_names) * MAX_INPUT_TOKENS * per_position
        total += 2 * (self_cache + cross_cache)  # in and out (present) of one step
    return -(-total // MIB) * MIB


def cuda_pool_for(repository: Path, target: str) -> int:
    """`cuda_pool_bytes` for the repository's exported model (its manifest) and `target`."""
    graphs = json.loads((repository / MANIFEST).read_text())["graphs"]
    signature = decoder_signature(graphs, TARGETS[target])
    return cuda_pool_bytes(TARGETS[target], signature.d_model, signature)


def decoder_signature(graphs: dict, target: Target) -> DecoderSignature:
    """The decoder graph's cache signature, as `t5_greedy` sees it on `target`."""
    decoder = graphs["t5_decoder_with_past"] if target.split_decoder else graphs[DECODER]
    d_model = graphs[ENCODER]["outputs"][LAST_HIDDEN_STATE][1][-1]
    return DecoderSignature.from_inputs({name: dims for name, (_, dims) in decoder["inputs"].items()}
                                        | {ENCODER_HIDDEN_STATES: [-1, -1, d_model]})


def write_repository(repository: Path, target: str, decoder_mode: str | None = None,
                     batching: str | None = None, max_batch_size: int | None = None,
                     executor: str | None = None, dtype: str | None = None,
                     encoder_mode: str | None = None) -> dict[str, Path]:
    """Write `<model>/config.pbtxt` for every model of `target` and remove the configs of
    models it does not serve; return the paths written. The other arguments override the
    target's choices."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
    if decoder_mode not in (None, *DECODER_MODES):
        raise ValueError(f"unknown decoder mode {decoder_mode!r}; choose one of {DECODER_MODES}")
    manifest_path = repository / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: run `make export` (python -m export onnx) first")
    manifest = json.loads(manifest_path.read_text())
    written = {}
    if executor not in (None, *EXECUTORS):
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    if batching not in (None, "iteration", "request"):
        raise ValueError(f"unknown batching {batching!r}; choose 'iteration' or 'request'")
    chosen = replace(TARGETS[target], decoder_mode=decoder_mode or TARGETS[target].decoder_mode,
                     batching=batching or TARGETS[target].batching,
                     max_batch_size=max_batch_size or TARGETS[target].max_batch_size,
                     executor=executor or TARGETS[target].executor, dtype=dtype or TARGETS[target].dtype)
    if encoder_mode not in (None, *ENCODER_MODES):
        raise ValueError(f"unknown encoder mode {encoder_mode!r}; choose one of {ENCODER_MODES}")
    # The torch executor's encoder is the t5_encoder model (the checkpoint on PyTorch).
    chosen = replace(chosen, encoder_mode=encoder_mode or ("served" if chosen.executor == "torch"
                                                           else TARGETS[target].encoder_mode))
    if chosen.encoder_mode == "in_process" and (chosen.executor != "onnxruntime" or chosen.on_gpu):
        raise ValueError("encoder mode in_process runs the encoder graph on ONNX Runtime inside t5_greedy: "
                         "CPU targets with the onnxruntime executor only")
    if chosen.dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {chosen.dtype!r} for the torch executor; choose one of {TORCH_DTYPES}")
    if chosen.executor == "torch" and chosen.decoder_mode != "in_process":
        raise ValueError("the torch executor runs the decoder inside t5_greedy: it needs decoder mode in_process")
    if chosen.executor == "torch" and not (repository / CHECKPOINT).is_dir():
        raise FileNotFoundError(f"{repository / CHECKPOINT} not found: the torch executor loads the checkpoint from "
                                "there (`python -m serving.pipeline build --executor torch` installs it)")
    if chosen.graph_backend == "tensorrt" and chosen.max_batch_size > TENSORRT_MAX_BATCH:
        raise ValueError(f"max batch size {chosen.max_batch_size} exceeds {TENSORRT_MAX_BATCH}, the largest batch "
                         f"the TensorRT engines' optimization profiles cover (contract.limits.TENSORRT_MAX_BATCH, "
                         f"built by export/tensorrt.py): use at most {TENSORRT_MAX_BATCH} for target {target}")
    if not 1 <= chosen.max_batch_size <= chosen.max_active_rows:
        raise ValueError(f"max batch size must be between 1 and {chosen.max_active_rows} (rows decoded at once)")
    configs = build_configs(manifest, chosen)
    for stale in repository.glob("*/config.pbtxt"):  # a model of another target must not load
        if stale.parent.name not in configs:
            stale.unlink()
            if not any(p.is_file() and not is_generated(p.relative_to(repository).as_posix())
                       and "__pycache__" not in p.parts for p in stale.parent.rglob("*")):
                shutil.rmtree(stale.parent)  # nothing but generated files (and Python's caches) in it
    for name, config in configs.items():
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
    parser.add_argument("--encoder-mode", choices=ENCODER_MODES, default=None,
                        help="who runs the encoder (default: the target's; cpu in_process, t5_greedy's loop)")
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="what runs the decoder inside t5_greedy (decoder mode in_process): the decoder graph "
                             "on ONNX Runtime (default) or the checkpoint's own decoder on PyTorch")
    parser.add_argument("--dtype", choices=TORCH_DTYPES, default=None,
                        help="the torch executor's precision (default: the target's; gpu-torch bfloat16)")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="largest batch one request may carry (default: the target's, cpu 8, GPU 64); at most "
                             f"the target's max_active_rows, and for gpu-tensorrt at most {TENSORRT_MAX_BATCH}, the "
                             "largest batch the TensorRT engines' profiles cover")
    parser.add_argument("--cuda-pool-bytes", action="store_true",
                        help="print the CUDA memory pool the target needs for the exported model (what `make serve` "
                             "passes as --cuda-memory-pool-byte-size=0:<bytes>, and the chart's "
                             "server.cudaMemoryPoolByteSize) instead of writing configs")
    args = parser.parse_args(argv)
    if args.cuda_pool_bytes:
        try:
            print(cuda_pool_for(args.repository, args.target))
        except FileNotFoundError as error:
            print(f"{error}: run `make export` first", file=sys.stderr)
            return 1
        return 0
    try:
        for path in write_repository(args.repository, args.target, args.decoder_mode, args.batching,
                                     args.max_batch_size, args.executor, args.dtype,
                                     args.encoder_mode).values():
            print(path)
    except (FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
