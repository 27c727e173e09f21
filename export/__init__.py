"""Checkpoint → validated ONNX graphs (and TensorRT engines). Exports are kept per checkpoint
under `workdir_for(model)` and reused while the checkpoint is unchanged."""
from __future__ import annotations

from pathlib import Path

DEFAULT_WORKDIR = Path("build/onnx")


def workdir_for(model: str, root: Path = DEFAULT_WORKDIR) -> Path:
    """Where the export of `model` (a Hub id or a folder) is kept under `root`."""
    return root / model.strip("/").replace("/", "--")
