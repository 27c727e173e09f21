"""Every T5-family checkpoint shape a user may bring exports, validates and serves with
token-for-token parity to the PyTorch reference (`generate`; a plain greedy loop where
`transformers` 4.57.6 cannot decode the checkpoint), through a real tritonserver.

Each checkpoint is built like a trained one (`build_demo_model(realistic=True)`): logits in the
hundreds and answers that end with `</s>` at different steps, the export validation's
included. Weight files and tokenizer files come in the formats Hub repositories have: the
t5-base one is laid out as the seed model's 2020 repository is (`pytorch_model.bin` and
`spiece.model`, no `tokenizer.json`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import T5ForConditionalGeneration

from tritonclient import grpc

from client import QAClient
from export.demo_model import SIZES, build_demo_model
from contract.names import MANIFEST
from contract.tokens import TokenIds
from export.reference import generate_supported, greedy_reference
from tests.helpers import build_repository, start_server, text_infer
from tests.inputs import parity_pairs

# id: (layout in export.demo_model.SIZES, weights file format, tokenizer file format)
CHECKPOINTS = {
    "t5-base-bin-spiece": ("base", "bin", "spiece.model"),
    "t5-small": ("small", "safetensors", "tokenizer.json"),
    "deeper-decoder-bin": ("tiny-deep-decoder", "bin", "tokenizer.json"),
    "narrow-heads-spiece": ("tiny-narrow-heads", "safetensors", "spiece.model"),
    "v1.1-gated-gelu-untied": ("tiny-v1.1", "safetensors", "tokenizer.json"),
    "relative-buckets": ("tiny-relative-buckets", "safetensors", "tokenizer.json"),
}
PAIRS = parity_pairs()[::2][:20]  # 20 inputs of all lengths, SQuAD dev and hand-made
SINGLES, BATCH = PAIRS[:12], PAIRS[12:]
LIMITS = [None, 64, 7]  # None: the server's default, 32


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def served(request, tmp_path_factory, prompts):
    layout, weights, tokenizer_format = CHECKPOINTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    checkpoint = build_demo_model(layout, root / "checkpoint", seed=0, weights=weights,
                                  tokenizer_format=tokenizer_format, realistic=True)
    repository = build_repository(checkpoint, root)
    server = start_server(repository, root / "tritonserver.log")
    model = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as client:
        yield request.param, checkpoint, repository, model, client
    server.stop()


def test_checkpoint_is_laid_out_as_users_bring_it(served):
    name, checkpoint, repository, model, _ = served
    layout, weights, tokenizer_format = CHECKPOINTS[name]
    files = {p.name for p in checkpoint.iterdir()}
    assert ("pytorch_model.bin" in files) == (weights == "bin") != ("model.safetensors" in files)
    assert ("tokenizer.json" in files) == (tokenizer_format == "tokenizer.json")
    assert "spiece.model" in files or "tokenizer.json" in files
    config = model.config
    assert {k: getattr(config, k) for k in SIZES[layout]} == SIZES[layout]
    assert generate_supported(model) == (config.num_decoder_layers == config.num_layers)
    report = json.loads((repository / MANIFEST).read_text())["validation"]
    lengths = report["answer_lengths"]
    assert report["tokens_identical"] and len(set(lengths)) >= 2 and min(lengths) < report["new_tokens"]
    assert report["max_abs_logit"] > 100


def test_the_torch_executors_install_describes_what_the_export_does(served, tmp_path):
    """Installed as it is for the torch executor (`export.checkpoint`, no ONNX), every layout
    gets the signatures its exported graphs have (deeper decoder, d_kv x heads != d_model, ...)
    and the tokenizer the export installed (converted from spiece.model where that is all)."""
    from contract.names import DECODER, ENCODER, TOKENIZER_FILE
    from export.checkpoint import install_for_torch

    _, checkpoint, repository, _, _ = served
    exported = json.loads((repository / MANIFEST).read_text())
    installed = install_for_torch(str(checkpoint), tmp_path, "float32")
    for name in (ENCODER, DECODER):
        for side in ("inputs", "outputs"):
            assert list(installed["graphs"][name][side].items()) == list(exported["graphs"][name][side].items())
    assert installed["token_ids"] == exported["token_ids"]
    tokenizer = json.loads((tmp_path / TOKENIZER_FILE).read_text())
    assert tokenizer["model"] == json.loads((repository / TOKENIZER_FILE).read_text())["model"]


def test_single_requests_match_the_reference(served, prompts):
    *_, model, client = served
    for index, pair in enumerate(SINGLES):
        ids = np.array([prompts.encode(*pair)])
        limit = LIMITS[index % len(LIMITS)]
        reference = greedy_reference(model, ids, np.ones_like(ids), limit or 32)
        ours, lengths, _ = client.generate(ids, np.ones_like(ids), limit)
        assert ours[0, : lengths[0, 0]].tolist() == reference.answer(0), f"input {index}"


def test_mixed_length_batch_matches_the_reference(served, prompts):
    *_, model, client = served
    ids, mask = prompts.encode_batch(BATCH)
    reference = greedy_reference(model, ids, mask, 32)
    ours, lengths, _ = client.generate(ids, mask)
    for row in range(len(BATCH)):
        assert ours[row, : lengths[row, 0]].tolist() == reference.answer(row), f"row {row}"


def test_answers_end_at_different_steps(served, prompts):
    """The premise of the parity tests above: rows leave the decode batch at different steps."""
    *_, model, _ = served
    ids, mask = prompts.encode_batch(PAIRS)
    reference = greedy_reference(model, ids, mask, 32)
    ended = [int(n) for row, n in enumerate(reference.lengths) if reference.tokens[row, n - 1] == model.config.eos_token_id]
    assert ended and len(set(reference.lengths.tolist())) > 1, reference.lengths


def test_text_endpoint_uses_the_checkpoints_tokenizer(served, prompts):
    """The server tokenizes with the tokenizer exported from the checkpoint (converted from
    `spiece.model` where that is all it has): the text endpoint's answers equal the decoded
    reference on the ids of the t5-base tokenizer.json; the served config publishes the ids."""
    *_, model, client = served
    pairs = SINGLES[:6]
    ids, mask = prompts.encode_batch(pairs)
    reference = greedy_reference(model, ids, mask, 32)
    with grpc.InferenceServerClient(client.url) as raw:
        answers, _, _ = text_infer(raw, pairs)
    assert answers == [prompts.decode(reference.answer(row)) for row in range(len(pairs))]
    parameters = client.model_config["parameters"]
    assert {k: parameters[k]["string_value"] for k in ("eos_token_id", "pad_token_id", "vocab_size")} == {
        "eos_token_id": str(model.config.eos_token_id), "pad_token_id": str(model.config.pad_token_id),
        "vocab_size": str(model.config.vocab_size)}


def test_torch_executor_matches_the_reference(served, prompts):
    """`t5_greedy`'s torch executor (the checkpoint's own decoder on PyTorch, fp32, CPU) speaks
    the exported graph's tensor names and decodes every layout as the reference does: rows of
    all lengths in one batch, leaving at different steps."""
    import torch

    from runtime.arrays import TorchArrays
    from runtime.greedy import greedy_generate
    from runtime.onnx_runtime import OrtSeq2Seq
    from runtime.torch_t5 import TorchDecoder

    _, checkpoint, repository, model, _ = served
    graphs = OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))
    ids, mask = prompts.encode_batch(PAIRS)
    decoder = TorchDecoder(str(checkpoint), graphs.signature)
    ours = greedy_generate(decoder, graphs.signature, TokenIds.from_model_config(model.config),
                           torch.from_numpy(graphs.encode(ids, mask)), mask, np.full(len(PAIRS), 32),
                           arrays=TorchArrays())
    reference = greedy_reference(model, ids, mask, 32)
    for row in range(len(PAIRS)):
        assert ours.tokens[row, : ours.lengths[row]].tolist() == reference.answer(row), f"row {row}"
