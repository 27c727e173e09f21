"""What runs the model inside `t5_greedy`'s process, chosen from its parameters: one interface,
`runtime.greedy.RunGraph` (the merged decoder graph's tensors in, the requested outputs back), with
these implementations, and the array type the decode batch keeps states and caches in:

  decoder_mode in_process, executor onnxruntime, cpu   the encoder and decoder graphs on ONNX
        Runtime's CPU EP, one shared embedding (`OrtSeq2Seq`), NumPy arrays; the scheduler runs
        the encoder too (`encode`)
  decoder_mode in_process, executor onnxruntime, GPU   the decoder graph on ONNX Runtime's CUDA EP
        with IO binding (`BoundGraph`): torch tensors that stay on the device
  decoder_mode in_process, executor torch              the checkpoint's own decoder on PyTorch
        (`runtime.torch_t5.TorchDecoder`), on the CPU or the GPU
  decoder_mode bls                                     `run` is None: the model calls the decoder
        model(s) through Triton (native ONNX Runtime or TensorRT backends), device tensors by DLPack
Imports happen only for the implementation chosen (the GPU image has no ONNX Runtime package).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from contract.parameters import GreedyParameters
from runtime.arrays import NumpyArrays, TorchArrays
from runtime.encoding import Encode
from runtime.greedy import RunGraph


@dataclass
class Executor:
    run: RunGraph | None  # None: the decoder is another Triton model (BLS)
    encode: Encode | None  # set where the scheduler runs the encoder graph itself (cpu)
    arrays: NumpyArrays | TorchArrays


def open_executor(p: GreedyParameters, path: Callable[[str], str], on_device: bool) -> Executor:
    """The executor `p` asks for; `path(name)` locates a file of the model repository,
    `on_device`: Triton hands this model GPU tensors."""
    torch_executor = p.decoder_mode == "in_process" and p.executor == "torch"
    arrays = TorchArrays() if on_device or torch_executor else NumpyArrays()
    run: RunGraph | None = None
    encode: Encode | None = None
    if torch_executor:
        from runtime.torch_t5 import TorchDecoder
        run = TorchDecoder(path(p.checkpoint), p.signature, p.device, p.dtype, p.intra_op_threads)
    elif p.decoder_mode == "in_process" and p.encoder_graph:  # cpu: both graphs here, one embedding
        from runtime.onnx_runtime import OrtSeq2Seq
        graphs = OrtSeq2Seq(path(p.encoder_graph), path(p.decoder_graph), p.intra_op_threads, share_embedding=True)
        run, encode = graphs.run_decoder, graphs.encode
    elif p.decoder_mode == "in_process" and on_device:  # ORT's CUDA EP, cache on the GPU
        from runtime.onnx_runtime import BoundGraph  # needs onnxruntime-gpu
        run = BoundGraph(path(p.decoder_graph), p.device, p.intra_op_threads)
    elif p.decoder_mode == "in_process":
        from runtime.onnx_runtime import open_session, run_graph
        run = partial(run_graph, open_session(path(p.decoder_graph), p.intra_op_threads))
    if p.encoder_graph and encode is None:  # the decoder elsewhere, the encoder graph here
        from runtime.onnx_runtime import EncoderGraph
        encode = EncoderGraph(path(p.encoder_graph), p.intra_op_threads)
    return Executor(run, encode, arrays)
