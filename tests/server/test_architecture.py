"""The generated files (listed once in `contract.files`) on a built repository: a copy of its
code holds none of them, and `clean` removes exactly them. The layers themselves, read from the
source: `tests/unit/test_architecture.py`."""
from __future__ import annotations

import shutil


def test_copying_the_repository_keeps_code_only(tmp_path, repository):
    """The built test repository holds generated files; a copy of its code holds none."""
    from contract.files import generated_files
    from serving.pipeline import copy_code

    assert generated_files(repository), "the built repository has configs, graphs, a manifest"
    copy = copy_code(repository, tmp_path / "copy")
    assert not generated_files(copy)
    assert sorted(p.relative_to(copy) for p in copy.rglob("model.py")) == \
        sorted(p.relative_to(repository) for p in repository.rglob("model.py"))


def test_clean_removes_what_build_generated(tmp_path, repository):
    from contract.files import generated_files
    from serving.pipeline import clean

    copy = tmp_path / "repository"
    shutil.copytree(repository, copy)
    removed = clean(copy)
    assert removed and not generated_files(copy) and list(copy.rglob("model.py"))
