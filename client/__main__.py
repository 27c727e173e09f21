"""Command line of the client (`python -m client`, or `t5qa` when installed with pip).

  ask     answer one question:   python -m client ask -q "Who wrote it?" -c "Melville wrote it."
  batch   JSONL in, JSONL out:   python -m client batch questions.jsonl -o answers.jsonl
  health  is the server ready?   python -m client health --url localhost:8001

The server address is gRPC `localhost:8001` by default (`--protocol http` uses `localhost:8000`).
Exit status: 0 done, 1 server error or unreachable/unready server, 2 invalid input.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TextIO

from client.aio import AsyncQAClient
from client.api import QAClient
from client.core import DEMO_WARNING, ClientCore, DemoWarnings
from client.errors import InvalidInput, QAError
from client.progress import ProgressBar
from client.retry import RetryPolicy
from client.windows import DEFAULT_STRIDE

DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}
BATCH_HELP = """\
Input: one JSON object per line, {"question": "...", "context": "..."} and optionally "id"
(default: the line number). Output, in input order, one line per input line:
  {"id", "answer" ("" = no answer), "no_answer", "score" (mean token log-prob), "tokens",
   "generated", "below_threshold", "window" ([start, end) context characters or null),
   "windows", "latency_s", "model_version", "demo_model"}
or {"id", "error"} for an input line that cannot be asked (the others are still answered).
A progress bar goes to stderr. Exit status 2 if any line was invalid, 1 on a server error."""


def connection_options(timeout_s: float = 120.0, retries: bool = True,
                       timeout_of: str = "the answer") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument("--url", default=None, help="host:port (default localhost:8001, or localhost:8000 for http)")
    group.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="default: grpc")
    group.add_argument("--timeout", type=float, default=timeout_s,
                       help=f"seconds for {timeout_of}{', retries and their backoff included' if retries else ''} "
                            f"(default {timeout_s:g})")
    if retries:
        group.add_argument("--retries", type=int, default=4, help="attempts while the server is unavailable, "
                                                                  "exponential backoff from 0.25 s (default 4)")
    return common


def answer_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("answering")
    group.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (server default 32, cap 64)")
    group.add_argument("--no-answer-threshold", type=float, default=None,
                       help="report answers whose score (mean token log-prob, <= 0) is below this as no answer")
    group.add_argument("--long-context", choices=("windows", "truncate"), default="windows",
                       help="contexts over 512 tokens: answer overlapping windows and keep the best (default), "
                            "or cut the end")
    group.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                       help=f"context tokens shared by consecutive windows (default {DEFAULT_STRIDE})")
    group.add_argument("--tokenizer", default=None,
                       help="tokenizer.json path or Hub id (default: $T5QA_TOKENIZER, then the served model's own in "
                            "./model_repository/t5_tokenizer/1/, then the Hub's t5-base)")
    return common


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True, metavar="{ask,batch,health}")
    server, answering = connection_options(), answer_options()
    ask = commands.add_parser("ask", parents=[server, answering], help="answer one question about a context",
                              description="Print the answer, or `(no answer)` when the model abstains.")
    ask.add_argument("-q", "--question", required=True)
    source = ask.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--context", help="the context text")
    source.add_argument("--context-file", type=argparse.FileType("r", encoding="utf-8"), help="read the context from a file")
    ask.add_argument("--json", action="store_true", help="print the whole answer (score, tokens, latency...) as JSON")

    whole_file = connection_options(3600.0, timeout_of="the whole file")
    batch = commands.add_parser("batch", parents=[whole_file, answering], help="answer a JSONL file of questions",
                                description="Answer questions from JSONL, write answers as JSONL.\n\n" + BATCH_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("input", type=argparse.FileType("r", encoding="utf-8"), help="JSONL file, or - for stdin")
    batch.add_argument("-o", "--output", type=argparse.FileType("w", encoding="utf-8"), default="-",
                       help="JSONL file to write (default: stdout)")
    batch.add_argument("--concurrency", type=int, default=2, help="server batches in flight (default 2)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("health", parents=[connection_options(5.0, retries=False, timeout_of="all the checks")],
                        help="report server and model readiness as JSON",
                        description="Print liveness and readiness of the server and of the t5_qa model as JSON:\n"
                                    '  {"url", "protocol", "model", "live", "ready", "model_ready", "triton_version"}\n'
                                    "(with \"error\" when unreachable). Exit 0 when ready, 1 otherwise. No retries.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    return root


def client_settings(args: argparse.Namespace) -> dict:
    settings = {"url": args.url or DEFAULT_URLS[args.protocol], "protocol": args.protocol, "timeout_s": args.timeout,
                "retry": RetryPolicy(attempts=max(1, getattr(args, "retries", 1)))}
    if hasattr(args, "stride"):
        settings.update(tokenizer=args.tokenizer, no_answer_threshold=args.no_answer_threshold,
                        long_context=args.long_context, stride=args.stride)
    return settings


def ask(args: argparse.Namespace) -> int:
    context = args.context if args.context is not None else args.context_file.read()
    with QAClient(**client_settings(args)) as client:
        result = client.answer(args.question, context, args.max_new_tokens)
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        print(result.text if not result.no_answer else "(no answer)")
    return 0


def read_questions(lines: TextIO, core: ClientCore) -> tuple[list[dict], list[tuple[int, tuple[str, str]]]]:
    """Every line's output record (errors filled in) and the (record index, pair) to ask."""
    records: list[dict] = []
    todo: list[tuple[int, tuple[str, str]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = {"id": number}
        records.append(record)
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise InvalidInput("a line must be a JSON object")
            record["id"] = item.get("id", number)
            missing = [key for key in ("question", "context") if key not in item]
            if missing:
                raise InvalidInput(f"missing {' and '.join(missing)}")
            core.check(item["question"], item["context"])
            todo.append((len(records) - 1, (item["question"], item["context"])))
        except json.JSONDecodeError as error:
            record["error"] = f"line {number}: not JSON: {error}"
        except InvalidInput as error:
            record["error"] = f"line {number}: {error}"
    return records, todo


async def batch(args: argparse.Namespace) -> int:
    demo = DemoWarnings.collect()
    async with AsyncQAClient(**client_settings(args)) as client:
        records, todo = read_questions(args.input, client)
        if todo:
            bar = None if args.quiet else ProgressBar(len(todo))
            answers = await client.answer_batch([pair for _, pair in todo], args.max_new_tokens,
                                                concurrency=args.concurrency, progress=bar.update if bar else None)
            if bar:
                bar.close()
            for (index, _), result in zip(todo, answers):
                records[index].update(result.as_dict())
    for record in records:
        args.output.write(json.dumps(record, ensure_ascii=False) + "\n")
    args.output.flush()
    if demo.dropped:
        print(f"WARNING: {demo.dropped} answers: {DEMO_WARNING}", file=sys.stderr)
    invalid = sum("error" in r for r in records)
    if invalid:
        print(f"{invalid} of {len(records)} input lines were invalid (see their \"error\")", file=sys.stderr)
    return 2 if invalid else 0


def health(args: argparse.Namespace) -> int:
    with QAClient(**client_settings(args)) as client:
        report = client.health(timeout_s=args.timeout)
    print(json.dumps(report, indent=2))
    return 0 if report["live"] and report["ready"] and report["model_ready"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(format="WARNING: %(message)s", level=logging.WARNING)
    try:
        if args.command == "ask":
            return ask(args)
        if args.command == "batch":
            return asyncio.run(batch(args))
        return health(args)
    except InvalidInput as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 2
    except QAError as error:
        print(f"server error ({type(error).__name__}): {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
