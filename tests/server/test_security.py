"""Security defaults of `serving.server`: the administrative APIs (model repository, shared
memory, trace, logging) are refused without the admin key and allowed with it, over gRPC and
HTTP; inference, health, metadata, config and statistics stay open; the key never appears in
the log and never reaches the models' environment; model control stays `none`. (The server's
flags and the key's source and validation, without a server: `tests/unit/test_security.py`.)"""
from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from serving.server import ADMIN_HEADER, ADMIN_KEY_ENV, TritonServer, server_environment
from serving.supervisor import PROBE_IDS

GRPC_REFUSAL = f"This protocol is restricted, expecting header 'triton-grpc-protocol-{ADMIN_HEADER}'"
HTTP_REFUSAL = f"This API is restricted, expecting header '{ADMIN_HEADER}'"


@pytest.fixture(scope="module")
def http_client(server):
    with http.InferenceServerClient(f"127.0.0.1:{server.ports.http}") as c:
        yield c


def refused(call, protocol: str) -> None:
    """`call` must be refused by the restriction (not by anything else)."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    if protocol == "grpc":
        assert caught.value.status() == "StatusCode.UNAVAILABLE" and GRPC_REFUSAL in caught.value.message()
    else:
        assert caught.value.status() == "403" and HTTP_REFUSAL in caught.value.message()


def wrong_key(protocol: str) -> dict[str, str]:
    prefix = "triton-grpc-protocol-" if protocol == "grpc" else ""
    return {prefix + ADMIN_HEADER: "not-the-key-" + uuid.uuid4().hex}


def admin_calls(client, protocol: str) -> dict:
    """One call of each restricted API, taking `headers`."""
    json_kw = {"as_json": True} if protocol == "grpc" else {}
    return {
        "model-repository index": lambda h: client.get_model_repository_index(headers=h, **json_kw),
        "model-repository unload": lambda h: client.unload_model("t5_qa", headers=h),
        "model-repository load": lambda h: client.load_model("t5_qa", headers=h),
        "trace settings": lambda h: client.get_trace_settings(headers=h, **json_kw),
        "trace update": lambda h: client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}, headers=h,
                                                               **json_kw),
        "log settings": lambda h: client.get_log_settings(headers=h, **json_kw),
        "log update": lambda h: client.update_log_settings(settings={"log_verbose_level": 1}, headers=h, **json_kw),
        "system shm status": lambda h: client.get_system_shared_memory_status(headers=h, **json_kw),
        "system shm register": lambda h: client.register_system_shared_memory("t5qa_x", "/t5qa_x", 64, headers=h),
        "cuda shm register": lambda h: client.register_cuda_shared_memory("t5qa_x", b"\0" * 64, 0, 64, headers=h),
        "cuda shm status": lambda h: client.get_cuda_shared_memory_status(headers=h, **json_kw),
    }


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_admin_apis_refused_without_or_with_a_wrong_key(protocol, raw, http_client):
    client = raw if protocol == "grpc" else http_client
    for name, call in admin_calls(client, protocol).items():
        refused(lambda: call(None), protocol)
        refused(lambda: call(wrong_key(protocol)), protocol)
    assert raw.is_model_ready("t5_qa"), "a refused unload must leave the model loaded"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_admin_apis_allowed_with_the_key(protocol, server, raw, http_client):
    client = raw if protocol == "grpc" else http_client
    key = server.admin_headers(protocol)
    calls = admin_calls(client, protocol)
    index = calls["model-repository index"](key)
    models = index["models"] if protocol == "grpc" else index
    assert {"t5_qa", "t5_encoder", "t5_greedy", "t5_decoder"} <= {m["name"] for m in models}
    assert calls["trace settings"](key)
    assert calls["log settings"](key)
    calls["system shm status"](key)
    # Model control mode is `none`: even with the key, nothing can be unloaded.
    with pytest.raises(InferenceServerException) as caught:
        calls["model-repository unload"](key)
    assert "restricted" not in caught.value.message() and "not allowed" in caught.value.message()
    assert raw.is_model_ready("t5_qa")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_system_shared_memory_registration_needs_the_key(protocol, server, raw, http_client):
    client = raw if protocol == "grpc" else http_client
    name = f"t5qa_security_{protocol}_{uuid.uuid4().hex[:8]}"
    region = shm.create_shared_memory_region(name, f"/{name}", 64)
    try:
        refused(lambda: client.register_system_shared_memory(name, f"/{name}", 64), protocol)
        key = server.admin_headers(protocol)
        client.register_system_shared_memory(name, f"/{name}", 64, headers=key)
        status = client.get_system_shared_memory_status(headers=key, **({"as_json": True} if protocol == "grpc" else {}))
        registered = status.get("regions", {}) if protocol == "grpc" else {r["name"]: r for r in status}
        assert name in registered
        refused(lambda: client.unregister_system_shared_memory(name), protocol)
        client.unregister_system_shared_memory(name, headers=key)
    finally:
        shm.destroy_shared_memory_region(region)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_facing_apis_stay_open(protocol, raw, http_client):
    client = raw if protocol == "grpc" else http_client
    module = grpc if protocol == "grpc" else http
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("t5_qa")
    assert client.get_server_metadata()
    assert client.get_model_metadata("t5_qa")
    assert client.get_model_config("t5_qa")
    assert client.get_inference_statistics("t5_qa")
    inputs = []
    for name, value in (("input_ids", PROBE_IDS), ("attention_mask", np.ones_like(PROBE_IDS))):
        tensor = module.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    assert client.infer("t5_qa", inputs).as_numpy("output_lengths").shape == (1, 1)


def test_key_is_not_logged_nor_passed_to_the_models(server, monkeypatch, tmp_path):
    log = server.log_file.read_bytes()
    announcement = b"are closed: $T5QA_ADMIN_KEY is unset" if server.admin_key_generated else b"need header"
    assert b"admin APIs (model-repository, shared-memory, trace, logging) " + announcement in log
    assert server.admin_key.encode() not in log
    for pid in server.stub_pids():
        for view in ("environ", "cmdline"):
            assert server.admin_key.encode() not in Path(f"/proc/{pid}/{view}").read_bytes()
    monkeypatch.setenv(ADMIN_KEY_ENV, "s" * 20)
    assert ADMIN_KEY_ENV not in server_environment()
    announced = io.BytesIO()
    TritonServer(tmp_path)._announce(announced)
    assert b"need header 't5qa-admin-key'" in announced.getvalue() and b"s" * 20 not in announced.getvalue()
