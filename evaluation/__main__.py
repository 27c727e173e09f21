"""SQuAD 2.0 dev-set evaluation of a running server (`make serve`), or `make eval`.

  python -m evaluation --url localhost:8001 --limit 200 [--reference]

Sends the questions through the client (same prompts, long-context windows and no-answer
threshold as any client), prints EM/F1 overall and for the HasAns/NoAns splits (the official
SQuAD 2.0 metric), the no-answer threshold that would have scored best, and the throughput
(questions/s, wall time of the server phase). Writes the predictions (official format:
{id: answer, "" = no answer}) and a metrics JSON.

--reference answers the very same prompts in-process with `transformers` greedy `generate` on
the checkpoint the server was exported from (the served `model_source`, or --checkpoint) and
reports the fraction of identical answers; below --min-parity (default 1.0) the exit status is 3.
Exit status: 0 done, 1 server error, 2 invalid input or data, 3 parity below --min-parity.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from client.aio import AsyncQAClient
from client.core import DEMO_WARNING, DemoWarnings, config_parameter
from client.errors import InvalidInput, QAError
from client.retry import RetryPolicy
from client.windows import DEFAULT_STRIDE
from shared_data import DEV_SET, load_questions, select
from evaluation.runner import compare_with_reference, run_server


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="localhost:8001", help="server gRPC address (default localhost:8001)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate N questions spread evenly over the dev set (default: all 11873)")
    p.add_argument("--ids", default=None, help="comma-separated question ids to evaluate instead")
    p.add_argument("--data", type=Path, default=DEV_SET, help=f"SQuAD 2.0 JSON(.gz) (default {DEV_SET})")
    p.add_argument("--concurrency", type=int, default=4, help="server batches in flight (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (default: the server's)")
    p.add_argument("--no-answer-threshold", type=float, default=None, help="scores below it count as no answer")
    p.add_argument("--long-context", choices=("windows", "truncate"), default="windows")
    p.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="window overlap in tokens")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the client's)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per server batch: the whole run's deadline is this times the number of batches")
    p.add_argument("--predictions", type=Path, default=Path("build/eval/predictions.json"))
    p.add_argument("--metrics", type=Path, default=Path("build/eval/metrics.json"))
    p.add_argument("--reference", action="store_true", help="compare with in-process transformers generate")
    p.add_argument("--checkpoint", default=None, help="reference checkpoint (default: the served model_source)")
    p.add_argument("--min-parity", type=float, default=1.0, help="fraction of identical answers required (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def summary(report: dict, url: str) -> str:
    m = report["metrics"]

    def split(name: str) -> str:
        if not m.get(f"{name}total"):
            return "n/a"
        return f"exact {m[f'{name}exact']:6.2f}  f1 {m[f'{name}f1']:6.2f}  ({m[f'{name}total']} questions)"

    def threshold(value: float | None) -> str:
        return "abstain everywhere" if value is None else f"score >= {value:.4f}"

    lines = [f"SQuAD 2.0 dev, {report['questions']} questions, server {url}, model {report['model_source']}"
             + ("  [DEMO MODEL: random weights, meaningless scores]" if report["demo_model"] else ""),
             f"  overall  {split('')}", f"  HasAns   {split('HasAns_')}", f"  NoAns    {split('NoAns_')}",
             f"  best no-answer threshold: f1 {report['best_f1']:.2f} at {threshold(report['best_f1_threshold'])}, "
             f"exact {report['best_exact']:.2f} at {threshold(report['best_exact_threshold'])}",
             f"  throughput {report['questions_per_s']:.2f} questions/s ({report['questions']} questions, "
             f"{report['prompts']} prompts in {report['batches']} batches, {report['seconds']:.1f} s)"]
    ref = report["reference"]
    if ref:
        lines.append(f"  reference (transformers generate, {ref['checkpoint']}): {ref['identical']}/{ref['total']} "
                     f"identical answers ({100 * ref['parity']:.2f}%)")
        lines += [f"    differs: {d['id']}: server {d['server']!r}, reference {d['reference']!r}" for d in ref["mismatches"]]
    return "\n".join(lines)


async def evaluate(args: argparse.Namespace) -> dict:
    questions = select(load_questions(args.data), args.limit, args.ids.split(",") if args.ids else None)
    async with AsyncQAClient(args.url, args.protocol, tokenizer=args.tokenizer, timeout_s=args.timeout,
                             retry=RetryPolicy(), no_answer_threshold=args.no_answer_threshold,
                             long_context=args.long_context, stride=args.stride) as client:
        run = await run_server(client, questions, args.max_new_tokens, args.concurrency, not args.quiet)
        if args.reference:
            checkpoint = args.checkpoint or config_parameter(run.config, "model_source")
            run.reference = compare_with_reference(client, run, checkpoint, args.max_new_tokens)
    for path, content in ((args.predictions, run.predictions), (args.metrics, run.report())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
    return run.report()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    demo = DemoWarnings.collect()
    try:
        report = asyncio.run(evaluate(args))
    except (InvalidInput, FileNotFoundError, KeyError, ValueError) as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 2
    except QAError as error:
        print(f"server error ({type(error).__name__}): {error}", file=sys.stderr)
        return 1
    print(summary(report, args.url))
    print(f"  predictions {args.predictions}, metrics {args.metrics}")
    if demo.dropped:
        print(f"WARNING: {DEMO_WARNING}", file=sys.stderr)
    if report["reference"] and report["reference"]["parity"] < args.min_parity:
        print(f"parity {report['reference']['parity']:.4f} is below --min-parity {args.min_parity}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
