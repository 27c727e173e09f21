"""Checkpoint → validated ONNX graphs (and TensorRT engines). Exports are kept per checkpoint
under `workdir_for(model)` and reused while the checkpoint is unchanged."""
from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT_WORKDIR = Path("build/onnx")


def workdir_for(model: str, root: Path = DEFAULT_WORKDIR) -> Path:
    """Where the export of `model` (a Hub id or a folder) is kept under `root`."""
    return root / model.strip("/").replace("/", "--")


def source_key(model: str) -> str:
    """Identifies a checkpoint's contents: the Hub id, or a local folder's path, sizes and mtimes."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return f"{folder.resolve()}:{hashlib.sha256(repr(stats).encode()).hexdigest()[:16]}"
