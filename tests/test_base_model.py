"""Parity on the t5-base architecture (random weights, 223M parameters): export, serve, and
match `transformers` token for token. Slower (about two minutes): it exports t5-base."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import T5ForConditionalGeneration

from client import QAClient
from export.demo_model import build_demo_model
from tests.conftest import build_repository, hf_generate, start_server
from tests.inputs import squad_pairs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    checkpoint = build_demo_model("base", root / "demo-base", seed=0)
    repository = build_repository(checkpoint, root)
    server = start_server(repository, root / "tritonserver.log")
    yield checkpoint, server
    server.stop()


def test_t5_base_parity(base, prompts):
    checkpoint, server = base
    model = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
    pairs = squad_pairs(6, stride=1999)
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as client:
        for question, context in pairs:  # single requests
            ids = np.array([prompts.encode(question, context)])
            reference = hf_generate(model, ids, np.ones_like(ids), 16)[0]
            ours, lengths, _ = client.generate(ids, np.ones_like(ids), 16)
            np.testing.assert_array_equal(ours[0, : lengths[0, 0]], reference[: lengths[0, 0]])
            assert not reference[lengths[0, 0]:].any()
        ids, mask = prompts.encode_batch(pairs[:4])  # one mixed-length batch
        reference = hf_generate(model, ids, mask, 16)
        ours, lengths, _ = client.generate(ids, mask, 16)
        for row in range(4):
            np.testing.assert_array_equal(ours[row, : lengths[row, 0]], reference[row, : lengths[row, 0]])
            assert not reference[row, lengths[row, 0]:].any()
    assert len({tuple(r) for r in reference.tolist()}) > 1, "answers should depend on the input"
