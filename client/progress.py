"""A tiny progress bar on stderr (no dependency): redrawn in place on a terminal, one line per
10 % otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, label: str = "questions", stream: TextIO | None = None, width: int = 30):
        self.total, self.label, self.width = max(total, 1), label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._decile = -1

    def update(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        now = time.monotonic()
        if self.tty and (now - self._drawn_at >= 0.1 or self.done == self.total):
            self._drawn_at = now
            self.stream.write("\r" + self.line())
        elif not self.tty and self.done * 10 // self.total > self._decile:
            self._decile = self.done * 10 // self.total
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        filled = self.width * self.done // self.total
        eta = f"  eta {(self.total - self.done) / rate:.0f} s" if rate and self.done < self.total else ""
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.label}"
                f"  {rate:.1f}/s{eta}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
