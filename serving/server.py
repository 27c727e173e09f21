"""Start and stop the `tritonserver` that `nvidia-pytriton` ships, with the environment its
Python backend needs. Used by `make serve` (through `serving.serve`) and by the tests.

The Python backend's stub must embed this virtual environment's Python (numpy<2, onnxruntime,
and this project, installed editable by `make setup`: the embedded interpreter ignores
`PYTHONPATH`): the 3.11 stub is copied into the backend folder, the venv's `bin` goes first on
`PATH`, and `LD_LIBRARY_PATH` holds the wheel's libraries and Python's LIBDIR. Model control
mode is `none`: the repository is loaded once, at start.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytriton

TRITON_HOME = Path(pytriton.__file__).parent / "tritonserver"
LIBS = Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs"


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def prepare_python_backend() -> Path:
    """Copy the stub built for this Python into the python backend folder (once)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = TRITON_HOME / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    target = TRITON_HOME / "backends" / "python" / "triton_python_backend_stub"
    if not target.is_file() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    return TRITON_HOME / "backends"


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(LIBS), sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p)
    return env


@dataclass
class TritonServer:
    """One tritonserver process over `repository`."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    address: str = "0.0.0.0"
    exit_timeout_s: int = 30
    log_file: Path | None = None
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            str(TRITON_HOME / "bin" / "tritonserver"),
            f"--model-repository={self.repository.resolve()}",
            "--model-control-mode=none",
            f"--backend-directory={prepare_python_backend()}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--strict-readiness=true",
            # Decoder caches cross the stub boundary in shared memory: start big, grow big.
            "--backend-config=python,shm-default-byte-size=67108864",
            "--backend-config=python,shm-growth-byte-size=67108864",
        ]

    def start(self) -> "TritonServer":
        output = open(self.log_file, "ab") if self.log_file else None
        self.process = subprocess.Popen(self.command(), env=server_environment(), stdout=output,
                                        stderr=subprocess.STDOUT if output else None)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} before it was ready"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self.ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, wait for the in-flight requests (exit timeout), then kill if still alive."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s if timeout_s is not None else self.exit_timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
