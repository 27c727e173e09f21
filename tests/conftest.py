"""Fixtures: a tiny random T5 built and exported by the project's own code, a real tritonserver
over it on free loopback ports (started once per test session), and the in-process
`transformers` reference it must match."""
from __future__ import annotations

import shutil
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import T5ForConditionalGeneration

from client import QAClient
from client.prompt import EOS_ID, PromptEncoder, load_tokenizer
from export.demo_model import build_demo_model
from export.onnx_export import export_model, install
from serving.repository import write_repository
from serving.server import Ports, TritonServer
from tests.inputs import TOKENIZER_JSON, parity_pairs

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
    """Reference: greedy `generate`, without the decoder start token."""
    with torch.inference_mode():
        out = model.generate(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return out[:, 1:].numpy()


def make_eos_model(source: Path, target: Path, prompts: PromptEncoder) -> Path:
    """Random weights rarely emit `</s>`: give `</s>` the (slightly enlarged) embedding of a
    token the random model produces in some answers, so that some answers stop early and
    others run to the limit. Deterministic; the tests check the mix they rely on."""
    model = T5ForConditionalGeneration.from_pretrained(source).eval()
    pairs = parity_pairs()
    ids, mask = prompts.encode_batch(pairs)
    produced = Counter(t for row in hf_generate(model, ids, mask, 32) for t in set(row.tolist()) if t > 1)
    for token, _ in produced.most_common(20):
        candidate = T5ForConditionalGeneration.from_pretrained(source).eval()
        with torch.no_grad():
            candidate.shared.weight[EOS_ID] = candidate.shared.weight[token] * 1.05
        rows = hf_generate(candidate, ids, mask, 32)
        stops = sum(EOS_ID in row for row in rows.tolist())
        if 10 <= stops <= len(pairs) - 10:
            candidate.save_pretrained(target)
            shutil.copy(source / "tokenizer.json", target)
            for extra in ("tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(source / extra, target)
            return target
    raise RuntimeError("no token gave a mix of early-stopping and full-length answers")


@pytest.fixture(scope="session")
def prompts() -> PromptEncoder:
    return PromptEncoder(load_tokenizer(str(TOKENIZER_JSON)))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, prompts) -> Path:
    root = tmp_path_factory.mktemp("models")
    tiny = build_demo_model("tiny", root / "demo-tiny", seed=0)
    return make_eos_model(tiny, root / "tiny-eos", prompts)


@pytest.fixture(scope="session")
def hf_model(checkpoint) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration.from_pretrained(checkpoint).eval()


def copy_model_code(root: Path) -> Path:
    """A fresh model repository holding only the committed model code."""
    return shutil.copytree(SOURCE_REPOSITORY, root / "model_repository",
                           ignore=shutil.ignore_patterns("*.onnx", "config.pbtxt", "export_manifest.json",
                                                         "__pycache__"))


def build_repository(checkpoint: Path, root: Path, workdir: Path | None = None,
                     decoder_mode: str | None = None) -> Path:
    """Export with the project's code (reusing `workdir`'s export if there is one) into a
    fresh copy of the repository's model code."""
    repository = copy_model_code(root)
    workdir = workdir or root / "onnx"
    export_model(str(checkpoint), workdir)
    install(workdir, repository)
    write_repository(repository, "cpu", decoder_mode)
    return repository


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def repository(tmp_path_factory, checkpoint, export_dir) -> Path:
    return build_repository(checkpoint, tmp_path_factory.mktemp("serving"), export_dir)


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
def bls_client(tmp_path_factory, checkpoint, export_dir, prompts):
    """The same model served with `t5_greedy` calling `t5_decoder` through BLS (GPU targets' path)."""
    root = tmp_path_factory.mktemp("serving-bls")
    server = start_server(build_repository(checkpoint, root, export_dir, "bls"), root / "tritonserver.log")
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as qa:
        yield qa
    server.stop()
