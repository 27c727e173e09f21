"""Config limits that must agree with what the engines were built for: the gpu-tensorrt repository
may not promise batches larger than the TensorRT engines' optimization profiles cover. (The
repository CLI on a real export manifest: `tests/server/test_config_limits.py`.)"""
from __future__ import annotations

import pytest

from export.tensorrt import Limits, profile_shapes
from serving import repository as repository_cli
from contract.limits import TENSORRT_MAX_BATCH
from tests.helpers import REPO_ROOT


def test_engine_profiles_end_at_the_limit_the_repository_enforces():
    """export/tensorrt.py builds its profiles up to the same number write_repository checks."""
    assert Limits().max_batch == TENSORRT_MAX_BATCH
    shapes = profile_shapes({"input_ids": ["batch_size", "encoder_sequence_length"]}, Limits())
    low, _, high = shapes["input_ids"]
    assert (low[0], high[0]) == (1, TENSORRT_MAX_BATCH)


@pytest.mark.parametrize("batch", [TENSORRT_MAX_BATCH + 1, 128])
def test_cli_refuses_tensorrt_batch_beyond_the_engine_profiles(tmp_path, capsys, batch):
    """128 is within gpu-tensorrt's max_active_rows, but not within the engines' batch range.
    The refusal comes before any config is built, so an empty manifest is enough here."""
    (tmp_path / "export_manifest.json").write_text("{}")
    code = repository_cli.main(["--target", "gpu-tensorrt", "--repository", str(tmp_path),
                                "--max-batch-size", str(batch)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"max batch size {batch} exceeds {TENSORRT_MAX_BATCH}" in err
    assert "TensorRT engines' optimization profiles" in err
    assert not list(tmp_path.rglob("config.pbtxt")), "nothing is written for a refused config"


def test_the_charts_cuda_pool_is_the_size_computed_for_t5_base():
    """One computation sizes Triton's CUDA pool (`serving.repository.cuda_pool_bytes`): `make
    serve` passes it for the exported model, and the chart's default is its value for t5-base
    on gpu-tensorrt. BLS moves a step's whole cache, so the pool holds it at the row cap."""
    import yaml

    from contract.graphs import DecoderSignature
    from serving.repository import TARGETS, cuda_pool_bytes

    values = yaml.safe_load((REPO_ROOT / "deploy/helm/t5-qa/values.yaml").read_text())
    t5_base = DecoderSignature(tuple(f"past_key_values.{layer}.{part}.{kind}" for layer in range(12)
                                     for part in ("decoder", "encoder") for kind in ("key", "value")),
                               num_heads=12, head_dim=64, d_model=768)
    pool = cuda_pool_bytes(TARGETS["gpu-tensorrt"], 768, t5_base)
    assert values["server"]["cudaMemoryPoolByteSize"] == pool
    cross_cache_in_and_out = 2 * 24 * 64 * 12 * 512 * 64 * 4  # 24 cross K/V tensors at 64 rows and 512 positions
    assert cross_cache_in_and_out < pool < 2 * cross_cache_in_and_out
    assert cuda_pool_bytes(TARGETS["cpu"], 768, t5_base) == 0
