"""ONNX Runtime sessions for the T5 graphs, shared by the CPU-target Python models and the
exporter's validation, so both run the graphs with the same settings; the one copy of the token
embedding that the encoder and decoder graphs of one process can share (`shared_embedding`); the
encoder graph run in ONNX Runtime's arena, given back after every call (`EncoderGraph`); and
`BoundGraph`, a graph run on PyTorch tensors with IO binding, which keeps the decode loop's
states and caches on the GPU with ONNX Runtime's CUDA EP (onnxruntime-gpu)."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from contract.graphs import DecoderSignature
from contract.names import ATTENTION_MASK, INPUT_IDS, LAST_HIDDEN_STATE
from runtime.greedy import Tensors


def providers_for(device: str) -> list:
    """ONNX Runtime's execution providers for a torch-style device ("cpu", "cuda", "cuda:N")."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise ValueError(f"unknown device {device!r}: cpu or cuda[:N]")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} has no CUDA execution provider: install onnxruntime-gpu")
    # Grow the CUDA arena by what each call asks, not in doubling chunks: decode shapes change every step.
    return [("CUDAExecutionProvider", {"device_id": int(index or 0), "arena_extend_strategy": "kSameAsRequested"}),
            "CPUExecutionProvider"]


def open_session(path: str, intra_op_threads: int = 0, inter_op_threads: int = 1,
                 initializers: dict[str, ort.OrtValue] | None = None, device: str = "cpu",
                 memory_arena: bool = False, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A session with full graph optimisation on `device` (`providers_for`); 0 threads means one
    per available core. `initializers` replace the graph's own by name, without a copy (the
    caller keeps them alive). `memory_arena`: ONNX Runtime's CPU arena, for a graph run with
    `shrinking_arena` (`EncoderGraph`); off by default, see below. `profile_prefix`: ONNX
    Runtime's profiler on, its JSON trace written to `<prefix>_<date>.json` by `end_profiling()`
    (`bench.graph_profile`)."""
    options = ort.SessionOptions()
    for name, value in (initializers or {}).items():
        options.add_initializer(name, value)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = inter_op_threads
    # Several sessions share the cores (encoder and decoder stubs): threads that spin while
    # waiting for work would burn the cores the other session needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Decode batches change shape at every step (rows, cache lengths, encoder widths): ONNX
    # Runtime's CPU arena keeps every size it ever served and grew without bound under load
    # (soak: greedy stub 1 -> 7 GB in 10 min). Plain allocations return memory instead.
    options.enable_cpu_mem_arena = memory_arena
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(path, sess_options=options, providers=providers_for(device))


def shared_embedding(encoder_path: str, decoder_path: str) -> tuple[str, str, ort.OrtValue] | None:
    """T5's encoder and decoder embed tokens with the same matrix, but each exported graph holds
    its own copy (99 MB for t5-base). Returns the name of the embedding (the matrix a Gather reads)
    in each graph and one OrtValue holding it, to pass to both sessions as `initializers`; None if
    the graphs' embeddings differ (a checkpoint that does not share them). Reading the graphs
    takes ~2 s for t5-base; the memory is given back before the sessions open."""
    import ctypes
    import gc

    import onnx
    from onnx import numpy_helper

    def embedding(path: str) -> tuple[str, np.ndarray]:
        graph = onnx.load(path).graph
        gathered = {node.input[0] for node in _nodes(graph) if node.op_type == "Gather"}
        # the largest matrix a Gather reads (the others are the relative attention biases)
        found = max((i for i in graph.initializer if i.name in gathered and len(i.dims) == 2),
                    key=lambda i: i.dims[0] * i.dims[1], default=None)
        return (found.name, numpy_helper.to_array(found).copy()) if found is not None else ("", np.zeros(0))

    (encoder_name, matrix), (decoder_name, other) = embedding(encoder_path), embedding(decoder_path)
    same = bool(encoder_name and decoder_name) and matrix.shape == other.shape and np.array_equal(matrix, other)
    del other
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the parsed graphs' memory back to the system
    except OSError:
        pass
    return (encoder_name, decoder_name, ort.OrtValue.ortvalue_from_numpy(matrix)) if same else None


def _nodes(graph):
    """Every node of `graph` and of its subgraphs (the merged decoder's If branches)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _nodes(attribute.g)


def shrinking_arena() -> ort.RunOptions:
    """Run options that hand the CPU arena's free regions back to the system at the end of the
    run: within the run its activations reuse the arena (a layer's buffers serve the next
    layer); after it only the regions its outputs live in stay held."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def encode_with(session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The encoder graph's `last_hidden_state` for a batch of token ids."""
    return run_graph(session, {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask},
                     [LAST_HIDDEN_STATE])[LAST_HIDDEN_STATE]


def input_shapes(session: ort.InferenceSession) -> dict[str, list]:
    return {i.name: i.shape for i in session.get_inputs()}


def run_graph(session: ort.InferenceSession, feed: Tensors, outputs: list[str]) -> Tensors:
    """Run `session` on the inputs it declares (extra feed entries are ignored)."""
    names = {i.name for i in session.get_inputs()}
    results = session.run(outputs, {k: v for k, v in feed.items() if k in names})
    return dict(zip(outputs, results))


class EncoderGraph:
    """The encoder graph on ONNX Runtime's CPU EP, called as `encode(input_ids, attention_mask)`.

    It runs with ONNX Runtime's CPU arena, shrunk at the end of every run (`shrinking_arena`),
    its states written into an array of ours (IO binding), so that no arena region outlives the
    run. Its activations are large (t5-base, 4 prompts of 200 tokens: several MB per layer) and,
    without the arena, each is a fresh block from the system that the CPU faults in page by page
    (under the server's 1 MB mmap threshold, `serving.server.server_environment`): the encoder,
    most of a request's CPU time here, took 1.3-1.4x as long that way (`python -m
    bench.encoder_arena`, docs/performance.md). The arena without the shrink would keep its
    peak for good."""

    def __init__(self, path: str, intra_op_threads: int = 0,
                 initializers: dict[str, ort.OrtValue] | None = None):
        self.session = open_session(path, intra_op_threads, memory_arena=True, initializers=initializers)
        self._shrink = shrinking_arena()
        output = {o.name: o for o in self.session.get_outputs()}[LAST_HIDDEN_STATE]
        self._dtype = np.float16 if output.type == "tensor(float16)" else np.float32
        self._d_model = output.shape[-1]
        if not isinstance(self._d_model, int):
            raise ValueError(f"{path}: {LAST_HIDDEN_STATE} has no static hidden size ({output.shape})")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        states = np.empty((*input_ids.shape, self._d_model), self._dtype)
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_IDS, np.ascontiguousarray(input_ids, np.int64))
        binding.bind_cpu_input(ATTENTION_MASK, np.ascontiguousarray(attention_mask, np.int64))
        binding.bind_output(LAST_HIDDEN_STATE, "cpu", 0, states.dtype.type, list(states.shape), states.ctypes.data)
        self.session.run_with_iobinding(binding, self._shrink)
        return states


class OrtSeq2Seq:
    """Encoder (`EncoderGraph`) and merged decoder run in-process: the reference path of the
    ONNX export, and the cpu target's `t5_greedy` (`share_embedding`: one copy of the token
    embedding for both)."""

    def __init__(self, encoder_path: str, decoder_path: str, intra_op_threads: int = 0,
                 share_embedding: bool = False):
        self.embedding = shared_embedding(encoder_path, decoder_path) if share_embedding else None  # kept alive
        encoder_name, decoder_name, matrix = self.embedding or ("", "", None)
        self.encode = EncoderGraph(encoder_path, intra_op_threads,
                                   initializers={encoder_name: matrix} if matrix is not None else None)
        self.decoder = open_session(decoder_path, intra_op_threads,
                                    initializers={decoder_name: matrix} if matrix is not None else None)
        self.signature = DecoderSignature.from_inputs(input_shapes(self.decoder))

    def run_decoder(self, feed: Tensors, outputs: list[str]) -> Tensors:
        return run_graph(self.decoder, feed, outputs)


class BoundGraph:
    """A graph run on PyTorch tensors with IO binding: tensor inputs are bound where they are
    through DLPack (no copy), NumPy ones (masks, the branch flag) as host values, and the outputs
    are allocated by ONNX Runtime on the session's device and handed back as tensors through
    DLPack. With the CUDA EP the decode loop's states, caches and logits stay on the GPU from the
    first step to the last; on the CPU EP the same code runs, which is how `make test` checks it.
    A `RunGraph` for `runtime.greedy` with `runtime.arrays.TorchArrays`."""

    def __init__(self, path: str, device: str = "cpu", intra_op_threads: int = 0):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.session = open_session(path, intra_op_threads, device=device)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, feed: Tensors, outputs: list[str]) -> Tensors:
        binding = self.session.io_binding()
        held = []  # the bound buffers, alive until the run is over
        for name in self.inputs:
            value = feed[name]
            if isinstance(value, self.torch.Tensor):
                value = value.contiguous()
                held.append(value)
                binding.bind_ortvalue_input(name, ort.OrtValue.from_dlpack(value))
            else:
                held.append(np.ascontiguousarray(value))
                binding.bind_cpu_input(name, held[-1])
        for name in outputs:
            binding.bind_output(name, self.device.type, self.device.index or 0)
        if self.device.type == "cuda":
            self.torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch's stream
        self.session.run_with_iobinding(binding)
        return {name: self.torch.from_dlpack(value) for name, value in zip(outputs, binding.get_outputs())}
