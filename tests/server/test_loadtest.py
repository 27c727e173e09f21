"""The load tooling against the test server: a short headless Locust run (gRPC and HTTP users
asking SQuAD dev questions) writes CSV/HTML reports with requests and no failures; the SLO gate
fails on an impossible p95 (through the Makefile fragment); non-loopback targets are refused;
a short soak records the server's memory and passes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.safety import loopback_host
from tests.helpers import REPO_ROOT
from tests.inputs import TOKENIZER_JSON

ENV = dict(os.environ, PYTHONUNBUFFERED="1", T5QA_TOKENIZER=str(TOKENIZER_JSON))


def run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout_s)


def aggregated(stats_csv: Path) -> dict[str, dict]:
    with stats_csv.open(newline="") as f:
        return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(f)}


def test_headless_run_writes_reports_with_requests_and_no_failures(server, tmp_path):
    result = run([sys.executable, "-m", "loadtest.run", "--users", "4", "--spawn-rate", "4", "--duration", "15",
                  "--grpc-port", str(server.ports.grpc), "--http-port", str(server.ports.http),
                  "--max-new-tokens", "8", "--out", str(tmp_path), "--name", "smoke", "--p95-ms", "30000"], 150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = aggregated(tmp_path / "smoke_stats.csv")
    assert int(rows["Aggregated"]["Request Count"]) > 0 and int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["grpc t5_qa"]["Request Count"]) > 0 and int(rows["http t5_qa"]["Request Count"]) > 0
    assert (tmp_path / "smoke.html").stat().st_size > 10_000
    gate = json.loads((tmp_path / "smoke_gate.json").read_text())
    assert gate["passed"] and gate["failures"] == 0 and gate["requests"] >= int(rows["Aggregated"]["Request Count"])
    assert "SLO passed" in result.stdout


def test_slo_gate_fails_on_an_impossible_p95(server, tmp_path):
    result = run(["make", "--no-print-directory", "-f", "loadtest/loadtest.mk", "loadtest", f"PYTHON={sys.executable}",
                  "DURATION=5", "USERS=2", "SPAWN_RATE=2", "P95_MS=1", "USER_CLASS=grpc", "MAX_NEW_TOKENS=4",
                  f"GRPC_PORT={server.ports.grpc}", f"HTTP_PORT={server.ports.http}", f"LOADTEST_OUT={tmp_path}"], 150)
    assert result.returncode != 0
    assert "SLO FAILED" in result.stderr and "exceeds the 1 ms threshold" in result.stderr
    gate = json.loads((tmp_path / "loadtest_gate.json").read_text())
    assert not gate["passed"] and gate["requests"] > 0 and gate["failures"] == 0


def test_slo_gate_fails_when_requests_fail(server, tmp_path):
    """Users asking for 65 new tokens (above the cap) get INVALID_ARGUMENT on every call."""
    result = run([sys.executable, "-m", "loadtest.run", "--users", "2", "--spawn-rate", "2", "--duration", "4",
                  "--user-class", "grpc", "--max-new-tokens", "65", "--grpc-port", str(server.ports.grpc),
                  "--http-port", str(server.ports.http), "--out", str(tmp_path), "--name", "failing"], 120)
    assert result.returncode == 1
    assert "requests failed" in result.stderr
    assert "max_new_tokens must be between 1 and 64" in result.stdout
    rows = aggregated(tmp_path / "failing_stats.csv")
    assert int(rows["Aggregated"]["Failure Count"]) > 0


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.10", "8.8.8.8", "http://172.16.0.1:8000"])
def test_non_loopback_targets_are_refused_before_any_traffic(host, tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        loopback_host(host)
    result = run([sys.executable, "-m", "loadtest.run", "--host", host, "--duration", "1", "--out", str(tmp_path)], 60)
    assert result.returncode == 2 and "loopback" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing may run"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "::1", "http://[::1]:8000"])
def test_loopback_targets_are_accepted(host):
    assert loopback_host(host)


def test_short_soak_records_memory_and_passes(server, tmp_path):
    result = run([sys.executable, "-m", "loadtest.soak", "--duration", "24", "--users", "4", "--spawn-rate", "4",
                  "--warmup", "6", "--interval", "1", "--max-new-tokens", "8",
                  "--grpc-port", str(server.ports.grpc), "--http-port", str(server.ports.http),
                  "--out", str(tmp_path), "--name", "soak"], 200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "soak_stats.csv").is_file()
    with (tmp_path / "soak_memory.csv").open(newline="") as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= 15
    assert {int(s["server_pid"]) for s in samples} == {server.pid}
    assert all(int(s["processes"]) >= 4 and int(s["rss_kib"]) > 100_000 for s in samples)
    gate = json.loads((tmp_path / "soak_gate.json").read_text())
    assert gate["passed"] and gate["failures"] == 0 and abs(gate["growth_percent"]) < 5
