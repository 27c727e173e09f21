"""`make serve`'s program end to end: demo fallback with a banner, readiness, a demo answer,
the client CLI against it, and a clean shutdown on SIGTERM. (A GPU target on a host without
Docker or a GPU: `tests/unit/test_serve.py`.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import REPO_ROOT, copy_model_code, free_ports


def test_serve_falls_back_to_demo_answers_and_stops_cleanly(tmp_path):
    repository = copy_model_code(tmp_path)
    http, grpc, metrics = free_ports(3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    serve = subprocess.Popen(
        [sys.executable, "-m", "serving.serve", "--model", "no-such-org/no-such-model", "--demo-fallback", "tiny",
         "--repository", str(repository), "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics), "--exit-timeout", "5"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            assert line or serve.poll() is None, f"serve exited: {serve.stderr.read()[-3000:]}"
            lines.append(line)
            if line.startswith("Ask:"):
                break
        output = "".join(lines)
        assert f"Ready. gRPC localhost:{grpc}" in output
        assert "\nA: " in output and "demo model" in output

        ask = subprocess.run(
            [sys.executable, "-m", "client", "ask", "--question", "Who wrote it?", "--context", "Melville wrote it.",
             "--url", f"127.0.0.1:{grpc}", "--max-new-tokens", "4"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # finds the served tokenizer there
        assert ask.returncode == 0, ask.stderr
        assert ask.stdout.strip()
        assert "DEMO model" in ask.stderr
        empty = subprocess.run([sys.executable, "-m", "client", "ask", "--question", "", "--context", "x",
                                "--url", f"127.0.0.1:{grpc}"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
        assert empty.returncode == 2 and "question is empty" in empty.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=120)
    assert serve.returncode == 0, err[-3000:]
    assert "tritonserver stopped (exit code 0)" in out
    assert "SERVING A DEMO MODEL" in err and "no-such-org/no-such-model" in err


def serve_command(repository, model: str, ports: list[int], *extra: str) -> list[str]:
    http, grpc, metrics = ports
    return [sys.executable, "-m", "serving.serve", "--model", model, "--demo-fallback", "none",
            "--repository", str(repository), "--workdir", str(repository.parent / "onnx"), "--http-port", str(http),
            "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--exit-timeout", "5", *extra]


def test_serve_a_checkpoint_folder_and_ask_it(tmp_path):
    """`make serve MODEL=<folder>` with a checkpoint as trained ones behave (logits in the
    hundreds, answers ending at different steps) in the seed's 2020 layout (pytorch_model.bin,
    spiece.model only): `python -m client ask` answers what the PyTorch reference decodes."""
    import numpy as np
    from transformers import T5ForConditionalGeneration

    from client.tokenizer import load_tokenizer
    from contract.prompt import PromptEncoder
    from export.demo_model import build_demo_model
    from export.reference import greedy_reference
    from tests.inputs import TOKENIZER_JSON, parity_pairs

    checkpoint = build_demo_model("tiny", tmp_path / "my-checkpoint", seed=1, weights="bin",
                                  tokenizer_format="spiece.model", realistic=True)
    repository = copy_model_code(tmp_path)
    ports = free_ports(3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    serve = subprocess.Popen(serve_command(repository, str(checkpoint), ports), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            assert line or serve.poll() is None, f"serve exited: {serve.stderr.read()[-3000:]}"
            if line.startswith("Ask:"):
                break
        model = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
        prompts = PromptEncoder.from_tokenizer(load_tokenizer(str(TOKENIZER_JSON)))
        lengths = set()
        fitting = [pair for pair in parity_pairs() if len(prompts.tokens(*pair).ids) <= prompts.max_tokens]
        for question, context in fitting[:6]:
            ids = np.array([prompts.encode(question, context)])
            reference = greedy_reference(model, ids, np.ones_like(ids), 32)
            lengths.add(int(reference.lengths[0]))
            ask = subprocess.run([sys.executable, "-m", "client", "ask", "--question", question, "--context", context,
                                  "--url", f"127.0.0.1:{ports[1]}"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert ask.returncode == 0, ask.stderr
            expected = prompts.decode(reference.answer(0)) or "(no answer)"
            assert ask.stdout.splitlines()[0] == expected
        assert len(lengths) > 1, "answers should end at different steps"
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=120)
    assert serve.returncode == 0, err[-3000:]
    assert "SERVING A DEMO MODEL" not in err


def test_a_checkpoint_failing_validation_is_never_served(tmp_path, checkpoint):
    """No tolerance at all: float32 differences fail validation, and serve stops with the message."""
    repository = copy_model_code(tmp_path)
    ports = free_ports(3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(serve_command(repository, str(checkpoint), ports, "--atol", "0", "--rtol", "0"),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"export failed validation, not serving {checkpoint}: prompt 0" in result.stderr
    assert "exceeds 0 " in result.stderr
    assert not list(repository.glob("*/config.pbtxt")) and not (repository / "export_manifest.json").exists()
    assert "tritonserver" not in result.stdout
