"""Command line of the thin client.

  python -m client ask --question "Who wrote it?" --context "It was written by Melville." [--url localhost:8001]

Prints the answer, or `(no answer)` when the model abstains. Exits 2 on invalid input and 1 on
a server error, with the reason on stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys

from client.api import QAClient
from client.errors import InvalidInput, QAError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question about a context")
    ask.add_argument("--question", required=True)
    ask.add_argument("--context", required=True)
    ask.add_argument("--url", default="localhost:8001", help="server address (gRPC port by default)")
    ask.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="use http with port 8000")
    ask.add_argument("--max-new-tokens", type=int, default=None, help="server default 32, cap 64")
    ask.add_argument("--tokenizer", default=None,
                     help="tokenizer.json path or Hub id (default: $T5QA_TOKENIZER, ../shared/data/t5-base, t5-base)")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(format="WARNING: %(message)s", level=logging.WARNING)
    try:
        with QAClient(args.url, args.protocol, tokenizer=args.tokenizer, timeout_s=args.timeout) as client:
            result = client.answer(args.question, args.context, args.max_new_tokens)
    except InvalidInput as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 2
    except QAError as error:
        print(f"server error: {error}", file=sys.stderr)
        return 1
    print(result.text if not result.no_answer else "(no answer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
