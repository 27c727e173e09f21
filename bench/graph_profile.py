"""Where the cpu target's graph time goes, by ONNX Runtime operator: its profiler on the encoder
(one SQuAD prompt, batch 1) and on decode steps (`--batch` rows, `runtime.greedy.DecodeBatch`),
with the sessions' settings of the server (`runtime.onnx_runtime.open_session`) and the share of
the time in MatMul with the rate it reaches (GFLOP/s from the graphs' shapes, counted for the
encoder: 2 x prompt tokens x its MatMul weights); then what one long prompt in a decode batch
costs every step (all rows attend over as many cross-attention columns as the longest).

  python -m bench.graph_profile --repository model_repository --batch 16 --output docs/graph-profile.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.graphs import graph_path, median_step_ms, open_graphs, repository_tokens
from contract.names import DECODER, ENCODER
from runtime.onnx_runtime import OrtSeq2Seq

CONTROL_FLOW = {"If", "Loop", "Scan"}  # their time is their subgraph's nodes', counted there


def operator_times(trace: Path, skip_runs: int = 1) -> dict[str, dict]:
    """Per operator type in an ONNX Runtime profile, after its first `skip_runs` runs (the first
    plans memory and packs weights): milliseconds per run, share, nodes per run (the merged
    decoder's `If` left out: its time is that of the branch's nodes)."""
    events = json.loads(trace.read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    after = runs[skip_runs - 1][1] if skip_runs else -1
    counted = len(runs) - skip_runs
    micros, nodes = Counter(), Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] > after:
            op = event["args"].get("op_name", "?")
            if op in CONTROL_FLOW:
                continue
            micros[op] += event["dur"]
            nodes[op] += 1
    total = sum(micros.values()) or 1
    return {op: {"ms_per_run": round(us / 1000 / counted, 2), "share": round(us / total, 3),
                 "nodes_per_run": round(nodes[op] / counted, 2)} for op, us in micros.most_common()}


def matmul_weights(path: Path) -> int:
    """Elements of the 2-D initializers that MatMul nodes read (the projections' weights)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    read = {name for node in graph.node if node.op_type == "MatMul" for name in node.input}
    return sum(int(np.prod(t.dims)) for t in graph.initializer if t.name in read and len(t.dims) == 2)


def profile_encoder(path: Path, ids: np.ndarray, runs: int, workdir: Path) -> dict:
    from runtime.onnx_runtime import encode_with, open_session
    session = open_session(str(path), profile_prefix=str(workdir / "encoder"))
    mask = np.ones_like(ids)
    encode_with(session, ids, mask)  # the first run plans memory and packs weights: not counted
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        encode_with(session, ids, mask)
        times.append((time.perf_counter() - start) * 1000)
    trace = Path(session.end_profiling())
    ops = operator_times(trace)
    gflop = 2 * ids.shape[1] * matmul_weights(path) / 1e9
    matmul_ms = ops.get("MatMul", {}).get("ms_per_run", 0.0)
    return {"prompt_tokens": int(ids.shape[1]), "ms_per_run": round(statistics.median(times), 1),
            "matmul_gflop": round(gflop, 2), "matmul_gflop_per_s": round(gflop / matmul_ms * 1000, 1) if matmul_ms else None,
            "operators": ops}


def profile_steps(repository: Path, graphs: OrtSeq2Seq, inputs: list[np.ndarray], batch: int, steps: int,
                  workdir: Path) -> dict:
    """`steps` decode steps of `batch` rows through a profiled session of the decoder (the prompts
    encoded by `graphs`)."""
    from runtime.greedy import DecodeBatch, Sequence
    from runtime.onnx_runtime import open_session, run_graph
    rows = [Sequence(graphs.encode(ids, np.ones_like(ids))[0], np.ones(ids.shape[1], np.int64), 10_000)
            for ids in (inputs * batch)[:batch]]
    session = open_session(str(graph_path(repository, DECODER)), profile_prefix=str(workdir / "decoder"))
    decode = DecodeBatch(lambda feed, outputs: run_graph(session, feed, outputs), graphs.signature,
                         repository_tokens(repository))
    decode.admit(rows)  # the first step (no past: projects the prompts into cross-attention keys/values)
    ms_per_step = median_step_ms(decode, steps)
    trace = Path(session.end_profiling())
    return {"rows": batch, "steps": steps, "ms_per_step": round(ms_per_step, 1),
            "cross_columns": max(len(row.mask) for row in rows), "operators": operator_times(trace)}


def one_long_row(repository: Path, graphs: OrtSeq2Seq, inputs: list[np.ndarray], batch: int, steps: int,
                 rounds: int = 3) -> dict:
    """Decode step time (median of `steps`) at `batch` rows of the median prompt, and with one of
    them the longest prompt instead: every row's cross-attention then reads as many (padded)
    columns as the longest. Alternating, `rounds` times each, profiler off."""
    from runtime.greedy import DecodeBatch, Sequence
    tokens = repository_tokens(repository)
    ordered = sorted(inputs, key=lambda ids: ids.shape[1])
    median, longest = (graphs.encode(ids, np.ones_like(ids))[0] for ids in (ordered[len(ordered) // 2], ordered[-1]))

    def step_ms(states: list[np.ndarray]) -> float:
        decode = DecodeBatch(graphs.run_decoder, graphs.signature, tokens)
        decode.admit([Sequence(s, np.ones(len(s), np.int64), 10_000) for s in states])
        return round(median_step_ms(decode, steps), 1)

    same, mixed = [], []
    for _ in range(rounds):
        same.append(step_ms([median] * batch))
        mixed.append(step_ms([median] * (batch - 1) + [longest]))
    return {"rows": batch, "median_tokens": len(median), "longest_tokens": len(longest),
            "step_ms_all_median": same, "step_ms_one_longest": mixed}


def table(ops: dict[str, dict], top: int = 8) -> str:
    lines = ["| operator | ms per run | share | nodes per run |", "|---|---|---|---|"]
    lines += [f"| {op} | {v['ms_per_run']} | {100 * v['share']:.1f}% | {v['nodes_per_run']} |"
              for op, v in list(ops.items())[:top]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="a model repository built for the cpu target")
    parser.add_argument("--checkpoint", default="build/models/demo-base",
                        help="the checkpoint the repository was exported from (its tokenizer)")
    parser.add_argument("--batch", type=int, default=16, help="rows per decode step")
    parser.add_argument("--runs", type=int, default=4, help="encoder runs and decode steps profiled")
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    encoder = graph_path(args.repository, ENCODER)
    if not encoder.is_file():
        sys.exit(f"{encoder} not found: build the repository first (make serve or make bench builds it)")
    from bench.serving import load_inputs, machine
    inputs = load_inputs(args.repository, args.checkpoint)
    median = sorted(inputs, key=lambda ids: ids.shape[1])[len(inputs) // 2]
    graphs = open_graphs(args.repository)  # unprofiled: encodes the steps' prompts, times the long row
    with tempfile.TemporaryDirectory() as workdir:
        result = {"machine": machine(),
                  "encoder": profile_encoder(encoder, median, args.runs, Path(workdir)),
                  "decode_step": profile_steps(args.repository, graphs, inputs, args.batch, args.runs, Path(workdir)),
                  "one_long_row": one_long_row(args.repository, graphs, inputs, args.batch, 3 * args.runs)}
    enc, step = result["encoder"], result["decode_step"]
    print(f"encoder, {enc['prompt_tokens']} tokens: {enc['ms_per_run']} ms; MatMul {enc['matmul_gflop']} GFLOP "
          f"at {enc['matmul_gflop_per_s']} GFLOP/s\n\n{table(enc['operators'])}\n")
    print(f"decode step, {step['rows']} rows: {step['ms_per_step']} ms\n\n{table(step['operators'])}\n")
    long = result["one_long_row"]
    print(f"decode step, {long['rows']} rows of {long['median_tokens']} prompt tokens: {long['step_ms_all_median']} ms; "
          f"one of them {long['longest_tokens']} tokens instead: {long['step_ms_one_longest']} ms")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
