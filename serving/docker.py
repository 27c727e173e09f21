"""Run the GPU targets' server in NVIDIA's Triton image (`make serve TARGET=gpu-...`).

Builds `deploy/docker/Dockerfile` (NGC tritonserver 24.10 plus this project's code) and runs it
with `docker run --gpus all`, the model repository mounted read-only at /models, the usual
ports, and the same server flags as the CPU launcher. Stops with a clear message when Docker's
engine or an NVIDIA GPU is missing. Not run on this project's CPU-only machines yet.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from export.tensorrt import PRECISIONS
from serving.server import RESTRICTED_APIS, Ports, resolve_admin_key, server_flags

IMAGE = "t5qa-triton:24.10"
REPO_ROOT = Path(__file__).resolve().parents[1]


class GpuServingUnavailable(RuntimeError):
    """Docker's engine or an NVIDIA GPU is missing."""


def check_gpu_host() -> None:
    if shutil.which("docker") is None:
        raise GpuServingUnavailable("docker is not installed: GPU targets run in nvcr.io/nvidia/tritonserver:24.10-py3")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise GpuServingUnavailable("no Docker engine is reachable (`docker info` fails): start dockerd, "
                                    "or serve on this machine with TARGET=cpu")
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        raise GpuServingUnavailable("no NVIDIA GPU visible (`nvidia-smi -L` fails): GPU targets need one; "
                                    "use TARGET=cpu here")


def check_repository(repository: Path, target: str) -> None:
    if target == "gpu-tensorrt":
        missing = [m for m in ("t5_encoder", "t5_decoder_init", "t5_decoder")
                   if not (repository / m / "1" / "model.plan").is_file()]
        if missing:
            raise GpuServingUnavailable(f"no TensorRT engine for {', '.join(missing)}: run `make engines` first")


@dataclass
class DockerTritonServer:
    """Same interface as `serving.server.TritonServer`, in a container."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    exit_timeout_s: int = 30
    name: str = "t5qa-triton"
    process: subprocess.Popen | None = None
    admin_key: str | None = None  # as TritonServer: None -> $T5QA_ADMIN_KEY, else random
    cuda_pool_bytes: int = 0  # Triton's CUDA memory pool on GPU 0 (serving.repository.cuda_pool_bytes); 0: its default

    def __post_init__(self) -> None:
        self.admin_key, _ = resolve_admin_key(self.admin_key)

    def build(self) -> None:
        subprocess.run(["docker", "build", "-f", str(REPO_ROOT / "deploy/docker/Dockerfile"), "-t", IMAGE,
                        str(REPO_ROOT)], check=True)

    def command(self) -> list[str]:
        return ["docker", "run", "--rm", "--name", self.name, "--gpus", "all", "--shm-size=2g",
                "-p", f"{self.ports.http}:8000", "-p", f"{self.ports.grpc}:8001", "-p", f"{self.ports.metrics}:8002",
                "-v", f"{self.repository.resolve()}:/models:ro", IMAGE,
                "tritonserver", *server_flags("/models", Ports(), self.exit_timeout_s, RESTRICTED_APIS, self.admin_key),
                *([f"--cuda-memory-pool-byte-size=0:{self.cuda_pool_bytes}"] if self.cuda_pool_bytes else [])]

    def start(self) -> "DockerTritonServer":
        self.build()
        self.process = subprocess.Popen(self.command())
        return self

    def wait_ready(self, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Triton container exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the Triton container was not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float | None = None) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        subprocess.run(["docker", "stop", "-t", str(self.exit_timeout_s + 5), self.name], capture_output=True)
        return self.process.wait(timeout_s or self.exit_timeout_s + 30)


def engines_command(model: str, precision: str, uid: int | None = None, gid: int | None = None) -> list[str]:
    """The `docker run` of `make engines`: as the host user (`uid:gid`, default this process's),
    so that the engines, exports and timing cache it writes into the bind-mounted checkout are
    the user's files, writable and removable without root, whatever user the image defaults to;
    HOME in /tmp, which any user may write."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    return ["docker", "run", "--rm", "--gpus", "all", "--user", f"{uid}:{gid}", "-e", "HOME=/tmp",
            "-v", f"{REPO_ROOT}:/workspace", "-w", "/workspace",
            IMAGE, "python3", "-m", "export", "engines", "--model", model, "--precision", precision]


def build_engines_in_image(model: str, precision: str) -> int:
    """`make engines`: build the TensorRT engines inside the image the server runs, so that
    the engines match its TensorRT version."""
    check_gpu_host()
    DockerTritonServer(Path("model_repository")).build()
    return subprocess.run(engines_command(model, precision)).returncode


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m serving.docker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 0 if Docker's engine and an NVIDIA GPU are available")
    engines = commands.add_parser("engines", help="build TensorRT engines inside the Triton image")
    engines.add_argument("--model", required=True, help="checkpoint exported by `make export`")
    engines.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0])
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check_gpu_host()
            return 0
        return build_engines_in_image(args.model, args.precision)
    except GpuServingUnavailable as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
