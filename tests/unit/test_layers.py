"""The test layers hold: every test file sits in tests/unit/, tests/server/ or tests/deploy/ and
`-m unit` selects exactly tests/unit/; the unit layer runs without torch and transformers (only
the tests that compare with `transformers` load it); no test file imports a conftest.py or
another test file (what tests share is in tests/helpers.py)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

TESTS = REPO_ROOT / "tests"
LAYERS = ("unit", "server", "deploy")
HEAVY = ("torch", "transformers")
# Fixtures whose tests may load torch: they compare with `transformers` itself.
NEEDS_TORCH = {"hf_tokenizer"}

# Runs the unit layer (this file left out) in a fresh interpreter; tests needing NEEDS_TORCH run
# last, so that every test before them is checked: torch and transformers are not even imported.
WATCHED_RUN = """
import json, sys
import pytest

HEAVY, NEEDS_TORCH = {heavy!r}, {needs_torch!r}

def loaded():
    return sorted(m for m in HEAVY if m in sys.modules)

class Watch:
    def __init__(self):
        self.report = {{"after_collection": None, "first_loaded_by": None, "deselected": 0, "items": []}}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: bool(NEEDS_TORCH & set(item.fixturenames)))

    def pytest_deselected(self, items):
        self.report["deselected"] += len(items)

    def pytest_collection_finish(self, session):
        self.report["after_collection"] = loaded()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        before = loaded()
        yield
        self.report["items"].append([item.nodeid, sorted(m.name for m in item.iter_markers()
                                                         if m.name in {layers!r}),
                                     sorted(NEEDS_TORCH & set(item.fixturenames))])
        if loaded() and not before:
            self.report["first_loaded_by"] = item.nodeid

watch = Watch()
code = pytest.main(sys.argv[1:], plugins=[watch])
print("WATCH " + json.dumps(watch.report))
sys.exit(code)
"""


def test_every_test_file_is_in_a_layer_folder():
    outside = [str(p.relative_to(REPO_ROOT)) for p in TESTS.rglob("test_*.py")
               if p.relative_to(TESTS).parts[0] not in LAYERS]
    assert not outside, f"test files outside tests/{{{','.join(LAYERS)}}}/: {outside}"
    for layer in LAYERS:
        assert (TESTS / layer / "__init__.py").is_file(), f"tests/{layer}/ is a package (unique module names)"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_file_imports_a_conftest_or_another_test_file():
    wrong = {}
    for path in TESTS.rglob("*.py"):
        bad = {m for m in imported_modules(path)
               if m.split(".")[-1] == "conftest" or m.split(".")[-1].startswith("test_")}
        if bad:
            wrong[str(path.relative_to(REPO_ROOT))] = sorted(bad)
    assert not wrong, f"import fixtures through conftest.py and helpers from tests.helpers: {wrong}"


def test_the_helpers_import_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", "import sys, tests.helpers, tests.inputs; "
                           f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]


def test_the_unit_layer_runs_without_torch(tmp_path):
    """`pytest -m unit tests/unit` in a fresh interpreter: nothing deselected, every test marked
    `unit` alone, no torch or transformers after collection (conftest.py, tests.helpers and the
    unit test modules imported), and the first test to load them is one that needs them."""
    script = WATCHED_RUN.format(heavy=HEAVY, needs_torch=NEEDS_TORCH, layers=set(LAYERS))
    done = subprocess.run([sys.executable, "-c", script, "-q", "-m", "unit", "tests/unit",
                           "--ignore", str(Path(__file__).relative_to(REPO_ROOT)), "--basetemp", str(tmp_path / "run")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.split("WATCH ", 1)[1])
    assert report["deselected"] == 0 and report["items"]
    assert report["after_collection"] == [], "importing the unit layer loads " + ", ".join(report["after_collection"])
    for nodeid, markers, _ in report["items"]:
        assert markers == ["unit"], (nodeid, markers)
    needing = {nodeid for nodeid, _, fixtures in report["items"] if fixtures}
    first = report["first_loaded_by"]
    assert first is None or first in needing, f"{first} loads torch or transformers without needing them"


def test_marker_unit_selects_exactly_the_unit_folder():
    """`-m unit` over the whole tree (the markers are set before `-m` selects)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "unit", "tests"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    selected = [line for line in done.stdout.splitlines() if "::" in line]
    folder = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/unit"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert folder.returncode == 0, folder.stdout[-5000:] + folder.stderr[-3000:]
    assert selected and sorted(selected) == sorted(line for line in folder.stdout.splitlines() if "::" in line)
