"""The GPU kit (`bench.gpu_kit`) carries the versions that `make test` runs with: every pin of
requirements/gpu-kit.txt is what .venv has installed."""
from __future__ import annotations

import importlib.metadata

from bench.gpu_kit import REQUIREMENTS


def test_the_kits_pins_are_the_tested_versions():
    pins = [line.split("==") for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert {name for name, _ in pins} >= {"numpy", "tritonclient", "grpcio", "protobuf"}
    for name, version in pins:
        assert importlib.metadata.version(name) == version, name
