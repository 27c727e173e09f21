"""What the build pipeline generates, in one list: `make clean` removes these, the tests copy
the model repository without them, and `.gitignore` must ignore them (a test checks it)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from contract.names import CHECKPOINT, ENGINE, GRAPH, MANIFEST, TOKENIZER_FILE

REPOSITORY = "model_repository"
# Relative to the model repository's root; everything else in it (the model.py files) is code.
# The tokenizer in any model folder, so that a model renamed since (t5_tokenize) leaves nothing behind.
GENERATED_IN_REPOSITORY = (MANIFEST, "*/config.pbtxt", f"*/1/*{Path(GRAPH).suffix}", f"*/1/*{Path(ENGINE).suffix}",
                           f"*/1/{Path(TOKENIZER_FILE).name}", f"{CHECKPOINT}/*")
BUILD = "build"  # checkpoints, exports, engines, benchmark and load-test scratch


def is_generated(relative: str | PurePosixPath) -> bool:
    """Whether a path relative to the repository root is generated (not code)."""
    path = PurePosixPath(relative)
    return any(path.match(pattern) and len(path.parts) == len(PurePosixPath(pattern).parts)
               for pattern in GENERATED_IN_REPOSITORY)


def generated_files(repository: Path) -> list[Path]:
    """The generated files present in `repository`."""
    return sorted(p for p in repository.rglob("*") if p.is_file() and is_generated(p.relative_to(repository).as_posix()))
