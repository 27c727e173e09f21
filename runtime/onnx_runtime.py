"""ONNX Runtime sessions for the T5 graphs, shared by the CPU-target Python models and the
exporter's validation, so both run the graphs with the same settings."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from contract.graphs import DecoderSignature
from runtime.greedy import Tensors


def open_session(path: str, intra_op_threads: int = 0, inter_op_threads: int = 1) -> ort.InferenceSession:
    """A CPU session with full graph optimisation; 0 threads means one per available core."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = inter_op_threads
    # Several sessions share the cores (encoder and decoder stubs): threads that spin while
    # waiting for work would burn the cores the other session needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Decode batches change shape at every step (rows, cache lengths, encoder widths): ONNX
    # Runtime's CPU arena keeps every size it ever served and grew without bound under load
    # (soak: greedy stub 1 -> 7 GB in 10 min). Plain allocations return memory instead.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def input_shapes(session: ort.InferenceSession) -> dict[str, list]:
    return {i.name: i.shape for i in session.get_inputs()}


def run_graph(session: ort.InferenceSession, feed: Tensors, outputs: list[str]) -> Tensors:
    """Run `session` on the inputs it declares (extra feed entries are ignored)."""
    names = {i.name for i in session.get_inputs()}
    results = session.run(outputs, {k: v for k, v in feed.items() if k in names})
    return dict(zip(outputs, results))


class OrtSeq2Seq:
    """Encoder and merged decoder run in-process: the reference path of the ONNX export."""

    def __init__(self, encoder_path: str, decoder_path: str, intra_op_threads: int = 0):
        self.encoder = open_session(encoder_path, intra_op_threads)
        self.decoder = open_session(decoder_path, intra_op_threads)
        self.signature = DecoderSignature.from_inputs(input_shapes(self.decoder))

    def run_decoder(self, feed: Tensors, outputs: list[str]) -> Tensors:
        return run_graph(self.decoder, feed, outputs)

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        return run_graph(self.encoder, feed, ["last_hidden_state"])["last_hidden_state"]
