"""Config limits that must agree with what the engines were built for: the gpu-tensorrt repository
may not promise batches larger than the TensorRT engines' optimization profiles cover."""
from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.tensorrt import Limits, profile_shapes
from serving import repository as repository_cli
from contract.limits import TENSORRT_MAX_BATCH


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


def _max_batch(path) -> int:
    return text_format.Parse(path.read_text(), mc.ModelConfig()).max_batch_size


def test_cli_accepts_the_engine_limit_and_other_targets_keep_their_range(repository, tmp_path):
    """With the real export manifest: gpu-tensorrt at exactly the limit writes configs with that
    batch; gpu-onnxruntime (no engine profiles) still takes up to its max_active_rows."""
    manifest = (repository / "export_manifest.json").read_text()
    trt, ort = tmp_path / "trt", tmp_path / "ort"
    for folder in (trt, ort):
        folder.mkdir()
        (folder / "export_manifest.json").write_text(manifest)

    assert repository_cli.main(["--target", "gpu-tensorrt", "--repository", str(trt),
                                "--max-batch-size", str(TENSORRT_MAX_BATCH)]) == 0
    assert _max_batch(trt / "t5_encoder" / "config.pbtxt") == TENSORRT_MAX_BATCH
    assert _max_batch(trt / "t5_qa" / "config.pbtxt") == TENSORRT_MAX_BATCH

    rows = repository_cli.TARGETS["gpu-onnxruntime"].max_active_rows
    assert rows > TENSORRT_MAX_BATCH
    assert repository_cli.main(["--target", "gpu-onnxruntime", "--repository", str(ort),
                                "--max-batch-size", str(rows)]) == 0
    assert _max_batch(ort / "t5_encoder" / "config.pbtxt") == rows
