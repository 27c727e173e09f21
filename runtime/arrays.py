"""The few array operations the decode batch applies to device-sized data (encoder states,
the key/value cache, logits), for NumPy on the host and for PyTorch tensors wherever they
live. With `TorchArrays` on a CUDA device the cache never leaves the GPU: `t5_greedy` on the
GPU targets exchanges tensors with the decoder model through DLPack. Masks, token ids and
bookkeeping stay small host NumPy arrays in both cases."""
from __future__ import annotations

from typing import Any

import numpy as np


class NumpyArrays:
    """Host arrays (cpu target, export validation)."""

    name = "numpy"

    @staticmethod
    def stack(arrays: list) -> np.ndarray:
        return np.stack(arrays)

    @staticmethod
    def cat(arrays: list, axis: int = 0) -> np.ndarray:
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def pad(array: np.ndarray, axis: int, width: int, left: bool = False) -> np.ndarray:
        """Zero-pad `axis` up to `width` (on the left if `left`)."""
        extra = width - array.shape[axis]
        if extra <= 0:
            return array
        padding = [(0, 0)] * array.ndim
        padding[axis] = (extra, 0) if left else (0, extra)
        return np.pad(array, padding)

    @staticmethod
    def zeros(shape: tuple, like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def contiguous(array: np.ndarray) -> np.ndarray:
        """A compact copy of a view (what a graph call would otherwise copy at every step)."""
        return np.ascontiguousarray(array)

    @staticmethod
    def argmax(logits: np.ndarray) -> list[int]:
        return logits.argmax(axis=-1).tolist()

    @staticmethod
    def log_probs(logits: np.ndarray, chosen: list[int]) -> list[float]:
        """Log-probability of each row's `chosen` token: exponentials in float32 (5x faster
        than float64 over a 32k vocabulary, on the hot path), their sum in float64."""
        top = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=-1, dtype=np.float64))
        picked = (logits[np.arange(len(chosen)), chosen] - top[:, 0]).astype(np.float64) - log_norm
        return picked.tolist()


class TorchArrays:
    """PyTorch tensors on their own device (GPU targets; tested on the CPU)."""

    name = "torch"

    def __init__(self) -> None:
        import torch  # only where the GPU path runs
        self.torch = torch

    def stack(self, arrays: list) -> Any:
        return self.torch.stack(arrays)

    def cat(self, arrays: list, axis: int = 0) -> Any:
        return self.torch.cat(arrays, dim=axis)

    def pad(self, array: Any, axis: int, width: int, left: bool = False) -> Any:
        extra = width - array.shape[axis]
        if extra <= 0:
            return array
        spec = [0, 0] * (array.ndim - axis - 1) + ([extra, 0] if left else [0, extra])
        return self.torch.nn.functional.pad(array, spec)

    def zeros(self, shape: tuple, like: Any) -> Any:
        return self.torch.zeros(shape, dtype=like.dtype, device=like.device)

    def contiguous(self, array: Any) -> Any:
        return array.contiguous()

    def argmax(self, logits: Any) -> list[int]:
        return logits.argmax(dim=-1).tolist()

    def log_probs(self, logits: Any, chosen: list[int]) -> list[float]:
        index = self.torch.tensor(chosen, device=logits.device)[:, None]
        return self.torch.log_softmax(logits.float(), dim=-1).gather(-1, index)[:, 0].double().tolist()
