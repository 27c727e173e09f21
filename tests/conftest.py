"""The test layers and what they share. Each test is marked by the folder it lives in:

* `unit/`: no tritonserver, no export; torch and transformers only where a test needs them
  (`pytest -m unit`, `make test-unit`);
* `server/`: builds and exports a tiny T5 and runs real tritonservers over it (fixtures in
  `server/conftest.py`);
* `deploy/`: the Helm chart and Kubernetes checks (`make test-deploy`).

Fixtures only; what tests share besides fixtures is in `tests/helpers.py`. This file imports
nothing heavy, so that the unit layer never loads torch."""
from __future__ import annotations

from pathlib import Path

import pytest

from client.tokenizer import load_tokenizer
from contract.prompt import PromptEncoder
from tests.inputs import TOKENIZER_JSON

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "server", "deploy")
# torch's tracer warns while exporting; the category names a torch class, so only the layer that
# exports asks for it (an ini filter would import torch in every layer).
SERVER_WARNING_FILTERS = ("ignore::torch.jit.TracerWarning",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test with its layer (its folder under tests/), before `-m` selects."""
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        layer = parts[0] if len(parts) > 1 else None
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of the layer folders "
                                    f"{', '.join(f'tests/{name}/' for name in LAYERS)}")
        item.add_marker(getattr(pytest.mark, layer))
        if layer == "server":
            for warning_filter in SERVER_WARNING_FILTERS:
                item.add_marker(pytest.mark.filterwarnings(warning_filter))


@pytest.fixture(scope="session")
def prompts() -> PromptEncoder:
    return PromptEncoder.from_tokenizer(load_tokenizer(str(TOKENIZER_JSON)))
