"""Config limits that must agree with what the engines were built for, on the test export's
manifest: the gpu-tensorrt repository takes exactly the engines' batch limit, other targets keep
their range. Without an export: `tests/unit/test_config_limits.py`."""
from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract.limits import TENSORRT_MAX_BATCH
from serving import repository as repository_cli


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


def test_cli_prints_the_cuda_pool_for_the_exported_model(repository, capsys):
    """`--cuda-pool-bytes`: what `make serve` passes for a GPU target, from the export's dims;
    BLS targets hold a whole step's cache (more rows, more pool), cpu needs none."""
    sizes = {}
    for target in ("cpu", "gpu-tensorrt", "gpu-onnxruntime"):
        assert repository_cli.main(["--target", target, "--repository", str(repository), "--cuda-pool-bytes"]) == 0
        sizes[target] = int(capsys.readouterr().out)
        assert sizes[target] == repository_cli.cuda_pool_for(repository, target)
    assert sizes["cpu"] == 0 < sizes["gpu-tensorrt"] < sizes["gpu-onnxruntime"]
    assert sizes["gpu-tensorrt"] % (1 << 20) == 0
