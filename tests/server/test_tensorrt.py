"""What of the TensorRT build can be checked without a GPU: the optimization profiles cover
every input of the exported graphs, the decode loop never sends a shape outside them, and the
build stops with a clear message here."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np

import pytest

from contract.limits import MAX_DECODER_PAST, MAX_NEW_TOKENS_CAP
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
        assert past[2][2] == MAX_DECODER_PAST, "cache up to the new-token cap plus the untrimmed padding"
        assert shapes["encoder_attention_mask"][2][1] == 512


def test_engine_build_explains_what_is_missing(tmp_path, repository):
    """No TensorRT or GPU here: a clear message and exit code 1, not a traceback."""
    result = subprocess.run([sys.executable, "-m", "export", "engines", "--model", "absent/model", "--workdir",
                             str(tmp_path), "--repository", str(tmp_path / "repo")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot build engines" in result.stderr and "run `make export` first" in result.stderr


def test_staggered_joins_stay_inside_the_profiles(repository, export_dir, prompts, tokens):
    """The gpu-tensorrt decode loop under rows joining at every step (12 at a time, 240 in all,
    limits up to the cap, answers stopping at different steps): every decoder call, routed to
    the engine it would run on, has shapes inside that engine's optimization profile."""
    import time

    from runtime.greedy import Sequence, split_feed
    from runtime.onnx_runtime import OrtSeq2Seq
    from runtime.scheduler import DecodeScheduler
    from serving.repository import TARGETS
    from tests.inputs import parity_pairs

    target = TARGETS["gpu-tensorrt"]
    profiles = {model: profile_shapes(symbolic_inputs(export_dir / ENGINES[model]), Limits())
                for model in ("t5_decoder_init", "t5_decoder")}
    runtime = OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))
    outside: list[str] = []
    calls = {"t5_decoder_init": 0, "t5_decoder": 0}

    def run(feed, outputs):
        first, routed = split_feed(feed, runtime.signature)
        model = "t5_decoder_init" if first else "t5_decoder"
        calls[model] += 1
        for name, value in routed.items():
            low, _, high = profiles[model][name]
            if not all(a <= d <= b for a, d, b in zip(low, value.shape, high)):
                outside.append(f"{model} {name} {list(value.shape)} outside {low}..{high}")
        return runtime.run_decoder(feed, outputs)

    states = []
    for pair in parity_pairs()[:24]:
        ids = np.array([prompts.encode(*pair)])
        states.append((runtime.encode(ids, np.ones_like(ids))[0], ids.shape[1]))
    done = threading.Semaphore(0)
    scheduler = DecodeScheduler(run, runtime.signature, tokens, lambda rows: [done.release() for _ in rows],
                                lambda rows, error: outside.append(f"failed: {error}"), target.max_active_rows,
                                target.max_queued_rows).start()
    try:
        for wave in range(20):
            scheduler.submit([Sequence(states[(wave + k) % len(states)][0].copy(),
                                       np.ones(states[(wave + k) % len(states)][1], np.int64),
                                       MAX_NEW_TOKENS_CAP - 7 * ((wave + k) % 3)) for k in range(12)])
            time.sleep(0.01)
        for _ in range(240):
            assert done.acquire(timeout=120)
    finally:
        scheduler.stop()
    assert not outside, outside[:5]
    assert calls["t5_decoder"] > MAX_NEW_TOKENS_CAP and calls["t5_decoder_init"] > 1
    assert scheduler.stats.row_steps / scheduler.stats.iterations > 12, "rows of many requests shared steps"
