#!/usr/bin/env bash
# Installs NVIDIA's perf_analyzer into .tools/perf_analyzer/ for `make bench` (idempotent).
# The PyPI perf-analyzer 2.60 needs glibc 2.38 (Debian 12 has 2.36); the binary inside the
# tritonclient 2.51.0 wheel runs, given libb64.so.0d and libcudart.so.12, which are taken from
# the nvidia-pytriton wheel already in .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/perf_analyzer"
python="$root/.venv/bin/python"
if [[ -x "$dest/perf_analyzer" ]] && LD_LIBRARY_PATH="$dest" "$dest/perf_analyzer" --version >/dev/null 2>&1; then
  echo "perf_analyzer: up to date ($dest)"; exit 0
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work" tritonclient==2.51.0
mkdir -p "$dest"
unzip -q -o -j "$work"/tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' -d "$dest"
chmod +x "$dest/perf_analyzer"
libs="$("$python" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs")')"
ln -sf "$(ls "$libs"/libb64-*.so.0d)" "$dest/libb64.so.0d"
ln -sf "$(ls "$libs"/libcudart-*.so.12*)" "$dest/libcudart.so.12"
LD_LIBRARY_PATH="$dest" "$dest/perf_analyzer" --version >/dev/null 2>&1 || { echo "perf_analyzer does not run" >&2; exit 1; }
echo "perf_analyzer: installed ($dest)"
