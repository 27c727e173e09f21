"""What the test layers share (fixtures live in the conftest.py files, helpers here): paths, free
loopback ports, the PyTorch reference's tokens, the build pipeline into a fresh repository, a
started tritonserver, a raw request to the text endpoint, a connection-dropping listener, and a
stand-in for the requests a decode scheduler answers.

Only the standard library is imported at module level, so that unit tests importing this module
stay light: torch, transformers, the export and serving code are imported inside the helpers
that need them."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from transformers import T5ForConditionalGeneration

    from serving.server import TritonServer

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_REPOSITORY = REPO_ROOT / "model_repository"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# --- a decode scheduler's requests -----------------------------------------------------------------

class Owner:
    """A row's request as the scheduler sees it: done when answered, failed with an error,
    cancelled when the test says so."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None
        self.cancelled = False


def finished(rows: list) -> None:
    """A scheduler's `on_finished`: every row's owner is done."""
    for row in rows:
        row.owner.done.set()


def failed(rows: list, error: Exception) -> None:
    """A scheduler's `on_failed`: every row's owner is done, with the error."""
    for row in rows:
        row.owner.error = str(error)
        row.owner.done.set()


# --- the PyTorch reference ---------------------------------------------------------------------

def hf_generate(model: T5ForConditionalGeneration, input_ids: np.ndarray, attention_mask: np.ndarray,
                max_new_tokens: int) -> np.ndarray:
    """Reference tokens (`export.reference`: greedy `generate`), without the decoder start token."""
    from export.reference import greedy_reference

    return greedy_reference(model, input_ids, attention_mask, max_new_tokens).tokens


def expected_tokens(row: np.ndarray) -> tuple[int, ...]:
    """`generate`'s tokens up to and including `</s>` (1), as the server returns them."""
    tokens = [int(t) for t in row]
    return tuple(tokens[: tokens.index(1) + 1] if 1 in tokens else tokens)


# --- model repositories and servers ----------------------------------------------------------

def copy_model_code(root: Path) -> Path:
    """A fresh model repository holding only the committed model code."""
    from serving.pipeline import copy_code

    return copy_code(SOURCE_REPOSITORY, root / "model_repository")


def build_repository(checkpoint: Path, root: Path, exports: Path | None = None,
                     decoder_mode: str | None = None, executor: str | None = None) -> Path:
    """The build pipeline into a fresh copy of the repository's model code (reusing an export
    of the same checkpoint under `exports`)."""
    from serving.pipeline import build

    repository = copy_model_code(root)
    build(str(checkpoint), repository, "cpu", exports or root / "onnx", decoder_mode=decoder_mode, executor=executor)
    return repository


def start_server(repository: Path, log_file: Path) -> TritonServer:
    from serving.server import Ports, TritonServer

    server = TritonServer(repository, Ports(*free_ports(3)), address="127.0.0.1", exit_timeout_s=10,
                          log_file=log_file)
    server.start()
    try:
        server.wait_ready(timeout_s=180)
    except Exception:
        server.stop()
        print(log_file.read_text()[-5000:])
        raise
    return server


# --- requests ----------------------------------------------------------------------------------

def text_infer(raw, pairs: list[tuple], max_new_tokens: int | None = None, threshold: float | None = None):
    """(answers, scores, no_answer) of one t5_qa_text request through `raw`, a
    `tritonclient.grpc.InferenceServerClient`."""
    import numpy as np
    import tritonclient.grpc as grpc

    def strings(values: list) -> np.ndarray:
        return np.array([[v if isinstance(v, bytes) else v.encode("utf-8")] for v in values], dtype=np.object_)

    arrays = {"question": strings([q for q, _ in pairs]), "context": strings([c for _, c in pairs])}
    if max_new_tokens is not None:
        arrays["max_new_tokens"] = np.full((len(pairs), 1), max_new_tokens, np.int32)
    if threshold is not None:
        arrays["no_answer_threshold"] = np.full((len(pairs), 1), threshold, np.float32)
    inputs = []
    for name, value in arrays.items():
        tensor = grpc.InferInput(name, list(value.shape), {np.dtype(np.int32): "INT32",
                                                          np.dtype(np.float32): "FP32"}.get(value.dtype, "BYTES"))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = raw.infer("t5_qa_text", inputs)
    answers = [a.decode("utf-8") for a in result.as_numpy("answer").reshape(-1)]
    return answers, result.as_numpy("score").reshape(-1), result.as_numpy("no_answer").reshape(-1)


@contextlib.contextmanager
def dropping_listener(max_connections: int | None = None, max_seconds: float | None = None):
    """A loopback listener (its url) that reads each request and closes the connection, as a
    crashing or restarting server does; it stops accepting after `max_connections` connections
    or `max_seconds` seconds when given."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def drop_connections() -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        accepted = 0
        while not stop.is_set() and (max_connections is None or accepted < max_connections) \
                and (deadline is None or time.monotonic() <= deadline):
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted += 1
            connection.recv(65536)
            connection.close()

    dropper = threading.Thread(target=drop_connections, daemon=True)
    dropper.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        dropper.join(5)
        listener.close()


def metric(server: "TritonServer", name: str) -> float:
    """One value of the server's Prometheus metrics (labels ignored)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5).read().decode()
    return float(re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M).group(1))
