"""Checkpoint → ONNX (Optimum's exporter) → validation → the model repository's version folders.

Optimum writes `encoder_model.onnx` and `decoder_model_merged.onnx` (one graph holding the
first step and the with-past step behind an `If` on `use_cache_branch`, so the decoder's
weights are loaded once). Its T5 config is extended with the decoder's `attention_mask`
(`T5WithDecoderMaskOnnxConfig`), which lets rows that started at different steps share a
decode step with left-padded caches (see `serving.greedy`). They become
`t5_encoder/1/model.onnx` and `t5_decoder/1/model.onnx` (or, with `precision="int8"`, their
dynamically quantized copies that `export.quantize` keeps beside them in the export folder);
`export_manifest.json` at the repository root records where they came from and how they
validated, and the config generator reads it. The checkpoint's `tokenizer.json` (which
Optimum saves beside the graphs) goes to `serving.text_repository.TOKENIZER_FILE` for the text
endpoint, so that the server tokenizes with the exported model's own tokenizer.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import onnx
from optimum.exporters.onnx import main_export
from optimum.exporters.onnx.base import ConfigBehavior
from optimum.exporters.onnx.model_configs import T5OnnxConfig
from transformers import AutoConfig

from contract.tokens import TokenIds
from export import source_key
from export.demo_model import is_demo
from export.validate import ATOL, RTOL, validate_export
from contract.names import DECODER, DECODER_INIT, ENCODER, GRAPH, MANIFEST, TOKENIZER_FILE, version_file

TASK = "text2text-generation-with-past"
GRAPHS = {ENCODER: "encoder_model.onnx", DECODER: "decoder_model_merged.onnx"}
# Kept beside the merged graph for TensorRT, which cannot build its If node (NVIDIA/TensorRT#2723):
# `make engines` builds them into t5_decoder_init (first step) and t5_decoder (later steps).
SPLIT_GRAPHS = {DECODER_INIT: "decoder_model.onnx", "t5_decoder_with_past": "decoder_with_past_model.onnx"}
# Made by `export.quantize` from GRAPHS, recorded under the manifest's "int8" entry.
INT8_GRAPHS = {ENCODER: "encoder_model.int8.onnx", DECODER: "decoder_model_merged.int8.onnx"}
EXPORTER_VERSION = 4  # bump when the graphs change, so older exports are not reused


class T5WithDecoderMaskOnnxConfig(T5OnnxConfig):
    """Optimum's T5 export plus the decoder's attention mask, as Optimum does for Pix2Struct:
    `[batch, past + 1]`, exported under the name `attention_mask`."""

    PAD_ATTENTION_MASK_TO_PAST = True

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        common = super().inputs
        if self._behavior is ConfigBehavior.DECODER:
            length = ("past_decoder_sequence_length + decoder_sequence_length" if self.use_past_in_inputs
                      else "decoder_sequence_length")
            common["decoder_attention_mask"] = {0: "batch_size", 1: length}
        return common


def onnx_configs(config) -> dict[str, T5OnnxConfig]:
    """Per-graph export configs for `main_export(custom_onnx_configs=...)`."""
    base = T5WithDecoderMaskOnnxConfig(config, task="text2text-generation", use_past=True, use_past_in_inputs=True)
    return {"encoder_model": base.with_behavior("encoder"),
            "decoder_model": base.with_behavior("decoder", use_past=True, use_past_in_inputs=False),
            "decoder_with_past_model": base.with_behavior("decoder", use_past=True, use_past_in_inputs=True)}


def graph_signature(path: Path) -> dict:
    """Inputs and outputs of an ONNX graph: name -> [ONNX element type, dims (-1 if dynamic)]."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values) -> dict:
        return {
            v.name: [onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                     [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]]
            for v in values
        }

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def export_model(model: str, workdir: Path, atol: float = ATOL, rtol: float = RTOL) -> dict:
    """Export and validate `model` into `workdir`; return the manifest. Reuses a previous
    export of the same checkpoint found there."""
    manifest_path = workdir / MANIFEST
    key = source_key(model)
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if (manifest.get("source_key") == key and manifest.get("exporter") == EXPORTER_VERSION
                and all((workdir / f).is_file() for f in {**GRAPHS, **SPLIT_GRAPHS}.values())):
            return manifest
    config = AutoConfig.from_pretrained(model)  # fails fast, before the slow export, on a bad id
    if config.model_type != "t5":
        raise ValueError(f"{model} is a {config.model_type!r} model; this exporter serves T5 only")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    main_export(model, workdir, task=TASK, custom_onnx_configs=onnx_configs(config), do_validation=False)
    exported = time.monotonic() - started
    report = validate_export(model, workdir / GRAPHS[ENCODER], workdir / GRAPHS[DECODER], atol, rtol)
    manifest = {
        "model": model,
        "source_key": key,
        "exporter": EXPORTER_VERSION,
        "demo": is_demo(config),
        "token_ids": TokenIds.from_model_config(config).as_dict(),
        "graphs": {name: graph_signature(workdir / f) for name, f in {**GRAPHS, **SPLIT_GRAPHS}.items()},
        "export_seconds": round(exported, 1),
        "validation": report.as_dict(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def failure(model: str, error: Exception) -> str:
    """What to tell a user whose export failed: validation, or a checkpoint that cannot load."""
    from export.validate import ValidationError
    if isinstance(error, ValidationError):
        return f"export failed validation: {error}"
    return f"cannot load {model!r}: {error}"


def install(workdir: Path, repository: Path, precision: str = "fp32") -> dict:
    """Place the validated graphs of `precision` ("fp32", or "int8" once `export.quantize` made
    them) into `repository`'s version folders (hard links when possible); write the repository's
    manifest: the export's, with the precision installed (and the int8 agreement report under
    `validation.int8`)."""
    manifest = installed_manifest(json.loads((workdir / MANIFEST).read_text()), precision)
    graphs = INT8_GRAPHS if precision == "int8" else GRAPHS
    for model_name, filename in graphs.items():
        target = repository / version_file(model_name, GRAPH)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            target.hardlink_to(workdir / filename)
        except OSError:
            shutil.copyfile(workdir / filename, target)
    install_tokenizer(workdir, repository)
    (repository / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def installed_manifest(manifest: dict, precision: str) -> dict:
    """The export folder's manifest as a repository records it: the precision of its graphs, and
    the int8 graphs' agreement with fp32 only where the int8 graphs are the ones installed."""
    quantized = manifest.pop("int8", None)
    if precision == "int8":
        if quantized is None:
            raise FileNotFoundError("no int8 graphs in the export folder: export.quantize.quantize_export makes them")
        manifest["validation"] = {**manifest["validation"], "int8": quantized["validation"]}
        manifest["int8"] = {k: v for k, v in quantized.items() if k != "validation"}
    elif precision != "fp32":
        raise ValueError(f"the ONNX graphs are installed in fp32 or int8, not {precision!r}")
    return {**manifest, "precision": precision}


def install_tokenizer(workdir: Path, repository: Path) -> Path:
    """Copy the export's `tokenizer.json` to where the text endpoint's models load it."""
    source = workdir / "tokenizer.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: the export of a checkpoint with a fast tokenizer writes it")
    target = repository / TOKENIZER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
