"""Where `t5_greedy`'s memory goes under sustained load, in-process: the cpu target's decode loop
(`DecodeScheduler` over the encoder and decoder graphs of a model repository, one shared
embedding, the served scheduler limits) driven by closed-loop client threads on the soak's
SQuAD questions, with glibc's malloc settings of the server. Every `--interval` seconds it
records the process's RSS beside glibc's own account (`mallinfo2`: bytes in use and free in the
heap arenas, bytes in mmapped blocks) and the decode batch's live arrays (cache and masks), so
that growth can be told apart: live data (the batch's cache), the heap's free pages kept
(fragmentation), or memory outside malloc.

Run it in a fresh process (the malloc settings are read at start-up; this module re-executes
itself with them): `python -m bench.decode_memory --repository model_repository --seconds 180`.
Not a test; prints one JSON line per sample and a summary.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

SETTINGS_FLAG = "T5QA_DECODE_MEMORY_CHILD"


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def mallinfo() -> dict[str, float]:
    """glibc's heap account in MiB: `heap` (arenas' size), `in_use`, `free` (kept by the arenas),
    `mmapped` (blocks at or above the mmap threshold, each its own mapping)."""
    info = ctypes.CDLL(None).mallinfo2
    info.restype = MallInfo2
    m = info()
    mib = 2 ** 20
    return {"heap": m.arena / mib, "in_use": m.uordblks / mib, "free": m.fordblks / mib, "mmapped": m.hblkhd / mib}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported model repository (its graphs, tokenizer and export_manifest.json)")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to keep the load up")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop client threads")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens per request (the soak's)")
    parser.add_argument("--questions", type=int, default=500, help="SQuAD dev questions cycled (the soak's)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--output", type=Path, help="also write the samples here (JSON)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get(SETTINGS_FLAG) != "1":  # glibc reads its settings at start-up: run again with them
        from serving.server import server_environment

        env = {**server_environment(), SETTINGS_FLAG: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "bench.decode_memory", *(argv or sys.argv[1:])], env)
    return run(args)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tokenizers import Tokenizer

    from bench.graphs import open_graphs, repository_tokens
    from client.batching import Plan
    from contract.prompt import PromptEncoder
    from runtime.greedy import Sequence
    from runtime.memory import release_free_heap
    from runtime.scheduler import DecodeScheduler
    from serving.repository import TARGETS
    from serving.server import memory_kib
    from shared_data import squad_pairs

    target = TARGETS["cpu"]
    tokenizer = Tokenizer.from_file(str(args.repository / "t5_tokenizer/1/tokenizer.json"))
    prompts = PromptEncoder.from_tokenizer(tokenizer)
    # Each question as the client sends it: long contexts as overlapping windows, one row each.
    requests = [[np.array(w.input_ids, np.int64) for w in Plan(prompts, [pair], target.max_batch_size).windows[0]]
                for pair in squad_pairs(args.questions, stride=7)]
    graphs = open_graphs(args.repository, share_embedding=True)
    tokens = repository_tokens(args.repository)
    done: dict[int, threading.Event] = {}

    def finished(rows: list[Sequence]) -> None:
        for row in rows:
            done[id(row)].set()

    scheduler = DecodeScheduler(graphs.run_decoder, graphs.signature, tokens, finished, lambda rows, e: finished(rows),
                                max_active_rows=target.max_active_rows, max_queued_rows=target.max_queued_rows,
                                encode=graphs.encode, max_encode_tokens=target.max_encode_tokens,
                                on_idle=release_free_heap).start()
    stop = time.monotonic() + args.seconds
    answers = [0]

    def client(seed: int) -> None:
        choose = random.Random(seed)
        while time.monotonic() < stop:
            rows = [Sequence(None, np.ones(len(ids), np.int64), args.new_tokens, input_ids=ids)
                    for ids in choose.choice(requests)]
            events = [done.setdefault(id(row), threading.Event()) for row in rows]
            scheduler.submit(rows)
            for row, event in zip(rows, events):
                event.wait()
                del done[id(row)]
            answers[0] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    samples = []
    while any(t.is_alive() for t in threads):
        time.sleep(args.interval)
        batch = scheduler._batch  # noqa: SLF001 - a probe: the batch's live arrays
        cache = dict(batch._cache)  # noqa: SLF001
        self_mib = sum(cache[n].nbytes for n in graphs.signature.self_names if n in cache) / 2 ** 20
        cross_mib = sum(cache[n].nbytes for n in graphs.signature.cross_names if n in cache) / 2 ** 20
        sample = {"t": round(time.monotonic() - began, 1), "answers": answers[0],
                  "rss": round(memory_kib(os.getpid())["rss"] / 1024, 1),
                  **{k: round(v, 1) for k, v in mallinfo().items()},
                  "slots": len(batch.slots), "rows": len(batch), "self_cache": round(self_mib, 1),
                  "cross_cache": round(cross_mib, 1),
                  "cross_width": int(batch._encoder_mask.shape[1])}  # noqa: SLF001
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    scheduler.stop()
    time.sleep(1.5)
    idle = {"rss_idle": round(memory_kib(os.getpid())["rss"] / 1024, 1), **mallinfo()}
    loaded = [s for s in samples if s["t"] > args.seconds / 5]
    summary = {"answers": answers[0], "answers_per_s": round(answers[0] / (time.monotonic() - began), 2),
               "rss_median_first": statistics.median(s["rss"] for s in loaded[: max(len(loaded) // 4, 1)]),
               "rss_median_last": statistics.median(s["rss"] for s in loaded[-max(len(loaded) // 4, 1):]),
               "idle": idle, "stats": vars(scheduler.stats)}
    print(json.dumps(summary, default=str), flush=True)
    if args.output:
        args.output.write_text(json.dumps({"samples": samples, "summary": summary}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
