"""`runtime.memory.release_free_heap`: memory freed in the middle of glibc's heap stays
resident until it is trimmed; the call hands it back to the OS."""
from __future__ import annotations

import os

from runtime.memory import release_free_heap


def rss_kib() -> int:
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_heap_memory_stays_resident_until_released():
    blocks = [bytearray(b"x" * 64 * 1024) for _ in range(2048)]  # 128 MiB in blocks glibc takes from the heap
    keep = bytearray(b"x" * 64 * 1024)  # above them: the freed space is not the heap's top, glibc keeps it
    del blocks
    freed = rss_kib()
    assert release_free_heap()
    released = rss_kib()
    assert freed - released > 100 * 1024, f"RSS {freed} KiB before the release, {released} KiB after"
    del keep
