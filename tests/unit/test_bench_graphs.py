"""The benchmarks' access to a repository's graphs (`bench.graphs`): where they are, the token ids
from the export manifest, and the median of timed decode steps."""
from __future__ import annotations

import json

import pytest

import bench.graphs
from bench.graphs import graph_path, median_step_ms, repository_tokens
from contract.names import DECODER, ENCODER, MANIFEST


def test_graph_paths_and_token_ids_come_from_the_repository(tmp_path):
    assert graph_path(tmp_path, ENCODER) == tmp_path / "t5_encoder" / "1" / "model.onnx"
    assert graph_path(tmp_path, DECODER) == tmp_path / "t5_decoder" / "1" / "model.onnx"
    (tmp_path / MANIFEST).write_text(json.dumps(
        {"token_ids": {"decoder_start": 0, "eos": 1, "pad": 0, "vocab_size": 32128}}))
    tokens = repository_tokens(tmp_path)
    assert (tokens.decoder_start, tokens.eos, tokens.pad) == (0, 1, 0)


def test_median_step_ms_takes_the_median_of_the_steps(monkeypatch):
    clock = iter([0.0, 0.002, 1.0, 1.030, 2.0, 2.012])  # steps of 2, 30 and 12 ms

    class Steps:  # stands in for a DecodeBatch: only its `step` is called
        calls = 0

        def step(self) -> None:
            self.calls += 1

    monkeypatch.setattr(bench.graphs, "perf_counter", lambda: next(clock))
    steps = Steps()
    assert median_step_ms(steps, 3) == pytest.approx(12)
    assert steps.calls == 3
