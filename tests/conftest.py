"""Fixtures: a tiny random T5 built and exported by the project's own code, made to behave like a
trained checkpoint (logits in the hundreds, answers that end with `</s>` at different steps, in
the export validation's prompts too), a real tritonserver over it on free loopback ports
(started once per test session), and the in-process PyTorch reference it must match."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import T5ForConditionalGeneration

from client import QAClient
from client.tokenizer import load_tokenizer
from contract.prompt import PromptEncoder
from contract.tokens import TokenIds
from export import workdir_for
from export.demo_model import build_demo_model
from export.reference import greedy_reference
from serving.pipeline import build, copy_code
from serving.server import Ports, TritonServer
from tests.inputs import TOKENIZER_JSON

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_REPOSITORY = REPO_ROOT / "model_repository"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def hf_generate(model: T5ForConditionalGeneration, input_ids: np.ndarray, attention_mask: np.ndarray,
                max_new_tokens: int) -> np.ndarray:
    """Reference tokens (`export.reference`: greedy `generate`), without the decoder start token."""
    return greedy_reference(model, input_ids, attention_mask, max_new_tokens).tokens


@pytest.fixture(scope="session")
def prompts() -> PromptEncoder:
    return PromptEncoder.from_tokenizer(load_tokenizer(str(TOKENIZER_JSON)))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return build_demo_model("tiny", tmp_path_factory.mktemp("models") / "tiny-realistic", seed=0, realistic=True)


@pytest.fixture(scope="session")
def hf_model(checkpoint) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="session")
def tokens(hf_model) -> TokenIds:
    return TokenIds.from_model_config(hf_model.config)


def copy_model_code(root: Path) -> Path:
    """A fresh model repository holding only the committed model code."""
    return copy_code(SOURCE_REPOSITORY, root / "model_repository")


def build_repository(checkpoint: Path, root: Path, exports: Path | None = None,
                     decoder_mode: str | None = None) -> Path:
    """The build pipeline into a fresh copy of the repository's model code (reusing an export
    of the same checkpoint under `exports`)."""
    repository = copy_model_code(root)
    build(str(checkpoint), repository, "cpu", exports or root / "onnx", decoder_mode=decoder_mode)
    return repository


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


def start_server(repository: Path, log_file: Path) -> TritonServer:
    server = TritonServer(repository, Ports(*free_ports(3)), address="127.0.0.1", exit_timeout_s=10,
                          log_file=log_file)
    server.start()
    try:
        server.wait_ready(timeout_s=180)
    except Exception:
        server.stop()
        print(log_file.read_text()[-5000:])
        raise
    return server


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
