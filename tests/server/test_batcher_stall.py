"""No request is parked by Triton's dynamic batcher on its way to the decode loop.

Triton 2.51's dynamic batcher (core `dynamic_batch_scheduler.cc`) wakes its thread on an
arrival only while a model instance is free; a request that arrives while the model's one
instance executes can wait for the batcher's timed check of an empty queue, 500 ms
(`default_wait_microseconds`). Measured on `t5_validate` with dynamic batching (8 closed-loop
callers, calls of ~2 ms): 34-40 calls in 6 s took 500 ms. In the served ensemble at 16 clients
about half of each cohort of returning clients reached `t5_greedy` 0.5 to 2.5 s late. The Python steps
(`t5_validate`, `t5_greedy`) batch nothing that needs Triton (a check per request, a submit to
the scheduler), so their configs have no dynamic batcher (`serving.repository`).

The bound below is not a speed target: these calls take milliseconds, and the defect is a call
that waits 500 ms with nothing to do.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import tritonclient.grpc as grpc
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract.names import GREEDY, VALIDATE

CALLERS = 8
SECONDS = 4.0
STALL_S = 0.4  # well above any call here (milliseconds), below the batcher's 500 ms check


def closed_loop(url: str, model: str, inputs: dict[str, np.ndarray]) -> list[float]:  # INT64 inputs
    """`CALLERS` threads calling `model` back to back for `SECONDS`; every call's latency."""
    latencies: list[float] = []
    errors: list[Exception] = []
    stop = time.monotonic() + SECONDS

    def caller() -> None:
        with grpc.InferenceServerClient(url) as c:
            tensors = []
            for name, array in inputs.items():
                tensor = grpc.InferInput(name, array.shape, "INT64")
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    c.infer(model, tensors)
                except Exception as error:  # noqa: BLE001 - reported below, with the model
                    errors.append(error)
                    return
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{model}: {errors[0]}"
    return latencies


def test_the_python_steps_have_no_dynamic_batcher(repository):
    for model in (VALIDATE, GREEDY):
        config = text_format.Parse((repository / model / "config.pbtxt").read_text(), mc.ModelConfig())
        assert not config.HasField("dynamic_batching"), model


def test_no_call_waits_for_the_batchers_timed_check(server, prompts):
    """Fails with the batcher: 9 of 12,801 calls took 0.50 s in one run of the old config."""
    ids = np.array([prompts.encode("What is it?", "It is a test.")], dtype=np.int64)
    latencies = closed_loop(f"127.0.0.1:{server.ports.grpc}", VALIDATE,
                            {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    stalled = sorted(s for s in latencies if s > STALL_S)
    assert len(latencies) > 10 * CALLERS, f"only {len(latencies)} calls in {SECONDS} s"
    assert not stalled, (f"{len(stalled)} of {len(latencies)} calls took over {STALL_S} s "
                         f"({', '.join(f'{s:.3f}' for s in stalled[:5])} s; median "
                         f"{1000 * float(np.median(latencies)):.1f} ms)")
