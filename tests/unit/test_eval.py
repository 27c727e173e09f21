"""The evaluation's options without a server: `--limit` spreads over the dev set, and `make eval`
passes its variables on to `python -m evaluation`. End to end: `tests/server/test_eval.py`."""
from __future__ import annotations

import os
import subprocess

from shared_data import load_questions, select
from tests.helpers import REPO_ROOT


def test_limit_spreads_over_the_dev_set():
    questions = load_questions()
    chosen = select(questions, 200)
    assert len(chosen) == len({q.id for q in chosen}) == 200
    assert chosen[0] is questions[0] and questions.index(chosen[-1]) > len(questions) - 100
    assert {bool(q.answers) for q in chosen} == {True, False}


def test_make_eval_passes_its_variables():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # run under make test
    done = subprocess.run(["make", "-n", "--no-print-directory", "eval", "LIMIT=200",
                           "URL=example:9001", "EVAL_REFERENCE=1", "EVAL_ARGS=--quiet"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1]
    assert command.split() == [".venv/bin/python", "-m", "evaluation", "--url", "example:9001", "--concurrency", "4",
                               "--limit", "200", "--reference", "--quiet"]
