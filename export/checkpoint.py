"""A checkpoint installed as it is, for the torch executor: no ONNX export, no conversion to
validate. The model repository gets the checkpoint (`contract.names.CHECKPOINT`), its
`tokenizer.json` and a manifest whose graph signatures come from the checkpoint's config alone,
named as Optimum's exporter names them (`export.onnx_export`), so the config generator and
`t5_greedy` see the same tensors whichever path built the repository. Needs torch and
transformers only (not onnx or optimum): what `make gpu-check`'s offline kit has.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from contract.names import (ATTENTION_MASK, CHECKPOINT, DECODER, ENCODER, ENCODER_HIDDEN_STATES, INPUT_IDS,
                            LAST_HIDDEN_STATE, MANIFEST, TOKENIZER_FILE)
from contract.tokens import TokenIds
from export import source_key
from export.demo_model import is_demo

ENCODER_ATTENTION_MASK, USE_CACHE_BRANCH, LOGITS = "encoder_attention_mask", "use_cache_branch", "logits"


def graph_signatures(config) -> dict:
    """`t5_encoder` and `t5_decoder` (merged, with past) as `export.onnx_export.graph_signature`
    reads them from Optimum's graphs: name -> [ONNX element type, dims], in graph order."""
    ids = ["INT64", [-1, -1]]
    cache = ["FLOAT", [-1, config.num_heads, -1, config.d_kv]]
    caches = [f"{i}.{part}.{kv}" for i in range(config.num_decoder_layers)
              for part in ("decoder", "encoder") for kv in ("key", "value")]
    return {
        ENCODER: {"inputs": {INPUT_IDS: ids, ATTENTION_MASK: ids},
                  "outputs": {LAST_HIDDEN_STATE: ["FLOAT", [-1, -1, config.d_model]]}},
        DECODER: {"inputs": {ENCODER_ATTENTION_MASK: ids, INPUT_IDS: ids, ATTENTION_MASK: ids,
                             ENCODER_HIDDEN_STATES: ["FLOAT", [-1, -1, config.d_model]],
                             **{f"past_key_values.{c}": cache for c in caches}, USE_CACHE_BRANCH: ["BOOL", [1]]},
                  "outputs": {LOGITS: ["FLOAT", [-1, -1, config.vocab_size]], **{f"present.{c}": cache for c in caches}}},
    }


def install_checkpoint(model: str, repository: Path) -> Path:
    """The checkpoint's config and weights (safetensors, whatever layout it came in) where
    `t5_greedy`'s torch executor loads them."""
    from transformers import T5ForConditionalGeneration

    target = repository / CHECKPOINT
    if target.exists():
        shutil.rmtree(target)
    T5ForConditionalGeneration.from_pretrained(model).save_pretrained(target, safe_serialization=True)
    return target


def install_for_torch(model: str, repository: Path, precision: str) -> dict:
    """Install `model` (Hub id or folder) for the torch executor, which runs it in `precision`
    (`export.precision.TORCH_DTYPES`): checkpoint, tokenizer and the repository's manifest;
    return the manifest."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model)  # fails fast on a bad id
    if config.model_type != "t5":
        raise ValueError(f"{model} is a {config.model_type!r} model; this project serves T5 only")
    tokenizer = AutoTokenizer.from_pretrained(model)
    if not tokenizer.is_fast:
        raise FileNotFoundError(f"{model} has no fast tokenizer (tokenizer.json), which the text endpoint loads")
    install_checkpoint(model, repository)
    (repository / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.save(str(repository / TOKENIZER_FILE))
    manifest = {
        "model": model,
        "source_key": source_key(model),
        "exporter": "checkpoint",
        "demo": is_demo(config),
        "token_ids": TokenIds.from_model_config(config).as_dict(),
        "graphs": graph_signatures(config),
        "validation": {"torch": "the checkpoint runs as it is: nothing converted, nothing to validate"},
        "precision": precision,
    }
    (repository / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
