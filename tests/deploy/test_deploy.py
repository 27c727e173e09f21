"""tests/deploy/test_deploy.py — offline checks of the Kubernetes deployment in deploy/ (issue 7).

helm lint/template on the chart, kubernetes-validate --strict against Kubernetes 1.30 for the
built-in kinds, structural checks for the CRD kinds (no schema is bundled for them), promtool
check/test of the recording rule, and tests that values really change the rendered manifests.

Tools come from deploy/tools/install.sh (`make deploy-tools`) under .tools/; this module uses only
the standard library (and `tests/helpers.py`, which imports nothing else at module level) and runs
the tools as subprocesses (YAML is parsed by deploy/tools/yaml2json.py
under .tools/venv/bin/python). Nothing here contacts a cluster or the network. One test also runs the
chart's tritonserver arguments with the project's own tritonserver (nvidia-pytriton's) on 127.0.0.1;
it imports grpc and serving.server inside the test.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import PurePosixPath, Path

import pytest

from tests.helpers import REPO_ROOT as ROOT, free_ports

TOOLS = Path(os.environ.get("DEPLOY_TOOLS_DIR", ROOT / ".tools"))
HELM = TOOLS / "bin" / "helm"
PROMTOOL = TOOLS / "bin" / "promtool"
VENV_PYTHON = TOOLS / "venv" / "bin" / "python"
KUBERNETES_VALIDATE = TOOLS / "venv" / "bin" / "kubernetes-validate"

CHART = ROOT / "deploy" / "helm" / "t5-qa"
GPU_POOL_VALUES = CHART / "values-gpu-pool.yaml"
RULES = CHART / "files" / "rules.yaml"
DASHBOARD = CHART / "files" / "t5-qa-dashboard.json"
RULES_TEST = ROOT / "deploy" / "prometheus" / "t5-qa-rules.test.yaml"
ADAPTER_VALUES = ROOT / "deploy" / "prometheus" / "prometheus-adapter-values.yaml"
ISVC = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
YAML2JSON = ROOT / "deploy" / "tools" / "yaml2json.py"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"

K8S_VERSION = "1.30.0"
RELEASE = "t5-qa"
NAMESPACE = "ml"
# Kinds without a schema in kubernetes-validate: checked structurally below, not schema-validated.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "InferenceService"}
HTTP_OPT_IN = ["--set", "server.http.enabled=true", "--set", "networkPolicy.enabled=true"]
VALUE_SETS = {"default": [], "gpu-pool": ["-f", str(GPU_POOL_VALUES)], "http-opt-in": HTTP_OPT_IN}
TOOL_ENV = dict(os.environ)


@pytest.fixture(scope="module", autouse=True)
def tools(tmp_path_factory):
    missing = [str(p) for p in (HELM, PROMTOOL, VENV_PYTHON, KUBERNETES_VALIDATE) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            "deployment validation tools missing: " + ", ".join(missing)
            + " — run deploy/tools/install.sh (or `make deploy-tools`) first",
            pytrace=False,
        )
    # Keep helm away from the user's config and any cluster (subprocesses only; os.environ is untouched).
    home = tmp_path_factory.mktemp("helm-home")
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        TOOL_ENV[var] = str(home / var.lower())
    TOOL_ENV["KUBECONFIG"] = os.devnull


# --- helpers ---------------------------------------------------------------------------------

def run(cmd, input_text=None, check=True):
    proc = subprocess.run([str(c) for c in cmd], input=input_text, capture_output=True, text=True,
                          timeout=300, env=TOOL_ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def yaml_docs(text=None, path=None):
    args = [VENV_PYTHON, YAML2JSON] + ([path] if path else [])
    return json.loads(run(args, input_text=text).stdout)


def template_cmd(*args):
    return [HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", K8S_VERSION, *args]


def render_text(*args):
    return run(template_cmd(*args)).stdout


def render(*args):
    return yaml_docs(render_text(*args))


def render_fails(*args):
    proc = run(template_cmd(*args), check=False)
    assert proc.returncode != 0, "helm template was expected to fail but rendered:\n" + proc.stdout[:2000]
    return proc.stderr


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected exactly one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def container(docs):
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_names(c):
    return [e["name"] for e in c.get("env", [])]


def env_by_name(c):
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(scope="module")
def default_docs():
    return render()


@pytest.fixture(scope="module")
def gpu_docs():
    return render("-f", GPU_POOL_VALUES)


@pytest.fixture(scope="module")
def chart_values():
    return yaml_docs(path=CHART / "values.yaml")[0]


@pytest.fixture(scope="module")
def rule_file():
    return yaml_docs(path=RULES)[0]


def recorded_series(rule_file):
    return {r["record"] for g in rule_file["groups"] for r in g["rules"] if "record" in r}


# --- the image: deploy/docker/Dockerfile ------------------------------------------------------

def dockerfile_instructions():
    """The Dockerfile's instructions as (INSTRUCTION, arguments, WORKDIR in effect before it):
    continuation lines joined, comments and blank lines dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continuation line"
    instructions, workdir = [], PurePosixPath("/")
    for line in logical:
        name, _, args = line.partition(" ")
        instructions.append((name.upper(), args.strip(), workdir))
        if name.upper() == "WORKDIR":
            workdir = workdir / args.strip()  # an absolute WORKDIR replaces, a relative one appends
    return instructions


def dockerfile_copies():
    """(source, destination) of every COPY from the build context, destinations made absolute.
    A directory source lands at its destination (`COPY client ./client`: /opt/x/client)."""
    copies = []
    for name, args, workdir in dockerfile_instructions():
        if name not in ("COPY", "ADD"):
            continue
        parts = json.loads(args) if args.startswith("[") else args.split()
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue  # from another stage, not from the repository
        *sources, dest = [p for p in parts if not p.startswith("--")]
        dest_path = workdir / dest
        for source in sources:
            copies.append((source.strip("/").removeprefix("./") or ".", dest_path))
    return copies


def editable_install_dir():
    """The WORKDIR of the `pip install ... -e .` that installs the project into the image."""
    hits = [workdir for name, args, workdir in dockerfile_instructions()
            if name == "RUN" and re.search(r"pip install\b.*\s-e\s+\.(\s|$)", args)]
    assert len(hits) == 1, f"expected one editable install (pip install -e .) in {DOCKERFILE}, found {len(hits)}"
    return hits[0]


def test_dockerfile_copies_every_package_pyproject_lists():
    """The image's editable install needs every package of [tool.setuptools] packages: each one
    must be copied from the repository into the install directory, under its own name."""
    packages = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]
    assert packages and all((ROOT / p).is_dir() for p in packages), packages
    install_dir = editable_install_dir()
    copies = dockerfile_copies()
    whole_context = any(src == "." and dest == install_dir for src, dest in copies)

    def copied(source):
        return whole_context or (source, install_dir / source) in copies

    assert copied("pyproject.toml") or ("pyproject.toml", install_dir) in copies
    missing = [p for p in packages if not copied(p)]
    assert not missing, (f"{DOCKERFILE.relative_to(ROOT)} does not COPY {missing} into {install_dir} "
                         f"(pyproject.toml lists them as packages); copies: {copies}")


# Where the deployment files name the project's directory in the image: /opt/<name with "t5">.
PROJECT_DIR_MENTION = re.compile(r"/opt/[^/\s\"'`,:;)]*t5[^/\s\"'`,:;)]*")


def strings_in(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def test_deploy_files_name_the_image_install_dir():
    """values*.yaml, the chart, the KServe manifest and deploy/README.md name the project's
    directory in the image exactly as the Dockerfile's WORKDIR of the install does."""
    install_dir = str(editable_install_dir())
    files = [*sorted(CHART.glob("values*.yaml")), *sorted((CHART / "templates").iterdir()), ISVC,
             ROOT / "deploy" / "README.md"]
    wrong = {f"{f.relative_to(ROOT)}: {m}" for f in files for m in PROJECT_DIR_MENTION.findall(f.read_text())
             if m != install_dir}
    assert not wrong, f"the image installs the project at {install_dir} (Dockerfile WORKDIR), but: {sorted(wrong)}"


@pytest.mark.parametrize("values_file", sorted(p.name for p in CHART.glob("values*.yaml")))
def test_rendered_chart_uses_the_image_install_dir(values_file):
    install_dir = str(editable_install_dir())
    docs = render("-f", CHART / values_file)
    mentions = {m for text in strings_in(docs) for m in PROJECT_DIR_MENTION.findall(text)}
    assert mentions <= {install_dir}, mentions
    pythonpath = env_by_name(container(docs)).get("PYTHONPATH", {}).get("value")
    if pythonpath is not None and not pythonpath.startswith(("/models", "/mnt")):
        # not the PVC layout: the project comes from the image
        assert pythonpath.split(":") == [install_dir], pythonpath


# --- helm lint / template + schema validation --------------------------------------------------

@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(values):
    proc = run([HELM, "lint", "--strict", "--kube-version", K8S_VERSION, CHART, *values], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 chart(s) failed" in out
    # helm lint downgrades a template `fail` to an INFO line and still exits 0: catch it here.
    assert "Fail:" not in out and "[ERROR]" not in out and "[WARNING]" not in out, out


def kubernetes_validate(path):
    return run([KUBERNETES_VALIDATE, "--strict", "-k", K8S_VERSION, path], check=False)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_manifests_pass_kubernetes_validate_strict(values, tmp_path):
    text = render_text(*values)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(text)
    proc = kubernetes_validate(manifest)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ERROR" not in out and "FATAL" not in out, out
    docs = yaml_docs(text)
    assert docs
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in CRD_KINDS:
            # No bundled schema: kubernetes-validate only warns. Structure is checked in other tests.
            assert f"Couldn't find schema for kind {kind}" in out, out
        else:
            assert f"passed for resource {kind.lower()}/{name} against version 1.30" in out, (kind, name, out)
    warned = set(re.findall(r"Couldn't find schema for kind (\S+)", out))
    assert warned <= CRD_KINDS, f"built-in kinds without a schema check: {warned - CRD_KINDS}"


def test_the_two_renders_cover_every_template(default_docs, gpu_docs):
    assert kinds(default_docs) == [
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert kinds(gpu_docs) == [
        "ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
        "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]


def test_kubernetes_validate_strict_rejects_unknown_fields(default_docs, tmp_path):
    """Negative control: strict validation is live, so the passing test above means something."""
    docs = copy.deepcopy(default_docs)
    container(docs)["bogusField"] = 1
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("\n---\n".join(json.dumps(d) for d in docs))
    proc = kubernetes_validate(manifest)
    assert proc.returncode != 0
    assert "'bogusField' was unexpected" in proc.stdout


# --- CRD kinds: structure and cross-references (not schema validation) -------------------------

def check_crd_metadata(doc, api_version, kind):
    assert doc["apiVersion"] == api_version
    assert doc["kind"] == kind
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert isinstance(doc["spec"], dict) and doc["spec"]


def test_prometheus_rule_is_the_promtool_tested_rule_file(gpu_docs, rule_file):
    rule = find(gpu_docs, "PrometheusRule")
    check_crd_metadata(rule, "monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # Same data as files/rules.yaml, so what promtool tested is what gets deployed.
    assert rule["spec"] == {"groups": rule_file["groups"]}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert r["expr"].strip() and ("record" in r) != ("alert" in r)


def test_service_monitor_targets_the_metrics_port(gpu_docs):
    sm = find(gpu_docs, "ServiceMonitor")
    check_crd_metadata(sm, "monitoring.coreos.com/v1", "ServiceMonitor")
    service = find(gpu_docs, "Service")
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    port_names = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    # The recording rule's [30s] window needs at least two samples.
    assert int(endpoint["interval"].rstrip("s")) <= 15


def test_kserve_inferenceservice(tmp_path, chart_values):
    (isvc,) = yaml_docs(path=ISVC)
    check_crd_metadata(isvc, "serving.kserve.io/v1beta1", "InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "triton"
    assert model["runtimeVersion"] == chart_values["image"]["tag"] == "24.10-py3"
    assert re.match(r"(s3|gs)://[^/]+/", model["storageUri"])
    assert "--model-control-mode=none" in model["args"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # gRPC only: the runtime's HTTP endpoint is off (its own --allow-http=true comes first, the last
    # flag wins), and the one port KServe routes to is the runtime's gRPC port, spoken as h2c.
    assert "--allow-http=false" in model["args"]
    assert not [a for a in model["args"] if a.startswith(("--allow-http=true", "--http-"))]
    assert model["protocolVersion"] == "grpc-v2"
    assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    # The embedded core/v1 parts (PodSpec fields, the model Container) are validated strictly by
    # re-assembling them into a Pod; the KServe-only fields are removed first.
    kserve_predictor_fields = {"model", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget",
                               "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
                               "batcher", "labels", "annotations", "deploymentStrategy"}
    kserve_model_fields = {"modelFormat", "runtime", "runtimeVersion", "storageUri", "protocolVersion", "storage"}
    pod_spec = {k: v for k, v in predictor.items() if k not in kserve_predictor_fields}
    c = {k: v for k, v in model.items() if k not in kserve_model_fields}
    c.update(name="kserve-container", image="nvcr.io/nvidia/tritonserver:" + model["runtimeVersion"])
    pod_spec["containers"] = [c]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t5-qa-predictor"}, "spec": pod_spec}
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod))
    proc = kubernetes_validate(manifest)
    assert proc.returncode == 0 and "passed for resource pod/t5-qa-predictor" in proc.stdout, proc.stdout


# --- promtool ----------------------------------------------------------------------------------

def test_promtool_check_rules():
    proc = run([PROMTOOL, "check", "rules", RULES], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rules found" in proc.stdout


def test_promtool_unit_test_of_recording_rule():
    proc = run([PROMTOOL, "test", "rules", RULES_TEST], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_test_catches_a_wrong_label_set(tmp_path):
    """Mutation check: grouping by pod only (NVIDIA's original) merges same-named pods of two namespaces."""
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "helm" / "t5-qa" / "files").mkdir(parents=True)
    shutil.copy(RULES_TEST, tmp_path / "prometheus" / RULES_TEST.name)
    mutated = RULES.read_text().replace("avg by (namespace, pod)", "avg by (pod)")
    assert mutated != RULES.read_text()
    (tmp_path / "helm" / "t5-qa" / "files" / "rules.yaml").write_text(mutated)
    proc = run([PROMTOOL, "test", "rules", tmp_path / "prometheus" / RULES_TEST.name], check=False)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr


# --- values drive the output -------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 4])
def test_gpu_count_sets_the_gpu_limit(count):
    limits = container(render("--set", f"gpu.count={count}"))["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == count


def test_gpu_count_zero_requests_no_gpu():
    limits = container(render("--set", "gpu.count=0"))["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_replicas_without_autoscaling():
    docs = render("--set", "autoscaling.enabled=false", "--set", "replicaCount=3")
    assert find(docs, "Deployment")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(docs)


def test_autoscaling_owns_replicas():
    docs = render("--set", "autoscaling.minReplicas=2", "--set", "autoscaling.maxReplicas=7",
                  "--set", "replicaCount=5")
    assert "replicas" not in find(docs, "Deployment")["spec"]
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}


def test_hpa_default_metric_is_the_recorded_series(default_docs, rule_file):
    (metric,) = find(default_docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "avg_time_queue_us"
    assert metric["pods"]["metric"]["name"] in recorded_series(rule_file)
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "20000"}


def test_hpa_metric_target_and_behavior_follow_values():
    hpa = find(render("--set", "autoscaling.metric.name=triton_queue_p95_us",
                      "--set", "autoscaling.metric.targetAverageValue=150m",
                      "--set", "autoscaling.behavior.scaleDown.stabilizationWindowSeconds=900"),
               "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "triton_queue_p95_us"
    assert metric["pods"]["target"]["averageValue"] == "150m"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]


def test_restricted_api_on_by_default(default_docs):
    c = container(default_docs)
    group = "model-repository,shared-memory,trace,logging:triton-admin-key=$(TRITON_RESTRICTED_API_KEY)"
    assert f"--grpc-restricted-protocol={group}" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--http-")], "HTTP is off by default"
    assert f"--http-restricted-api={group}" in container(render(*HTTP_OPT_IN))["args"]
    key_env = env_by_name(c)["TRITON_RESTRICTED_API_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "t5-qa-admin-key", "key": "key"}


def test_restricted_api_off_removes_args_and_key():
    c = container(render("--set", "server.restrictedApi.enabled=false"))
    assert not [a for a in c["args"] if a.startswith(("--grpc-restricted-protocol", "--http-restricted-api"))]
    assert "TRITON_RESTRICTED_API_KEY" not in env_names(c)


def test_restricted_api_header_and_secret_from_values():
    c = container(render("--set", "server.restrictedApi.headerName=x-admin",
                         "--set", "server.restrictedApi.existingSecret=other", "--set", "server.restrictedApi.secretKey=k"))
    assert "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:x-admin=$(TRITON_RESTRICTED_API_KEY)" in c["args"]
    assert env_by_name(c)["TRITON_RESTRICTED_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "other", "key": "k"}


def test_object_storage_repository_s3_with_credentials():
    docs = render("--set", "modelRepository.objectStorage.path=s3://bucket/repo",
                  "--set", "modelRepository.objectStorage.credentials.existingSecret=s3-creds")
    c = container(docs)
    assert "--model-repository=s3://bucket/repo" in c["args"]
    env = env_by_name(c)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": var}
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {v["name"] for v in volumes} == {"tmp", "dshm"}


def test_object_storage_without_secret_injects_no_credentials(default_docs):
    env = env_names(container(default_docs))
    assert not [e for e in env if e.startswith("AWS_") or e == "GOOGLE_APPLICATION_CREDENTIALS"]


def test_object_storage_repository_gcs(gpu_docs):
    c = container(gpu_docs)
    assert "--model-repository=gs://my-model-bucket/t5-qa/model_repository" in c["args"]
    env = env_by_name(c)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/run/secrets/gcp/credentials.json"
    assert not [e for e in env if e.startswith("AWS_")]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["gcp-credentials"] == {"name": "gcp-credentials", "mountPath": "/var/run/secrets/gcp", "readOnly": True}
    volumes = {v["name"]: v for v in find(gpu_docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["gcp-credentials"]["secret"]["secretName"] == "t5-qa-gcs-reader"


def test_pvc_repository_mounted_read_only():
    docs = render("--set", "modelRepository.source=pvc", "--set", "modelRepository.pvc.claimName=models",
                  "--set", "modelRepository.objectStorage.credentials.existingSecret=ignored")
    c = container(docs)
    assert "--model-repository=/models" in c["args"]
    assert not [a for a in c["args"] if "s3://" in a]
    assert not [e for e in env_names(c) if e.startswith("AWS_")]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["model-repository"] == {"name": "model-repository", "mountPath": "/models", "readOnly": True}
    volumes = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_pvc_repository_dir_beside_python_package():
    c = container(render("--set", "modelRepository.source=pvc", "--set", "modelRepository.pvc.repositoryDir=model_repository",
                         "--set", "server.extraEnv[0].name=PYTHONPATH", "--set", "server.extraEnv[0].value=/models/python"))
    assert "--model-repository=/models/model_repository" in c["args"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/dev/shm", "/models"}
    assert env_by_name(c)["PYTHONPATH"]["value"] == "/models/python"


def test_bad_repository_settings_fail():
    assert "must start with s3:// or gs://" in render_fails("--set", "modelRepository.objectStorage.path=http://x/repo")
    assert "modelRepository.source must be objectStorage or pvc" in render_fails("--set", "modelRepository.source=nfs")


# --- Deployment, Service and guard rails -------------------------------------------------------

def test_deployment_args(default_docs):
    args = container(default_docs)["args"]
    assert args[0] == "tritonserver"
    for flag in ("--model-control-mode=none", "--exit-timeout-secs=30", "--allow-http=false", "--grpc-port=8001",
                 "--metrics-port=8002", "--allow-metrics=true", "--strict-readiness=true",
                 "--model-repository=s3://my-model-bucket/t5-qa/model_repository"):
        assert flag in args, flag


def test_cuda_memory_pool_from_values(default_docs):
    """The pool flag carries the value (default: sized for t5-base on gpu-tensorrt) and goes
    away at 0."""
    assert "--cuda-memory-pool-byte-size=0:5998903296" in container(default_docs)["args"]
    args = container(render("--set", "server.cudaMemoryPoolByteSize=0"))["args"]
    assert not [a for a in args if a.startswith("--cuda-memory-pool-byte-size")]


def test_extra_args_and_env_and_exit_timeout_from_values():
    c = container(render("--set", "server.extraArgs[0]=--log-verbose=1", "--set", "server.exitTimeoutSeconds=10",
                         "--set", "server.extraEnv[0].name=PYTHONPATH", "--set", "server.extraEnv[0].value=/models/deps"))
    assert c["args"][-1] == "--log-verbose=1"
    assert "--exit-timeout-secs=10" in c["args"]
    assert env_by_name(c)["PYTHONPATH"] == {"name": "PYTHONPATH", "value": "/models/deps"}


def test_pod_hardening_probes_and_shutdown(default_docs):
    pod = find(default_docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "8Gi"}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/dev/shm"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": 8001}, probe  # see test_probes_* below
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert pod["terminationGracePeriodSeconds"] > 15 + 30
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert c["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_gpu_pool_scheduling(gpu_docs):
    pod = find(gpu_docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/t5-qa/tritonserver:24.10-py3-t5qa.1"
    assert env_by_name(pod["containers"][0])["PYTHONPATH"]["value"] == str(editable_install_dir())
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nodeAffinity" in pod["affinity"] and "podAntiAffinity" in pod["affinity"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_service_ports(default_docs):
    ports = {p["port"]: p for p in find(default_docs, "Service")["spec"]["ports"]}
    assert ports[8001]["appProtocol"] == "grpc" and ports[8001]["name"] == "grpc"
    assert ports[8002]["name"] == "metrics"
    container_ports = {p["name"] for p in container(default_docs)["ports"]}
    assert {p["targetPort"] for p in ports.values()} == container_ports


def port_numbers_and_names(ports):
    return {p.get("port", p.get("containerPort")) for p in ports} | ({p.get("name") for p in ports} - {None})


def test_http_is_not_exposed_by_default(default_docs):
    """Triton 2.51's HTTP endpoint can be crashed without authentication (README, Known gaps): by
    default the server does not listen on it and nothing in the chart exposes it."""
    c = container(default_docs)
    assert "--allow-http=false" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--http-")], c["args"]
    assert port_numbers_and_names(c["ports"]) == {"grpc", "metrics", 8001, 8002}
    service_ports = find(default_docs, "Service")["spec"]["ports"]
    assert port_numbers_and_names(service_ports) == {"grpc", "metrics", 8001, 8002}
    assert {p["targetPort"] for p in service_ports} == {"grpc", "metrics"}
    ingress = find(render("--set", "networkPolicy.enabled=true"), "NetworkPolicy")["spec"]["ingress"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in ingress] == [["grpc"], ["metrics"]]


def test_http_opt_in_exposes_it():
    docs = render(*HTTP_OPT_IN)
    c = container(docs)
    assert "--http-port=8000" in c["args"] and "--allow-http=false" not in c["args"]
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in c["ports"]
    service_ports = {p["name"]: p for p in find(docs, "Service")["spec"]["ports"]}
    assert service_ports["http"] == {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP",
                                     "appProtocol": "http"}
    assert set(service_ports) == {"http", "grpc", "metrics"}
    ingress = find(docs, "NetworkPolicy")["spec"]["ingress"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in ingress] == [["grpc", "http"], ["metrics"]]


@pytest.mark.parametrize("values", [[], HTTP_OPT_IN, ["--set", "server.ports.grpc=9001"]],
                         ids=["default", "http-opt-in", "other-grpc-port"])
def test_probes_use_the_grpc_health_service_on_the_grpc_port(values):
    """The kubelet's gRPC probe calls grpc.health.v1.Health/Check on the port: it must be the port
    tritonserver serves gRPC on, and declared by the container; no probe may need HTTP."""
    c = container(render(*values))
    grpc_port = int(next(a for a in c["args"] if a.startswith("--grpc-port=")).split("=")[1])
    assert {"name": "grpc", "containerPort": grpc_port, "protocol": "TCP"} in c["ports"]
    assert "--allow-grpc=false" not in c["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(c[probe]) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"grpc"}, (probe, c[probe])
        assert c[probe]["grpc"] == {"port": grpc_port}, probe  # no service name: Triton's server-wide health


def test_probes_need_the_health_api_unrestricted():
    err = render_fails("--set", "server.restrictedApi.apis={model-repository,health}")
    assert "must not include health" in err
    assert find(render("--set", "server.restrictedApi.enabled=false", "--set", "server.restrictedApi.apis={health}"),
                "Deployment")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def grpc_health_check(port):
    """What the kubelet's gRPC probe does: grpc.health.v1.Health/Check with service "" (raw protobuf:
    an empty request; the response's field 1 is the status, SERVING = 1)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        return check(b"", timeout=5)


@pytest.mark.parametrize("http", [False, True], ids=["default", "http-opt-in"])
def test_rendered_server_args_on_tritonserver(http, tmp_path):
    """The pod's tritonserver arguments as rendered, run by the tritonserver 2.51 that nvidia-pytriton
    ships (the version of the chart's 24.10 image) over an empty repository: the probes' gRPC health
    check answers SERVING, the metrics port serves Prometheus, and HTTP listens only with the opt-in."""
    from serving.server import TRITON_HOME, server_environment

    ports = dict(zip(("http", "grpc", "metrics"), free_ports(3)))
    values = ["--set", f"server.http.enabled={str(http).lower()}"]
    for name, port in ports.items():
        values += ["--set", f"server.ports.{name}={port}"]
    c = container(render(*values))
    assert c["args"][0] == "tritonserver"
    repository = tmp_path / "model_repository"
    repository.mkdir()
    args = [f"--model-repository={repository}" if a.startswith("--model-repository=") else
            a.replace("$(TRITON_RESTRICTED_API_KEY)", "k" * 32)  # the kubelet expands it from the Secret
            for a in c["args"][1:]]
    args += ["--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"] + (["--http-address=127.0.0.1"] if http else [])
    probe_ports = {c[p]["grpc"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probe_ports == {ports["grpc"]}
    log = tmp_path / "tritonserver.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(TRITON_HOME / "bin" / "tritonserver"), *args], env=server_environment(),
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not port_open(ports["grpc"]):
            assert server.poll() is None, f"tritonserver exited {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert grpc_health_check(ports["grpc"]) == b"\x08\x01", "gRPC health: SERVING"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as response:
            assert response.status == 200 and "# HELP nv_" in response.read().decode()
        if http:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=5) as response:
                assert response.status == 200
        else:
            assert not port_open(ports["http"]), "nothing may listen on the HTTP port by default"
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_termination_grace_must_exceed_prestop_plus_exit_timeout():
    err = render_fails("--set", "terminationGracePeriodSeconds=45")
    assert "terminationGracePeriodSeconds (45) must be greater than preStopSleepSeconds (15) + server.exitTimeoutSeconds (30)" in err
    render_fails("--set", "preStopSleepSeconds=40")  # 40 + 30 >= 60
    # strictly greater is enough
    assert find(render("--set", "terminationGracePeriodSeconds=46"), "Deployment")


def test_other_guard_rails():
    assert "must not exceed autoscaling.maxReplicas" in render_fails(
        "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=2")
    assert "exactly one of minAvailable and maxUnavailable" in render_fails("--set", "podDisruptionBudget.minAvailable=1")
    assert "existingSecret is required" in render_fails("--set", "server.restrictedApi.existingSecret=")


def test_pdb(default_docs, gpu_docs):
    assert find(default_docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    pdb = find(gpu_docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb


def test_network_policy(gpu_docs):
    ingress = find(gpu_docs, "NetworkPolicy")["spec"]["ingress"]
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in ingress]
    assert ports == [["grpc"], ["metrics"]]
    assert ingress[1]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


# --- monitoring: adapter rules and dashboard ---------------------------------------------------

def test_prometheus_adapter_rule_matches_snippet_and_hpa(gpu_docs, rule_file):
    cm = find(gpu_docs, "ConfigMap", "t5-qa-prometheus-adapter")
    assert cm["metadata"]["namespace"] == "monitoring"
    (config,) = yaml_docs(cm["data"]["config.yaml"])
    (snippet,) = yaml_docs(path=ADAPTER_VALUES)
    assert config["rules"] == snippet["rules"]["custom"]
    (rule,) = config["rules"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert series in recorded_series(rule_file)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    hpa_metric = find(gpu_docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == hpa_metric


def test_prometheus_adapter_rule_follows_hpa_metric_name_and_rejects_unknown_series():
    docs = render("--set", "metrics.prometheusAdapterRules.enabled=true", "--set", "autoscaling.metric.name=t5_queue")
    (config,) = yaml_docs(find(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["rules"][0]["name"]["as"] == "t5_queue"
    err = render_fails("--set", "metrics.prometheusAdapterRules.enabled=true",
                       "--set", "metrics.prometheusAdapterRules.seriesName=not_recorded")
    assert '"not_recorded" is not recorded by files/rules.yaml' in err


def test_grafana_dashboard(gpu_docs):
    dashboard = json.loads(DASHBOARD.read_text())
    cm = find(gpu_docs, "ConfigMap", "t5-qa-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert json.loads(cm["data"]["t5-qa-dashboard.json"]) == dashboard
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    required = {
        "Request rate": "nv_inference_request_success",
        "Queue time per request (HPA metric)": "avg_time_queue_us",
        "Compute time per request": "nv_inference_compute_infer_duration_us",
        "GPU utilization": "nv_gpu_utilization",
        "p95 request latency": 'quantile="0.95"',
        "Replicas": "kube_deployment_status_replicas_available",
    }
    for title, metric in required.items():
        assert metric in exprs[title], title
    # the p95 panel reads the summary metric that the default args turn on
    assert "nv_inference_request_summary_us" in exprs["p95 request latency"]


def test_summary_latencies_flag_follows_values(default_docs):
    assert "--metrics-config=summary_latencies=true" in container(default_docs)["args"]
    args = container(render("--set", "server.metrics.summaryLatencies=false"))["args"]
    assert not [a for a in args if a.startswith("--metrics-config")]
