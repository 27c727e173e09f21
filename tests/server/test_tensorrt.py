"""What of the TensorRT build can be checked without a GPU: the optimization profiles cover
every input of the exported graphs, and the build stops with a clear message here."""
from __future__ import annotations

import subprocess
import sys

import pytest

from export.tensorrt import ENGINES, Limits, profile_shapes, symbolic_inputs
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("model", sorted(ENGINES))
def test_profiles_cover_every_input(repository, export_dir, model):  # repository: exports first
    inputs = symbolic_inputs(export_dir / ENGINES[model])
    shapes = profile_shapes(inputs, Limits(max_batch=64))
    assert set(shapes) == set(inputs)
    for name, (low, opt, high) in shapes.items():
        assert len(low) == len(inputs[name])
        assert all(1 <= a <= b <= c for a, b, c in zip(low, opt, high)), name
        assert high[0] == 64 and low[0] == 1, "batch 1..max"
    if model == "t5_decoder":
        past = shapes["past_key_values.0.decoder.key"]
        mask = shapes["attention_mask"]
        assert [past[i][2] + 1 for i in range(3)] == [mask[i][1] for i in range(3)], "mask spans past + 1"
        assert past[2][2] == 64, "cache up to the new-token cap"
        assert shapes["encoder_attention_mask"][2][1] == 512


def test_engine_build_explains_what_is_missing(tmp_path, repository):
    """No TensorRT or GPU here: a clear message and exit code 1, not a traceback."""
    result = subprocess.run([sys.executable, "-m", "export", "engines", "--model", "absent/model", "--workdir",
                             str(tmp_path), "--repository", str(tmp_path / "repo")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot build engines" in result.stderr and "run `make export` first" in result.stderr
