"""Handing the heap's free pages back to the OS: glibc keeps memory a process has freed (the
decode loop's activations, caches and logits of every size) mapped for reuse, so a server
stays at its peak resident size after a burst of load. `malloc_trim(0)` releases the free
pages of every arena; `t5_greedy` calls it when its scheduler goes idle."""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Give the heap's free pages back to the OS; whether any were (False without glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
