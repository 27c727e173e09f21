"""`bench.graph_profile` reads ONNX Runtime's own profile of a real session: operator times per
run after the warm-up run, and the MatMul weights a graph holds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.graph_profile import matmul_weights, operator_times
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
