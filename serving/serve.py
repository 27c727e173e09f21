"""`make serve`: export the model (or a demo model if the Hub is unreachable), write the
repository's configs, start Triton, print one demo answer, serve until Ctrl-C/SIGTERM.
While serving, `serving.supervisor` probes the server with a real inference and restarts it
when it stops answering (Triton does not restart a dead Python backend stub itself).

  python -m serving.serve --model mrm8488/t5-base-finetuned-squadv2 --demo-fallback base
  python -m serving.serve --model mrm8488/t5-base-finetuned-squadv2 --precision int8
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

from client.api import QAClient
from contract.names import SEED_MODEL
from export import DEFAULT_WORKDIR
from export.demo_model import build_demo_model
from export.precision import ALL_PRECISIONS, check_precision
from export.validate import ATOL, RTOL, ValidationError
from serving.pipeline import build
from serving.repository import TARGETS, cuda_pool_for
from serving.server import Ports, TritonServer, stop_on_signals
from serving.supervisor import (EXIT_GAVE_UP, SupervisorGaveUp, add_supervisor_arguments,
                                supervisor_from_arguments)

DEMO_QUESTION = ("Where do water droplets collide with ice crystals to form precipitation?",
                 "In meteorology, precipitation is any product of the condensation of atmospheric water "
                 "vapor that falls under gravity. The main forms of precipitation include drizzle, rain, "
                 "sleet, snow, graupel and hail. Precipitation forms as smaller droplets coalesce via "
                 "collision with other rain drops or ice crystals within a cloud.")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def banner(lines: list[str]) -> None:
    width = max(map(len, lines)) + 4
    print("\n" + "!" * width, *(f"! {line.ljust(width - 4)} !" for line in lines), "!" * width + "\n",
          sep="\n", file=sys.stderr, flush=True)


def build_with_fallback(model: str, demo_size: str, repository: Path, target: str, workdir: Path,
                        tolerance: tuple[float, float] = (ATOL, RTOL), precision: str | None = None) -> str:
    """Build the repository for `model` (`serving.pipeline.build`, in `precision`); if it cannot
    be loaded and `demo_size` is not 'none', for a demo model. A model that loads but fails
    validation raises ValidationError: it is never replaced. Returns the model served."""
    local = Path(model).is_dir()
    if local or hub_reachable():
        try:
            build(model, repository, target, workdir, tolerance, precision)
            return model
        except OSError as error:
            reason = f"cannot load {model}: {str(error).splitlines()[0]}"
    else:
        reason = f"the Hugging Face Hub is unreachable, so {model} cannot be downloaded"
    if demo_size == "none":
        raise SystemExit(f"{reason}; no demo fallback requested")
    demo = Path("build/models") / f"demo-{demo_size}"
    banner([reason, f"SERVING A DEMO MODEL: random weights, t5-{demo_size} architecture ({demo}).",
            "Its answers are meaningless; clients warn on every answer.",
            "Serve real weights with: make serve MODEL=<hub id or checkpoint folder>"])
    if not (demo / "config.json").is_file():
        build_demo_model(demo_size, demo)
    build(str(demo), repository, target, workdir, tolerance, precision)
    return str(demo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SEED_MODEL, help="Hub id or local checkpoint folder")
    parser.add_argument("--demo-fallback", choices=("base", "tiny", "none"), default="base",
                        help="demo model to serve when --model cannot be loaded")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--target", choices=sorted(TARGETS), default="cpu")
    parser.add_argument("--precision", choices=ALL_PRECISIONS, default=None,
                        help="what the target serves in (default: its first; export.precision): cpu fp32 or "
                             "int8 (dynamically quantized graphs, validated against fp32), gpu-torch bf16 or fp32")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--exit-timeout", type=int, default=30, help="seconds in-flight requests get on shutdown")
    parser.add_argument("--atol", type=float, default=ATOL, help="export validation's absolute logit tolerance")
    parser.add_argument("--rtol", type=float, default=RTOL,
                        help="export validation's logit tolerance per unit of the step's max |logit|")
    parser.add_argument("--no-supervise", action="store_true",
                        help="do not probe and restart the server; exit when it exits")
    add_supervisor_arguments(parser)
    args = parser.parse_args(argv)

    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    target = TARGETS[args.target]
    try:
        check_precision(args.target, args.precision)
    except ValueError as error:
        print(f"cannot serve: {error}", file=sys.stderr)
        return 2
    if target.needs_image:  # NVIDIA's image on a GPU: fail before the slow export if it cannot run
        from serving.docker import DockerTritonServer, GpuServingUnavailable, check_gpu_host, check_repository
        try:
            check_gpu_host()
        except GpuServingUnavailable as error:
            print(f"cannot serve TARGET={args.target}: {error}", file=sys.stderr)
            return 1
    elif target.on_gpu and shutil.which("nvidia-smi") is None:
        print(f"cannot serve TARGET={args.target}: no NVIDIA GPU visible (nvidia-smi not found); use TARGET=cpu here",
              file=sys.stderr)
        return 1
    try:
        served = build_with_fallback(args.model, args.demo_fallback, args.repository, args.target, args.workdir,
                                     (args.atol, args.rtol), args.precision)
    except ValidationError as error:
        print(f"export failed validation, not serving {args.model}: {error}", file=sys.stderr)
        return 1
    if not target.needs_image:  # the tritonserver of `make setup` (Python backend; GPU-capable)
        pool = cuda_pool_for(args.repository, args.target)
        server = TritonServer(args.repository, ports, exit_timeout_s=args.exit_timeout,
                              extra_args=(f"--cuda-memory-pool-byte-size=0:{pool}",) if pool else ())
    else:
        try:
            check_repository(args.repository, args.target)
        except GpuServingUnavailable as error:
            print(f"cannot serve TARGET={args.target}: {error}", file=sys.stderr)
            return 1
        server = DockerTritonServer(args.repository, ports, exit_timeout_s=args.exit_timeout,
                                    cuda_pool_bytes=cuda_pool_for(args.repository, args.target))
        args.no_supervise = True  # the container's restart policy (or Kubernetes) supervises it
    stop = stop_on_signals()
    server.start()
    try:
        server.wait_ready()
        with QAClient(f"localhost:{args.grpc_port}") as client:
            result = client.answer(*DEMO_QUESTION)
        print(f"\nReady. gRPC localhost:{args.grpc_port}, HTTP localhost:{args.http_port}, "
              f"metrics localhost:{args.metrics_port}. Model: {served}", flush=True)
        print(f"Q: {DEMO_QUESTION[0]}\nA: {result.text or '(no answer)'}", flush=True)
        if result.demo_model:
            print("   (demo model: random weights, meaningless answer)", flush=True)
        print('Ask: .venv/bin/python -m client ask --question "..." --context "..."  (Ctrl-C stops)', flush=True)
        if args.no_supervise:
            while not stop.is_set() and server.process.poll() is None:
                stop.wait(1.0)
        else:
            supervisor_from_arguments(server, args).run(stop)
    except SupervisorGaveUp as error:
        print(f"supervisor: {error}", file=sys.stderr, flush=True)
        return EXIT_GAVE_UP
    finally:
        code = server.stop()
        print(f"tritonserver stopped (exit code {code})", flush=True)
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
