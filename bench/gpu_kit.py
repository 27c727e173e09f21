"""`make gpu-kit`: one file that runs `make gpu-check` on a GPU machine with no network and nothing
of this project installed, only Python with PyTorch (CUDA), transformers and tokenizers.

  python -m bench.gpu_kit                          # build/t5qa-gpu-kit.tar.xz, for Python 3.12
  python -m bench.gpu_kit --python-version 3.11    # for another Python (the tests use this machine's)
  # on the GPU machine:
  tar -xJf t5qa-gpu-kit.tar.xz && t5qa-gpu-kit/run  # arguments go to python -m bench.gpu_check

What the kit holds (`t5qa-gpu-kit/`, xz-compressed, at most `SIZE_LIMIT` bytes, checked here):
  run             bench/gpu_kit_run.sh: checks the Python, makes a venv over its packages, runs gpu-check
  site-packages/  the wheels of requirements/gpu-kit.txt for that Python, unpacked (numpy<2 for
                  Triton's Python backend stub, the gRPC client), their test folders left out
  triton/         the tritonserver of nvidia-pytriton (.venv's) trimmed to what the Python backend
                  needs: the server, the backend, the stub for that Python and the libraries they
                  link (found with ldd), in the wheel's layout (they find each other by relative paths)
  project/        this project's code (git's files under PROJECT)
  data/           the t5-base tokenizer and the SQuAD 2.0 dev set (shared_data's layout)
The 55 MB nvidia-pytriton wheel alone would not fit with numpy; trimmed and xz-compressed it is ~26 MB.
Building needs the package registry (`pip download`) and `xz`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT_NAME = "t5qa-gpu-kit"
SIZE_LIMIT = 60 * 1000 * 1000  # bytes: small enough to copy onto an air-gapped node (issue 12)
REQUIREMENTS = REPO_ROOT / "requirements" / "gpu-kit.txt"
RUN_SCRIPT = REPO_ROOT / "bench" / "gpu_kit_run.sh"
PROJECT = ("bench", "client", "contract", "export", "model_repository", "runtime", "serving", "shared_data",
           "pyproject.toml")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_wheels(python_version: str, destination: Path) -> list[Path]:
    """The wheels of requirements/gpu-kit.txt for CPython `python_version` on x86-64 Linux."""
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
               "--abi", "none", *(f"--platform={p}" for p in PLATFORMS), "-r", str(REQUIREMENTS),
               "-d", str(destination)]
    subprocess.run(command, check=True)
    return sorted(destination.glob("*.whl"))


def unpack_wheels(wheels: list[Path], site: Path) -> None:
    """What pip would install from `wheels` (no scripts), without their test suites."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for tests in [p for p in site.rglob("tests") if p.is_dir()]:
        shutil.rmtree(tests, ignore_errors=True)


def triton_files(python_version: str) -> list[Path]:
    """The files of nvidia-pytriton's tritonserver that the Python backend needs, relative to the
    folder holding `pytriton/` and `nvidia_pytriton.libs/` (serving.server's TRITON_HOME, LIBS)."""
    from serving.server import LIBS, STUB_NAME, TRITON_HOME

    site = LIBS.parent
    stub = TRITON_HOME / "python_backend_stubs" / python_version / STUB_NAME
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton ships no Python backend stub for Python {python_version}")
    binaries = [TRITON_HOME / "bin" / "tritonserver", TRITON_HOME / "backends" / "python" / "libtriton_python.so",
                stub]
    files = [*binaries, TRITON_HOME / "backends" / "python" / "triton_python_backend_utils.py",
             *(p for p in (TRITON_HOME / "caches").rglob("*") if p.is_file())]
    env = {**os.environ, "LD_LIBRARY_PATH": str(LIBS)}
    for binary in binaries:
        listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=True).stdout
        linked = [Path(line.split("=>")[1].split()[0]) for line in listing.splitlines() if "=>" in line]
        files += [LIBS / p.name for p in linked if p.is_absolute() and p.resolve().parent == LIBS.resolve()]
    return sorted({f.relative_to(site) for f in files})


def project_files() -> list[str]:
    """This project's files the gpu-check needs: git's (tracked or not ignored) under PROJECT."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PROJECT],
                             cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in listing.splitlines() if (REPO_ROOT / f).is_file()]


def stage(kit: Path, python_version: str, wheels: list[Path]) -> None:
    """Lay the kit out in `kit` (see the module's docstring)."""
    from serving.server import LIBS
    from shared_data import DEV_SET, SHARED_DATA, T5_TOKENIZER_DIR

    unpack_wheels(wheels, kit / "site-packages")
    for relative in triton_files(python_version):
        copy(LIBS.parent / relative, kit / "triton" / relative)
    for relative in project_files():
        copy(REPO_ROOT / relative, kit / "project" / relative)
    for path in [DEV_SET, *(p for p in T5_TOKENIZER_DIR.iterdir() if p.is_file())]:
        copy(path, kit / "data" / path.relative_to(SHARED_DATA))
    shutil.copy2(RUN_SCRIPT, kit / "run")
    (kit / "python-version").write_text(python_version + "\n")


def copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def build(output: Path, python_version: str) -> int:
    """Write the kit to `output` (.tar.xz); return its size in bytes. Raises ValueError when it
    exceeds SIZE_LIMIT."""
    if shutil.which("xz") is None:
        raise FileNotFoundError("xz not found: the kit is compressed with it (apt-get install xz-utils)")
    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as scratch:
        wheels = download_wheels(python_version, Path(scratch) / "wheels")
        stage(Path(scratch) / KIT_NAME, python_version, wheels)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        with open(partial, "wb") as compressed:
            tar = subprocess.Popen(["tar", "-C", scratch, "-cf", "-", KIT_NAME], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9", "-T0"], stdin=tar.stdout, stdout=compressed, check=True)
            if tar.wait() != 0:
                raise RuntimeError("tar failed while packing the kit")
    size = partial.stat().st_size
    if size > SIZE_LIMIT:
        partial.unlink()
        raise ValueError(f"the kit is {size / 1e6:.1f} MB, over its {SIZE_LIMIT / 1e6:.0f} MB limit")
    partial.replace(output)
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python, major.minor (default 3.12)")
    parser.add_argument("--output", type=Path, default=Path("build") / f"{KIT_NAME}.tar.xz", help="the kit file")
    args = parser.parse_args(argv)
    try:
        size = build(args.output, args.python_version)
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError, RuntimeError) as error:
        print(f"gpu-kit: {error}", file=sys.stderr)
        return 1
    print(f"{args.output}: {size / 1e6:.1f} MB (limit {SIZE_LIMIT / 1e6:.0f} MB); on the GPU machine: "
          f"tar -xJf {args.output.name} && {KIT_NAME}/run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
