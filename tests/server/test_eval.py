"""`python -m evaluation` end to end against the test server: a few dev questions (among them
long contexts answered in windows) with --reference, which must agree 100% with in-process
`transformers`; the reported metrics are the official metric of the written predictions. (How
questions are chosen and what `make eval` runs, without a server: `tests/unit/test_eval.py`.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared_data import load_questions, select
from evaluation.squad_v2 import evaluate
from tests.helpers import REPO_ROOT
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
