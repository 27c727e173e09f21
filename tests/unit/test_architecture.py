"""The code's layers follow the process boundary (read from the source, nothing imported):
the contract at the bottom, the in-stub runtime on it, host-side layers above, and no package
imports one above it or the tests; generated files are listed once and `.gitignore` agrees.
(`build` and `clean` on a built repository: `tests/server/test_architecture.py`.)"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from contract.files import GENERATED_IN_REPOSITORY, REPOSITORY
from tests.helpers import REPO_ROOT

PACKAGES = ("contract", "runtime", "client", "shared_data", "export", "evaluation", "serving", "loadtest", "bench",
            "tests")
MODELS = "model_repository"  # the model.py files Triton's stub runs
# What each layer may import from the project, besides itself. Host layers, bottom to top.
ALLOWED = {
    "contract": set(),
    "runtime": {"contract"},
    MODELS: {"contract", "runtime"},
    "client": {"contract"},
    "shared_data": set(),
    "export": {"contract", "runtime", "shared_data"},
    "evaluation": {"contract", "client", "shared_data", "export"},
    "serving": {"contract", "client", "shared_data", "export"},
    "loadtest": {"contract", "client", "shared_data", "serving"},
    "bench": {"contract", "runtime", "client", "shared_data", "export", "serving"},
    "tests": set(PACKAGES) | {MODELS},
}


def layer_of(path: Path) -> str:
    return MODELS if path.parts[0] == MODELS else path.parts[0]


def project_imports(path: Path) -> set[str]:
    """The project's top-level packages that `path` imports (at module level or in functions)."""
    found = set()
    for node in ast.walk(ast.parse((REPO_ROOT / path).read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


def sources() -> list[Path]:
    files = [p.relative_to(REPO_ROOT) for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")]
    files += [p.relative_to(REPO_ROOT) for p in (REPO_ROOT / MODELS).glob("*/1/model.py")]
    return [f for f in files if "__pycache__" not in f.parts]


@pytest.mark.parametrize("path", sources(), ids=str)
def test_imports_stay_within_the_layers_below(path):
    layer = layer_of(path)
    upward = project_imports(path) - ALLOWED[layer] - {layer}
    assert not upward, f"{path} ({layer}) imports {sorted(upward)}"


def test_the_layers_have_no_cycle():
    graph = {layer: allowed - {layer} for layer, allowed in ALLOWED.items() if layer != "tests"}
    done: set[str] = set()

    def visit(layer: str, path: tuple[str, ...]) -> None:
        assert layer not in path, f"cycle: {' -> '.join(path + (layer,))}"
        if layer not in done:
            for lower in graph[layer]:
                visit(lower, path + (layer,))
            done.add(layer)

    for layer in graph:
        visit(layer, ())


def test_gitignore_ignores_exactly_the_generated_files():
    lines = [line.strip() for line in (REPO_ROOT / ".gitignore").read_text().splitlines()]
    ignored = sorted(line[len(REPOSITORY) + 1:] for line in lines if line.startswith(f"{REPOSITORY}/"))
    assert ignored == sorted(GENERATED_IN_REPOSITORY)
