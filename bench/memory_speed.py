"""The floor under a decode step at batch 1 on a CPU, for `bench.serving`'s roofline: a step at
batch 1 multiplies one row by every weight matrix of the decoder, so it reads all of them and
cannot take less than their bytes over the speed this machine reads memory. A lone answer then
takes at least its encoder call, the decoder's first call beyond a step, and one such step per
new token.

  python -m bench.memory_speed model_repository     # prints the weights a step reads, the read speed, the floor
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from time import perf_counter

import numpy as np
import onnx

from bench.graphs import graph_path
from contract.names import DECODER


def step_weight_bytes(decoder: Path) -> int:
    """Bytes of the weights one decode step with the past reads in `decoder`'s graph: for a merged
    decoder (an `If` on `use_cache_branch`) its with-past branch, whose cross-attention keys and
    values come from the cache; tables only gathered from (the embedding: one row per token) do
    not count."""
    graph = onnx.load(str(decoder), load_external_data=False).graph
    weights = {t.name: t for t in graph.initializer}
    merged = next((node for node in graph.node if node.op_type == "If"), None)
    step = graph if merged is None else next(a.g for a in merged.attribute if a.name == "then_branch")
    consumers: dict[str, set[str]] = defaultdict(set)
    for node in step.node:
        for name in node.input:
            consumers[name].add(node.op_type)
    return sum(int(np.prod(weights[name].dims)) * onnx.helper.tensor_dtype_to_np_dtype(weights[name].data_type).itemsize
               for name, ops in consumers.items() if name in weights and ops != {"Gather"})


def read_gb_s(gib: float = 1.0, repeats: int = 7) -> float:
    """How fast this machine reads memory, in GB/s: the median of `repeats` sums of `gib` GiB of
    float32 on all of PyTorch's threads (as many as ONNX Runtime's in the server)."""
    import torch
    values = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
    values.sum()  # pages in
    times = []
    for _ in range(repeats):
        start = perf_counter()
        values.sum()
        times.append(perf_counter() - start)
    return values.numel() * 4 / statistics.median(times) / 1e9


def step_floor(repository: Path) -> dict:
    """The weights a step reads (MB), the read speed (GB/s) and the shortest step they allow (ms)."""
    weights, speed = step_weight_bytes(graph_path(repository, DECODER)), read_gb_s()
    return {"step_weights_mb": round(weights / 1e6, 1), "read_gb_s": round(speed, 1),
            "step_floor_ms": round(weights / speed / 1e6, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="a model repository (model_repository after make serve)")
    print(step_floor(parser.parse_args(argv).repository))


if __name__ == "__main__":
    main()
