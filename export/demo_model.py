"""Seeded T5 checkpoints with random weights, for machines that cannot reach the Hugging Face
Hub: the t5-base architecture (223M parameters) or a tiny one, saved with the real t5-base
tokenizer. Their answers are meaningless; `config.json` carries `t5qa_demo` so that every
later stage (export manifest, served config, client) can say so.

One adjustment keeps the random model from answering every question with `<pad>`: with tied
embeddings, the decoder start token's own embedding dominates the first logits, so it is
shrunk (x0.01), and the output then depends on the input."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TOKENIZER = Path(os.environ.get("T5QA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "t5-base"

COMMON = dict(vocab_size=32128, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
              feed_forward_proj="relu", tie_word_embeddings=True, relative_attention_num_buckets=32)
SIZES = {
    "base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
    "tiny": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4),
}


def is_demo(config: T5Config) -> bool:
    return bool(getattr(config, "t5qa_demo", None))


def build_demo_model(size: str, output: Path, seed: int = 0, tokenizer_dir: Path = SHARED_TOKENIZER) -> Path:
    """Write a random-weight checkpoint of `size` ('base' or 'tiny') to `output`."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {sorted(SIZES)}")
    tokenizer_file = tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"t5-base tokenizer not found at {tokenizer_file} (set T5QA_SHARED_DATA)")
    config = T5Config(**COMMON, **SIZES[size])
    config.t5qa_demo = {"size": size, "seed": seed}
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.shared.weight[config.decoder_start_token_id] *= 0.01
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    T5TokenizerFast(tokenizer_file=str(tokenizer_file), model_max_length=512).save_pretrained(output)
    return output
