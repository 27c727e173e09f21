"""Export validation catches graphs that do not reproduce the checkpoint, and exports are reused."""
from __future__ import annotations

import json

import pytest

from export.demo_model import build_demo_model, is_demo
from export.onnx_export import GRAPHS, MANIFEST, export_model, install
from export.validate import ValidationError, validate_export


def test_validation_report_is_recorded(repository):
    manifest = json.loads((repository / MANIFEST).read_text())
    report = manifest["validation"]
    assert report["tokens_identical"] is True
    assert report["max_abs_logit_diff"] <= report["atol"] == 1e-4
    assert report["prompts"] >= 4


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
