"""`make serve` with a GPU target on a host that cannot run it stops before exporting anything.
`make serve`'s program end to end: `tests/server/test_serve.py`."""
from __future__ import annotations

import subprocess
import sys


def test_gpu_target_without_docker_or_gpu_says_so(tmp_path):
    """`make serve TARGET=gpu-...` needs Docker's engine and an NVIDIA GPU; without them it
    stops at once, before exporting anything, naming what is missing."""
    import pytest

    from serving.docker import GpuServingUnavailable, check_gpu_host
    try:
        check_gpu_host()
    except GpuServingUnavailable as error:
        expected = str(error)
    else:
        pytest.skip("this machine has Docker and a GPU: the GPU target would really start")
    result = subprocess.run([sys.executable, "-m", "serving.serve", "--target", "gpu-onnxruntime", "--repository",
                             str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"cannot serve TARGET=gpu-onnxruntime: {expected}" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing exported or written"


def test_gpu_torch_without_a_gpu_says_so(tmp_path):
    """`make serve TARGET=gpu-torch` runs on the tritonserver of `make setup` (Python backend
    only, GPU-capable), no Docker; without a GPU it stops at once, before exporting anything."""
    import shutil

    import pytest

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU: the target would really start")
    result = subprocess.run([sys.executable, "-m", "serving.serve", "--target", "gpu-torch", "--repository",
                             str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot serve TARGET=gpu-torch: no NVIDIA GPU visible" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing exported or written"


def test_make_engines_runs_as_the_host_user():
    """The engine build writes into the bind-mounted checkout as the host user (not the image's
    default user), with a writable HOME."""
    from serving.docker import engines_command

    command = engines_command("build/models/demo-base", "bf16", uid=1234, gid=5678)
    assert command[command.index("--user") + 1] == "1234:5678"
    assert command[command.index("-e") + 1] == "HOME=/tmp"
    assert command[command.index("python3"):] == ["python3", "-m", "export", "engines", "--model",
                                                  "build/models/demo-base", "--precision", "bf16"]
