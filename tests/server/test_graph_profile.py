"""`bench.graph_profile` reads ONNX Runtime's own profile of a real session: operator times per
run after the warm-up run, and the MatMul weights a graph holds; `bench.memory_speed` counts the
weights a decode step reads in an exported decoder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.graph_profile import matmul_weights, operator_times
from bench.graphs import graph_path
from bench.memory_speed import read_gb_s, step_weight_bytes
from contract.names import DECODER
from runtime.onnx_runtime import open_session


def test_operator_times_counts_the_runs_after_the_first(tmp_path):
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["product"]), helper.make_node("Relu", ["product"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=[weight])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    session = open_session(str(path), profile_prefix=str(tmp_path / "profile"))
    for _ in range(4):
        session.run(None, {"x": np.ones((2, 4), np.float32)})
    ops = operator_times(Path(session.end_profiling()))
    assert set(ops) == {"MatMul", "Relu"}
    assert [ops[op]["nodes_per_run"] for op in ("MatMul", "Relu")] == [1.0, 1.0]  # 3 runs counted, not 4
    assert abs(sum(v["share"] for v in ops.values()) - 1) < 0.01
    assert matmul_weights(path) == 12


def test_a_decode_step_reads_the_weights_its_config_gives(checkpoint, repository):
    """From the exported graph's with-past branch: every layer's self-attention (4 projections),
    the cross-attention's query and output (its keys and values come from the cache), the
    feed-forward and the vocabulary projection; the embedding is only gathered from."""
    config = json.loads((checkpoint / "config.json").read_text())
    d, inner = config["d_model"], config["num_heads"] * config["d_kv"]
    feed_forward = (3 if config["is_gated_act"] else 2) * d * config["d_ff"]
    per_layer = 6 * d * inner + feed_forward
    layers = config["num_decoder_layers"]
    matrices = 4 * (layers * per_layer + config["vocab_size"] * d)  # fp32
    norms = 4 * (3 * layers + 1) * d  # the RMS norms' scales, at most (the export shares equal ones)
    assert matrices < step_weight_bytes(graph_path(repository, DECODER)) <= matrices + norms
    assert 0.1 < read_gb_s(gib=0.0625, repeats=3) < 10_000
