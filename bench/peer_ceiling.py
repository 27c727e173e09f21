"""What the fp32 comparison with CTranslate2 can be at most on this machine: CTranslate2's own
`translate_batch` in-process, with no server around it, on static batches of the bench's SQuAD
prompts, against `bench.serving`'s roofline of this project's graphs (one encoder call and one
first call per request, every decode step batched, no loop of its own), alternating in rounds so
that the machine's slow phases fall on both. `make bench` compares the served systems; this
says how far apart the two engines' arithmetic is before any serving.

  python -m bench.peer_ceiling --checkpoint build/models/demo-base --repository model_repository \\
      --output docs/peer-ceiling.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.baseline_server import ct2_translator, ensure_converted
from bench.serving import load_inputs, machine, roofline, slug

NEW_TOKENS = 16
BATCHES = (4, 8, 16)


def ct2_answers_per_s(translate, prompts: list[list[int]], batch: int, new_tokens: int) -> float:
    """Answers per second of `translate` over `prompts` in static batches of `batch`."""
    start = time.perf_counter()
    for first in range(0, len(prompts), batch):
        translate(prompts[first:first + batch], new_tokens)
    return len(prompts) / (time.perf_counter() - start)


def measure(checkpoint: str, repository: Path, ct2_dir: Path, rounds: int, prompts: int, concurrency: int) -> dict:
    """`rounds` rounds of: CTranslate2 fp32 at each of `BATCHES`, then the roofline at `concurrency`."""
    inputs = load_inputs(repository, checkpoint)
    ensure_converted(checkpoint, ct2_dir, "float32")
    translate = ct2_translator(ct2_dir, "float32", max(BATCHES))
    rows = [ids[0].tolist() for ids in (inputs * prompts)[:prompts]]
    translate(rows[:2], NEW_TOKENS)  # warm-up
    runs = []
    for _ in range(rounds):
        run = {f"ctranslate2_batch_{b}": round(ct2_answers_per_s(translate, rows, b, NEW_TOKENS), 3) for b in BATCHES}
        roof = roofline(repository, inputs, NEW_TOKENS, concurrency)
        run.update(roofline=roof["answers_per_s"], roofline_encoder_ms=roof["encoder_ms"])
        runs.append(run)
    best = [max(run[f"ctranslate2_batch_{b}"] for b in BATCHES) for run in runs]
    ratios = [run["roofline"] / peer for run, peer in zip(runs, best)]
    return {"machine": machine(), "checkpoint": checkpoint, "new_tokens": NEW_TOKENS, "prompts": prompts,
            "roofline_concurrency": concurrency, "runs": runs,
            "roofline_over_best_ctranslate2": [round(r, 2) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 2)}


def table(result: dict) -> str:
    lines = ["| round | " + " | ".join(f"CTranslate2 fp32, batch {b}" for b in BATCHES)
             + " | roofline (encoder ms) | roofline / best CTranslate2 |",
             "|---" * (len(BATCHES) + 3) + "|"]
    for index, (run, ratio) in enumerate(zip(result["runs"], result["roofline_over_best_ctranslate2"]), 1):
        peers = " | ".join(str(run[f"ctranslate2_batch_{b}"]) for b in BATCHES)
        lines.append(f"| {index} | {peers} | {run['roofline']} ({run['roofline_encoder_ms']}) | {ratio}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="build/models/demo-base", help="the Hugging Face checkpoint folder")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="a built model repository of that checkpoint (fp32)")
    parser.add_argument("--ct2-dir", type=Path, default=None,
                        help="CTranslate2's converted model (default: make bench's, converted if missing)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two measurements")
    parser.add_argument("--prompts", type=int, default=32, help="SQuAD prompts per CTranslate2 measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="the roofline's decode batch")
    parser.add_argument("--output", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args()
    ct2_dir = args.ct2_dir or Path("build/bench") / f"ct2-float32-{slug(args.checkpoint)}"
    result = measure(args.checkpoint, args.repository, ct2_dir, args.rounds, args.prompts, args.concurrency)
    print(table(result))
    print(f"median roofline / best CTranslate2: {result['median_ratio']}x")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
