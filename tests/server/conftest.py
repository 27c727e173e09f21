"""Fixtures of the server layer: a tiny random T5 built and exported by the project's own code,
made to behave like a trained checkpoint (logits in the hundreds, answers that end with `</s>`
at different steps, in the export validation's prompts too), a real tritonserver over it on free
loopback ports (started once per test session), and the in-process PyTorch reference it must
match."""
from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpc
from transformers import T5ForConditionalGeneration

from client import QAClient
from contract.tokens import TokenIds
from export import workdir_for
from export.demo_model import build_demo_model
from tests.helpers import build_repository, start_server


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return build_demo_model("tiny", tmp_path_factory.mktemp("models") / "tiny-realistic", seed=0, realistic=True)


@pytest.fixture(scope="session")
def hf_model(checkpoint) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="session")
def tokens(hf_model) -> TokenIds:
    return TokenIds.from_model_config(hf_model.config)


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def export_dir(exports, checkpoint) -> Path:
    """The test checkpoint's export folder (graphs, manifest, tokenizer)."""
    return workdir_for(str(checkpoint), exports)


@pytest.fixture(scope="session")
def repository(tmp_path_factory, checkpoint, exports) -> Path:
    return build_repository(checkpoint, tmp_path_factory.mktemp("serving"), exports)


@pytest.fixture(scope="session")
def server(repository, tmp_path_factory):
    server = start_server(repository, tmp_path_factory.mktemp("logs") / "tritonserver.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(server, prompts):
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as qa:
        yield qa


@pytest.fixture(scope="session")
def bls_client(tmp_path_factory, checkpoint, exports, prompts):
    """The same model served with `t5_greedy` calling `t5_decoder` through BLS (GPU targets' path)."""
    root = tmp_path_factory.mktemp("serving-bls")
    server = start_server(build_repository(checkpoint, root, exports, "bls"), root / "tritonserver.log")
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as qa:
        yield qa
    server.stop()


@pytest.fixture(scope="module")
def raw(server):
    """A plain `tritonclient` gRPC client of the shared server (requests no `QAClient` would send)."""
    with grpc.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}") as c:
        yield c
