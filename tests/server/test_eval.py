"""`python -m evaluation` end to end against the test server: a few dev questions (among them
long contexts answered in windows) with --reference, which must agree 100% with in-process
`transformers`; the reported metrics are the official metric of the written predictions; and
`make eval` passes its variables on."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared_data import load_questions, select
from evaluation.squad_v2 import evaluate
from tests.conftest import REPO_ROOT
from tests.inputs import TOKENIZER_JSON


@pytest.fixture(scope="module")
def chosen(prompts) -> list:
    questions = load_questions()
    long = [q for q in questions if len(prompts.tokens(q.question, q.context).ids) > 512][:3]
    return select(questions, 21) + long


def test_evaluation_with_reference_end_to_end(server, chosen, tmp_path):
    predictions, metrics = tmp_path / "predictions.json", tmp_path / "metrics.json"
    done = subprocess.run(
        [sys.executable, "-m", "evaluation", "--url", f"127.0.0.1:{server.ports.grpc}", "--ids",
         ",".join(q.id for q in chosen), "--reference", "--concurrency", "3", "--max-new-tokens", "12",
         "--predictions", str(predictions), "--metrics", str(metrics), "--tokenizer", str(TOKENIZER_JSON)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(metrics.read_text())
    assert report["reference"]["identical"] == report["reference"]["total"] == len(chosen)
    assert report["reference"]["parity"] == 1.0
    assert report["prompts"] >= len(chosen) + 3, "the long contexts were answered in windows"
    assert report["questions_per_s"] > 0 and report["demo_model"] is True
    written = json.loads(predictions.read_text())
    assert set(written) == {q.id for q in chosen}
    assert report["metrics"] == pytest.approx(evaluate({q.id: list(q.answers) for q in chosen}, written))
    assert report["metrics"]["HasAns_total"] > 0 and report["metrics"]["NoAns_total"] > 0
    assert f"{len(chosen)}/{len(chosen)} identical answers (100.00%)" in done.stdout
    for split in ("overall", "HasAns", "NoAns", "throughput", "questions/s"):
        assert split in done.stdout


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
