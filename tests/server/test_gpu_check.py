"""`make gpu-check`'s script run whole on the CPU (`--device cpu --size tiny`): it builds a demo
model, serves it twice through tritonserver with the torch executor (fp32, bf16), and reports
agreement with `generate`, latency, answers/s per concurrency with the scheduler's counters, and
memory. fp32 must agree on every answer; the script fails (exit 1) when it does not."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--size", "tiny", "--prompts", "8", "--runs", "2",
         "--levels", "1", "4", "--rounds", "2", "--workdir", str(tmp_path), "--output", str(tmp_path / "gpu-check.md")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    fp32, bf16 = results["served"]
    assert "float32" in fp32["system"] and "bfloat16" in bf16["system"]
    assert fp32["identical_answers"] == fp32["answers"] == results["prompts"] == 8
    assert fp32["token_agreement"] == 1.0 and 0.0 <= bf16["token_agreement"] <= 1.0
    for served in (fp32, bf16):
        assert [level["concurrency"] for level in served["levels"]] == [1, 4]
        assert all(level["errors"] == 0 and level["answers_per_s"] > 0 and level["step_ms"] > 0
                   for level in served["levels"])
        assert served["levels"][0]["mean_batch"] == 1.0 and served["server_rss_mib"] > 0
    assert [g["system"] for g in results["generate"]] == ["generate, float32", "generate, bfloat16"]
    report = (tmp_path / "gpu-check.md").read_text()
    assert "| Triton cpu + torch executor, float32 | 8/8 | 100.00% |" in report
