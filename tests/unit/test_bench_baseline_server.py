"""The benchmark's baseline server without CTranslate2 or a model: the ids ⇄ pieces vocabulary
(CTranslate2's T5 conversion repeats 28 piece names), the request queue and batches, the HTTP
contract with a stand-in decoder, and that the module imports no PyTorch (the server's memory)."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.baseline_server import (BatchingServer, Counters, Job, Vocabulary, batching_worker, handler, queued,
                                   run_batch, take_batch, unique_names)
from export import source_key
from tests.inputs import TOKENIZER_JSON


def test_unique_names_renames_only_later_repeats():
    assert unique_names(["<pad>", "a", "b", "a", "a"]) == ["<pad>", "a", "b", "<unused_3>", "<unused_4>"]
    assert unique_names(["x", "<unused_2>", "x"]) == ["x", "<unused_2>", "<unused_2>_"]


def test_t5_vocabulary_as_ctranslate2_converts_it_maps_every_id_back_to_itself():
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(TOKENIZER_JSON))
    size = tokenizer.get_vocab_size()  # 32100
    converted = [tokenizer.id_to_token(i) for i in range(size)] + [f"<extra_id_{i}>" for i in range(32128 - size)]
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary.of(converted)
    vocabulary = Vocabulary.of(unique_names(converted))
    assert vocabulary.pieces[:size] == tuple(converted[:size])  # the tokenizer's own pieces, untouched
    ids = list(range(32128))
    assert vocabulary.to_ids(vocabulary.to_pieces(ids)) == ids
    prompt = tokenizer.encode("question: Who?  context: Melville.").ids
    assert vocabulary.to_pieces(prompt)[-1] == "</s>" and vocabulary.to_pieces(prompt) == tokenizer.encode(
        "question: Who?  context: Melville.").tokens


def test_vocabulary_refuses_ids_outside_it():
    vocabulary = Vocabulary.of(["<pad>", "</s>", "a"])
    with pytest.raises(ValueError, match="out of range"):
        vocabulary.to_pieces([0, 3])
    with pytest.raises(ValueError, match="out of range"):
        vocabulary.to_pieces([-1])


def test_take_batch_waits_for_one_then_takes_what_is_queued_up_to_the_limit():
    jobs: queue.Queue = queue.Queue()
    threading.Timer(0.05, lambda: [jobs.put(Job([[i]], 4)) for i in range(5)]).start()
    first = take_batch(jobs, 3)
    assert 1 <= len(first) <= 3 and first[0].rows == [[0]]
    rest = []
    while len(first) + len(rest) < 5:
        rest += take_batch(jobs, 3)
    assert [j.rows[0][0] for j in first + rest] == [0, 1, 2, 3, 4]


def test_run_batch_one_call_per_length_rows_back_in_order():
    calls = []

    def translate(rows, max_new_tokens):
        calls.append((len(rows), max_new_tokens))
        return [[row[0] * 10] * max_new_tokens for row in rows]

    jobs = [Job([[1], [2]], 2), Job([[3]], 1), Job([[4]], 2)]
    counters = Counters()
    run_batch(jobs, translate, counters)
    assert calls == [(3, 2), (1, 1)]
    assert [j.output for j in jobs] == [[[10, 10], [20, 20]], [[30]], [[40, 40]]]
    assert all(j.done.is_set() and j.error is None for j in jobs)
    assert (counters.calls, counters.rows) == (2, 4)


def test_run_batch_answers_every_job_of_a_failed_call():
    def translate(rows, max_new_tokens):
        raise RuntimeError("boom")

    jobs = [Job([[1]], 2), Job([[2]], 2)]
    run_batch(jobs, translate, Counters())
    assert all(j.done.is_set() and j.output is None and "boom" in j.error for j in jobs)


@pytest.fixture
def batching_server():
    """The ctranslate2 engine's HTTP server and queue around a slow stand-in decoder."""
    batches = []

    def translate(rows, max_new_tokens):
        batches.append(len(rows))
        time.sleep(0.1)  # requests arriving meanwhile queue up for the next batch
        return [row[:max_new_tokens] for row in rows]

    jobs: queue.Queue = queue.Queue()
    counters = Counters()
    threading.Thread(target=batching_worker, args=(jobs, translate, 4, counters), daemon=True).start()
    server = BatchingServer(("127.0.0.1", 0), handler(queued(jobs), counters))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", batches
    server.shutdown()
    server.server_close()


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/generate", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(batching_server):
    url, batches = batching_server
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: post(url, {"input_ids": [[i, i + 1, i + 2]], "max_new_tokens": 2}),
                                range(10)))
    assert answers == [{"output_ids": [[i, i + 1]]} for i in range(10)]
    assert sum(batches) == 10 and max(batches) > 1 and max(batches) <= 4
    with urllib.request.urlopen(url + "/stats", timeout=10) as r:
        assert json.loads(r.read()) == {"calls": len(batches), "rows": 10}


@pytest.mark.parametrize("body", [{"input_ids": [[1, 2]], "max_new_tokens": 0}, {"input_ids": []},
                                  {"input_ids": [["a"]], "max_new_tokens": 2}])
def test_bad_requests_get_400(batching_server, body):
    url, _ = batching_server
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(url, body)
    assert caught.value.code == 400


def test_source_key_follows_the_checkpoint_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    before = source_key(str(tmp_path))
    assert source_key(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"12")
    assert source_key(str(tmp_path)) != before
    assert source_key("org/model") == "org/model"


def test_module_loads_neither_torch_nor_ctranslate2():
    code = "import sys, bench.baseline_server; print(sorted({'torch', 'ctranslate2'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
