"""Export validation catches graphs that do not reproduce the checkpoint, and exports are reused."""
from __future__ import annotations

import json

import pytest

from export.demo_model import build_demo_model, is_demo
from contract.names import MANIFEST
from export.onnx_export import GRAPHS, export_model, install
from export.validate import VALIDATION_PAIRS, ValidationError, validate_export


def test_validation_report_is_recorded(repository):
    """The test checkpoint is validated the way a trained one is: its validation answers end
    at different steps (rows leave the decode batch early) and its logits are in the hundreds."""
    manifest = json.loads((repository / MANIFEST).read_text())
    report = manifest["validation"]
    assert report["tokens_identical"] is True and report["near_ties"] == []
    assert report["worst_tolerance_share"] <= 1.0
    assert report["prompts"] == len(VALIDATION_PAIRS) == len(report["answer_lengths"])
    assert len(set(report["answer_lengths"])) >= 2 and min(report["answer_lengths"]) < report["new_tokens"]
    assert report["max_abs_logit"] > 100
    assert manifest["token_ids"] == {"decoder_start": 0, "eos": 1, "pad": 0, "vocab_size": 32128}


def test_validation_names_prompt_step_and_difference(repository, checkpoint):
    """With no tolerance at all, float32 differences fail the export, and the message says where."""
    with pytest.raises(ValidationError, match=r"prompt 0 \('What is the capital of France\?'\) step 0: "
                                              r"max \|logit difference\| \S+ exceeds 0 "):
        validate_export(str(checkpoint), repository / "t5_encoder" / "1" / "model.onnx",
                        repository / "t5_decoder" / "1" / "model.onnx", atol=0.0, rtol=0.0)


def test_graphs_of_another_model_fail_validation(tmp_path, repository):
    other = build_demo_model("tiny", tmp_path / "other", seed=1)
    with pytest.raises(ValidationError, match="differ|exceeds"):
        validate_export(str(other), repository / "t5_encoder" / "1" / "model.onnx",
                        repository / "t5_decoder" / "1" / "model.onnx")


def test_export_is_reused_and_installed(tmp_path, checkpoint, repository):
    workdir = tmp_path / "onnx"
    first = export_model(str(checkpoint), workdir)
    stamp = (workdir / GRAPHS["t5_decoder"]).stat().st_mtime_ns
    again = export_model(str(checkpoint), workdir)
    assert again == first and (workdir / GRAPHS["t5_decoder"]).stat().st_mtime_ns == stamp
    assert (workdir / "decoder_with_past_model.onnx").is_file()  # TensorRT builds from the split graphs
    target = tmp_path / "repo"
    install(workdir, target)
    assert (target / "t5_encoder" / "1" / "model.onnx").is_file()
    assert json.loads((target / MANIFEST).read_text())["source_key"] == first["source_key"]


def test_demo_models_are_marked(tmp_path):
    from transformers import AutoConfig
    path = build_demo_model("tiny", tmp_path / "m", seed=3)
    assert is_demo(AutoConfig.from_pretrained(path))
    with pytest.raises(ValueError, match="unknown demo size"):
        build_demo_model("huge", tmp_path / "x")
