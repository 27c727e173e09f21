"""The encoder graph with and without ONNX Runtime's CPU arena, side by side: time per prompt and
the memory a process holds after the calls. Each measurement is a fresh process with the
server's malloc settings (`serving.server.server_environment`), the two settings alternating:

  plain   `open_session` without the arena, `session.run` (the encoder before `EncoderGraph`)
  arena   `runtime.onnx_runtime.EncoderGraph`: the arena, shrunk after every call, IO binding

The prompts are SQuAD 2.0 dev questions, tokenized by the repository's tokenizer and encoded in
the groups the scheduler would form for them arriving at once (`runtime.encoding.length_groups`).

  python -m bench.encoder_arena --repository model_repository --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from contract.names import ENCODER, version_file

MODES = ("plain", "arena")
PAD_ID = 0  # the id in padded positions: they are masked, any id gives the same states and time


def rss_mib() -> float:
    from serving.server import memory_kib
    return memory_kib(os.getpid())["rss"] / 1024


def measure(mode: str, repository: Path, prompts: int, threads: int) -> dict:
    """In this process: encode `prompts` SQuAD prompts with `mode`, in the calls the scheduler
    makes for them arriving at once (`runtime.encoding.encode_rows`)."""
    from bench.serving import load_inputs
    from runtime.encoding import encode_rows, length_groups
    from runtime.greedy import Sequence
    from runtime.memory import release_free_heap
    from runtime.onnx_runtime import EncoderGraph, encode_with, open_session

    path = str(repository / version_file(ENCODER))
    encode = EncoderGraph(path, threads) if mode == "arena" else partial(encode_with, open_session(path, threads))
    prompts_ids = [ids[0] for ids in load_inputs(repository, str(repository))][:prompts]

    def rows(ids_list: list[np.ndarray]) -> list[Sequence]:
        return [Sequence(None, np.ones(len(ids), np.int64), 1, input_ids=ids) for ids in ids_list]

    encode_rows(encode, rows(prompts_ids[:1]), PAD_ID)  # warm-up: first-run allocations and caches
    release_free_heap()
    before = rss_mib()
    began = time.perf_counter()
    encode_rows(encode, rows(prompts_ids), PAD_ID)
    seconds = time.perf_counter() - began
    release_free_heap()
    return {"mode": mode, "prompts": len(prompts_ids), "calls": len(length_groups([len(ids) for ids in prompts_ids])),
            "ms_per_prompt": round(1000 * seconds / len(prompts_ids), 1),
            "rss_mib": round(rss_mib(), 1), "rss_growth_mib": round(rss_mib() - before, 1)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder_arena", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="a model repository built for the cpu target (t5_encoder/1/model.onnx)")
    parser.add_argument("--prompts", type=int, default=48, help="SQuAD dev prompts per measurement (at most 64)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per setting, alternating")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: one per core)")
    parser.add_argument("--output", type=Path, help="also write the measurements here as JSON")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    encoder = args.repository / version_file(ENCODER)
    if not encoder.is_file():
        sys.exit(f"{encoder} not found: build the repository first (make bench builds it)")
    if args.child:
        print(json.dumps(measure(args.child, args.repository, args.prompts, args.threads)))
        return
    from serving.server import server_environment
    results = []
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "bench.encoder_arena", "--child", mode,
                                  "--repository", str(args.repository), "--prompts", str(args.prompts),
                                  "--threads", str(args.threads)],
                                 env=server_environment(), check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    print("\n| setting | ms per prompt (each run) | RSS after, MiB | growth over the calls, MiB |\n|---|---|---|---|")
    for mode in MODES:
        mine = [r for r in results if r["mode"] == mode]
        print(f"| {mode} | {' / '.join(str(r['ms_per_prompt']) for r in mine)} | "
              f"{' / '.join(str(r['rss_mib']) for r in mine)} | {' / '.join(str(r['rss_growth_mib']) for r in mine)} |")
    plain, arena = ([r["ms_per_prompt"] for r in results if r["mode"] == m] for m in MODES)
    print(f"\narena / plain, mean time per prompt: {statistics.mean(arena) / statistics.mean(plain):.2f}x")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
