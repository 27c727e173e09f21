"""The checkpoint's own T5 in PyTorch: the decoder as the decode loop's step (`t5_greedy`'s
`torch` executor) and the encoder (`t5_encoder`'s). On a GPU its states and caches stay on the
device from the first step to the last (no per-step process boundary, no host round trip; cross-attention keys and values
computed once per row); on the CPU the same code runs, which is how `make test` checks it
against `generate` through a real tritonserver.

It speaks the merged ONNX decoder's tensor names (`runtime.greedy`: `input_ids`,
`attention_mask`, `encoder_attention_mask`, `encoder_hidden_states`, `use_cache_branch`,
`past_key_values.*` in; `logits`, `present.*` out), so the decode batch does not know which
executor runs it, and the model's own forward (transformers' `T5ForConditionalGeneration`,
given the encoder output) computes the step: the checkpoint's layout, relative-attention
buckets, feed-forward kind and output scaling come with it.
"""
from __future__ import annotations

import os
import re
from typing import Any

from contract.graphs import DecoderSignature
from contract.parameters import TORCH_DTYPES

PAST_NAME = re.compile(r"past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")


def cache_names(signature: DecoderSignature) -> list[dict[str, str]]:
    """Per decoder layer, the feed names of its self ("decoder") and cross ("encoder") keys
    and values: `{"decoder.key": name, ...}`."""
    layers: dict[int, dict[str, str]] = {}
    for name in signature.past_names:
        match = PAST_NAME.match(name)
        if match is None:
            raise ValueError(f"unexpected cache input {name!r}: "
                             "expected past_key_values.<layer>.<decoder|encoder>.<key|value>")
        layers.setdefault(int(match[1]), {})[f"{match[2]}.{match[3]}"] = name
    if sorted(layers) != list(range(len(layers))) or any(len(kinds) != 4 for kinds in layers.values()):
        raise ValueError(f"incomplete decoder cache inputs: {sorted(signature.past_names)}")
    return [layers[i] for i in range(len(layers))]


def load_t5(kind, checkpoint: str, device: str, dtype: str, threads: int):
    """`kind.from_pretrained(checkpoint)` in `dtype` on `device`, for inference; (torch, model)."""
    import torch

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {TORCH_DTYPES} (T5 overflows float16), got {dtype!r}")
    if device == "cpu":
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    return torch, kind.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).to(device).eval()


class TorchEncoder:
    """The checkpoint's encoder: token ids and mask (host arrays) to float32 hidden states
    on `device` (a torch tensor)."""

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str = "float32", threads: int = 0):
        from transformers import T5EncoderModel

        self.torch, self.model = load_t5(T5EncoderModel, checkpoint, device, dtype, threads)
        self.device = self.torch.device(device)

    def __call__(self, input_ids, attention_mask):
        torch = self.torch
        with torch.no_grad():
            states = self.model(input_ids=torch.from_numpy(input_ids).to(self.device),
                                attention_mask=torch.from_numpy(attention_mask).to(self.device)).last_hidden_state
        return states.float()


class TorchDecoder:
    """A `runtime.greedy.RunGraph` running the checkpoint's decoder with PyTorch on `device`."""

    def __init__(self, checkpoint: str, signature: DecoderSignature, device: str = "cpu", dtype: str = "float32",
                 threads: int = 0):
        from transformers import T5ForConditionalGeneration
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        self.torch, self.model = load_t5(T5ForConditionalGeneration, checkpoint, device, dtype, threads)
        self.model.encoder = None  # the encoder is served by its own model: do not hold its weights twice
        self.device, self.dtype = self.torch.device(device), getattr(self.torch, dtype)
        self._caches = (DynamicCache, EncoderDecoderCache)
        self.layers = cache_names(signature)
        if len(self.layers) != self.model.config.num_decoder_layers:
            raise ValueError(f"the decoder graph has {len(self.layers)} layers, the checkpoint "
                             f"{self.model.config.num_decoder_layers}: they are not the same model")

    def tensor(self, value: Any):
        """A feed value on this executor's device; floating point in its dtype."""
        tensor = value if isinstance(value, self.torch.Tensor) else self.torch.from_numpy(value)
        dtype = self.dtype if tensor.is_floating_point() else None
        return tensor.to(device=self.device, dtype=dtype, non_blocking=True)

    def __call__(self, feed: dict, outputs: list[str]) -> dict:
        dynamic, encoder_decoder = self._caches
        first = not bool(feed["use_cache_branch"][0])
        self_cache, cross_cache = dynamic(), dynamic()
        if not first:  # the cross-attention cache marks itself computed: the states are not read
            for index, names in enumerate(self.layers):
                for kind, part in (("decoder", self_cache), ("encoder", cross_cache)):
                    part.update(self.tensor(feed[names[f"{kind}.key"]]), self.tensor(feed[names[f"{kind}.value"]]), index)
        with self.torch.no_grad():  # not inference_mode: the decode batch fills holes in the cache in place
            out = self.model(encoder_outputs=(self.tensor(feed["encoder_hidden_states"]),),
                             attention_mask=self.tensor(feed["encoder_attention_mask"]),
                             decoder_input_ids=self.tensor(feed["input_ids"]),
                             decoder_attention_mask=self.tensor(feed["attention_mask"]),
                             past_key_values=encoder_decoder(self_cache, cross_cache), use_cache=True, return_dict=True)
        cache = out.past_key_values
        results = {"logits": out.logits}
        for index, names in enumerate(self.layers):
            for kind, part in (("decoder", cache.self_attention_cache), ("encoder", cache.cross_attention_cache)):
                layer = part.layers[index]
                results[DecoderSignature.present(names[f"{kind}.key"])] = layer.keys
                results[DecoderSignature.present(names[f"{kind}.value"])] = layer.values
        return {name: results[name] for name in outputs}
