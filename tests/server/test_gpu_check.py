"""`make gpu-check` as a bare GPU machine runs it, on the CPU: the kit of `make gpu-kit`
(`bench.gpu_kit`, built here for this machine's Python) unpacked and run in a fresh venv that holds
only what the GPU machine has (requirements/gpu-node.txt: torch, transformers 5, numpy 2,
onnxruntime), nothing of .venv, no pip during the run. `--device cpu --size tiny`: the script builds
a demo model, serves it twice through the kit's tritonserver with the torch executor (fp32, bf16),
and reports agreement with `generate`, latency, answers/s per concurrency with the scheduler's
counters, and memory. fp32 must agree on every answer; the script fails (exit 1) when it does not.
Also: the kit for the GPU machine's Python (3.12) holds what it needs and fits its size limit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench.gpu_kit import KIT_NAME, SIZE_LIMIT, build
from tests.helpers import REPO_ROOT

THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def gpu_node(tmp_path_factory) -> Path:
    """The Python of a fresh venv holding only requirements/gpu-node.txt."""
    venv = tmp_path_factory.mktemp("gpu-node") / "venv"
    base = Path(sys.base_prefix) / "bin" / f"python{THIS_PYTHON}"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                    str(REPO_ROOT / "requirements" / "gpu-node.txt")], check=True, timeout=1200)
    return venv / "bin" / "python"


def test_the_kit_for_python_3_12_holds_what_the_gpu_machine_lacks(tmp_path):
    size = build(tmp_path / "kit.tar.xz", "3.12")  # raises ValueError over SIZE_LIMIT
    assert 0 < size <= SIZE_LIMIT
    with tarfile.open(tmp_path / "kit.tar.xz") as kit:
        names = set(kit.getnames())
        assert kit.extractfile(f"{KIT_NAME}/python-version").read() == b"3.12\n"
    prefix = f"{KIT_NAME}/triton/pytriton/tritonserver"
    for needed in (f"{KIT_NAME}/run", f"{prefix}/bin/tritonserver", f"{prefix}/backends/python/libtriton_python.so",
                   f"{prefix}/python_backend_stubs/3.12/triton_python_backend_stub",
                   f"{KIT_NAME}/site-packages/numpy-1.26.4.dist-info/METADATA",
                   f"{KIT_NAME}/site-packages/tritonclient/grpc/__init__.py",
                   f"{KIT_NAME}/project/bench/gpu_check.py", f"{KIT_NAME}/data/t5-base/tokenizer.json",
                   f"{KIT_NAME}/data/squad_v2/dev-v2.0.json.gz"):
        assert needed in names, needed
    assert not any("/python_backend_stubs/3.11/" in n or "/tests/" in n for n in names)
    assert not any(n.startswith(f"{KIT_NAME}/project/tests/") for n in names)


def test_gpu_check_from_the_kit_on_a_bare_machine(tmp_path, gpu_node):
    build(tmp_path / "kit.tar.xz", THIS_PYTHON)
    with tarfile.open(tmp_path / "kit.tar.xz") as kit:
        kit.extractall(tmp_path, filter="tar")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "T5QA_"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    done = subprocess.run(
        [str(tmp_path / KIT_NAME / "run"), "--device", "cpu", "--size", "tiny", "--prompts", "8", "--runs", "2",
         "--levels", "1", "4", "--rounds", "2"], env={**env, "PYTHON": str(gpu_node)},
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    docs = tmp_path / KIT_NAME / "project" / "docs"
    results = json.loads((docs / "gpu-check.json").read_text())
    # The run used the GPU machine's torch and transformers, and the kit's numpy in front of numpy 2.
    assert results["versions"]["numpy"] == "1.26.4" and results["versions"]["transformers"].startswith("5.")
    fp32, bf16 = results["served"]
    assert "float32" in fp32["system"] and "bfloat16" in bf16["system"]
    assert fp32["identical_answers"] == fp32["answers"] == results["prompts"] == 8
    assert fp32["token_agreement"] == 1.0 and 0.0 <= bf16["token_agreement"] <= 1.0
    for served in (fp32, bf16):
        assert [level["concurrency"] for level in served["levels"]] == [1, 4]
        assert all(level["errors"] == 0 and level["answers_per_s"] > 0 and level["step_ms"] > 0
                   for level in served["levels"])
        assert served["levels"][0]["mean_batch"] == 1.0 and 0 < served["server_pss_mib"] < served["server_rss_mib"]
    assert [g["system"] for g in results["generate"]] == ["generate, float32", "generate, bfloat16"]
    report = (docs / "gpu-check.md").read_text()
    assert "| Triton cpu + torch executor, float32 | 8/8 | 100.00% |" in report


def test_the_kit_refuses_another_python(tmp_path):
    """The kit names the Python it needs instead of failing later inside Triton's stub."""
    kit = tmp_path / KIT_NAME
    kit.mkdir()
    (kit / "python-version").write_text("3.99\n")
    run = kit / "run"
    run.write_bytes((REPO_ROOT / "bench" / "gpu_kit_run.sh").read_bytes())
    run.chmod(0o755)
    done = subprocess.run([str(run)], capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2 and f"built for Python 3.99, {sys.executable} is {THIS_PYTHON}" in done.stderr
