#!/usr/bin/env bash
# `make gpu-check` on a GPU machine without network, from the kit that `make gpu-kit` built:
#   tar -xJf t5qa-gpu-kit.tar.xz && t5qa-gpu-kit/run            (arguments go to python -m bench.gpu_check)
# Needs: the Python the kit was built for (PYTHON=..., default python3), built with a shared libpython,
# with torch (a CUDA build), transformers and tokenizers. Installs nothing from the network: a venv over
# that Python's packages, in front of them the kit's numpy<2 (Triton's Python backend stub needs it) and
# gRPC client, the project, the trimmed tritonserver and the reference data, all from this folder.
set -euo pipefail
kit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
fail() { echo "gpu-kit: $*" >&2; exit 2; }
command -v "$python" >/dev/null || fail "no $python on PATH (set PYTHON=/path/to/python$(cat "$kit/python-version"))"
want="$(cat "$kit/python-version")"
have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$have" = "$want" ] || fail "this kit is built for Python $want, $python is $have: set PYTHON=, or build the kit with make gpu-kit KIT_PYTHON=$have"
"$python" -c 'import torch, transformers, tokenizers' 2>/dev/null \
  || fail "$python lacks torch, transformers or tokenizers (the kit brings everything else)"
"$python" -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' \
  || fail "$python has no shared libpython$want, which Triton's Python backend stub loads"
venv="$kit/venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --without-pip "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  # The kit first (its numpy<2 wins), then every site folder of $python (a system Python, a venv or conda).
  { printf '%s\n%s\n' "$kit/site-packages" "$kit/project"
    "$python" -c 'import sys; print("\n".join("import site; site.addsitedir(%r)" % p for p in sys.path
                                               if p.endswith(("site-packages", "dist-packages"))))'
  } > "$site/t5qa-gpu-kit.pth"
fi
export T5QA_TRITON_HOME="$kit/triton" T5QA_SHARED_DATA="$kit/data"
cd "$kit/project"
exec "$venv/bin/python" -m bench.gpu_check "$@"
