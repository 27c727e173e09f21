"""What users run before this project, as the benchmark's baselines (not for production):

* `transformers` and `optimum`: a one-request-at-a-time HTTP server around `transformers`
  `generate` or Optimum's `ORTModelForSeq2SeqLM.generate` (greedy); requests are served strictly
  in turn.
* `ctranslate2`: CTranslate2's `Translator` (`--compute-type float32` or `int8`, CPU, all cores
  to one translation), with its own batching: HTTP handler threads queue their requests, one
  worker thread takes everything queued (up to `--max-batch` requests) and decodes it in one
  greedy `translate_batch`. The checkpoint is converted once with CTranslate2's converter (in a
  child process, so that the server's memory holds no PyTorch) and kept in `--ct2-dir`.

  python -m bench.baseline_server --engine transformers --model build/models/demo-base --port 9000
  python -m bench.baseline_server --engine ctranslate2 --compute-type int8 --model build/models/demo-base \\
      --ct2-dir build/bench/ct2-int8-build--models--demo-base --port 9001

POST /generate {"input_ids": [[...]], "max_new_tokens": 16} -> {"output_ids": [[...]]}
(new tokens only, without the decoder start token, `</s>` included when the answer ends with it;
at most `max_new_tokens` tokens, `</s>` counted, as `generate` counts them).
GET /stats -> {"calls": ..., "rows": ...}: decoding calls so far and the rows they decoded.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from export import source_key

ENGINES = ("transformers", "optimum", "ctranslate2")
COMPUTE_TYPES = ("float32", "int8")
VOCABULARY_FILE = "shared_vocabulary.json"  # what CTranslate2's converter writes for T5 (one vocabulary)
SOURCE_FILE = "source.json"  # which checkpoint contents a conversion was made from

Translate = Callable[[list[list[int]], int], list[list[int]]]  # (rows of ids, max new tokens) -> new ids


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- CTranslate2: vocabulary

def unique_names(tokens: list[str]) -> list[str]:
    """`tokens` with every repeated name after its first occurrence renamed `<unused_{index}>`.
    CTranslate2's T5 converter pads the tokenizer's 32100 pieces to the model's 32128 rows with
    `<extra_id_0>`..`<extra_id_27>` again, so ids 32100+ would come back as ids 32099 and below."""
    seen: set[str] = set()
    names = []
    for index, token in enumerate(tokens):
        name = token
        while name in seen:
            name = f"<unused_{index}>" if name == token else name + "_"
        seen.add(name)
        names.append(name)
    return names


@dataclass(frozen=True)
class Vocabulary:
    """Token ids ⇄ the piece strings CTranslate2 takes and returns (index in the list = id)."""

    pieces: tuple[str, ...]
    index: dict[str, int] = field(compare=False, repr=False)

    @classmethod
    def of(cls, pieces: list[str]) -> "Vocabulary":
        index = {piece: i for i, piece in enumerate(pieces)}
        if len(index) != len(pieces):
            raise ValueError("vocabulary has repeated pieces: ids could not be told apart")
        return cls(tuple(pieces), index)

    @classmethod
    def load(cls, model_dir: Path) -> "Vocabulary":
        return cls.of(json.loads((model_dir / VOCABULARY_FILE).read_text()))

    def to_pieces(self, ids: list[int]) -> list[str]:
        if any(not 0 <= i < len(self.pieces) for i in ids):
            raise ValueError(f"token id out of range [0, {len(self.pieces)})")
        return [self.pieces[i] for i in ids]

    def to_ids(self, pieces: list[str]) -> list[int]:
        return [self.index[p] for p in pieces]


# ---------------------------------------------------------------- CTranslate2: conversion

def is_converted(model: str, ct2_dir: Path, compute_type: str) -> bool:
    marker = ct2_dir / SOURCE_FILE
    return marker.is_file() and json.loads(marker.read_text()) == {"model": source_key(model),
                                                                  "quantization": compute_type}


def convert(model: str, ct2_dir: Path, compute_type: str) -> None:
    """CTranslate2's own conversion of `model` with weights in `compute_type`, into `ct2_dir`
    (written beside it, then moved into place), with unique vocabulary names."""
    from ctranslate2.converters import TransformersConverter
    partial = ct2_dir.with_name(ct2_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    TransformersConverter(model).convert(str(partial), quantization=compute_type, force=True)
    vocabulary = partial / VOCABULARY_FILE
    vocabulary.write_text(json.dumps(unique_names(json.loads(vocabulary.read_text())), indent=0))
    (partial / SOURCE_FILE).write_text(json.dumps({"model": source_key(model), "quantization": compute_type}))
    shutil.rmtree(ct2_dir, ignore_errors=True)
    partial.rename(ct2_dir)


def ensure_converted(model: str, ct2_dir: Path, compute_type: str) -> None:
    """Convert in a child process unless `ct2_dir` already holds this checkpoint's conversion."""
    if not is_converted(model, ct2_dir, compute_type):
        ct2_dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "bench.baseline_server", "--engine", "ctranslate2", "--model", model,
                        "--ct2-dir", str(ct2_dir), "--compute-type", compute_type, "--convert-only"], check=True)


def ct2_translator(ct2_dir: Path, compute_type: str, max_batch: int) -> Translate:
    """Greedy decoding with CTranslate2 on CPU, token ids in and out, counted as `generate` counts:
    `max_decoding_length` includes `</s>` (returned, like `generate`'s output), and
    `min_decoding_length=0` lets `</s>` come first (CTranslate2's default 1 forbids an empty answer)."""
    import ctranslate2
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute_type,
                                        intra_threads=cores(), inter_threads=1)
    vocabulary = Vocabulary.load(ct2_dir)

    def translate(rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        results = translator.translate_batch(
            [vocabulary.to_pieces(row) for row in rows], max_batch_size=max_batch, beam_size=1,
            max_decoding_length=max_new_tokens, min_decoding_length=0, return_end_token=True,
            return_scores=False, max_input_length=0)
        return [vocabulary.to_ids(result.hypotheses[0]) for result in results]
    return translate


# ---------------------------------------------------------------- batching

@dataclass
class Job:
    """One HTTP request waiting for the worker."""

    rows: list[list[int]]
    max_new_tokens: int
    done: threading.Event = field(default_factory=threading.Event)
    output: list[list[int]] | None = None
    error: str | None = None


def take_batch(jobs: queue.Queue, max_batch: int) -> list[Job]:
    """Wait for one job, then take every job already queued, up to `max_batch` in all."""
    batch = [jobs.get()]
    while len(batch) < max_batch:
        try:
            batch.append(jobs.get_nowait())
        except queue.Empty:
            break
    return batch


@dataclass
class Counters:
    """`translate` calls and the rows they decoded (GET /stats): rows / calls is the mean batch."""

    calls: int = 0
    rows: int = 0


def run_batch(batch: list[Job], translate: Translate, counters: Counters) -> None:
    """One `translate` call per distinct `max_new_tokens` in `batch`; every job gets its rows back."""
    groups: dict[int, list[Job]] = defaultdict(list)
    for job in batch:
        groups[job.max_new_tokens].append(job)
    for max_new_tokens, group in groups.items():
        rows = [row for job in group for row in job.rows]
        counters.calls, counters.rows = counters.calls + 1, counters.rows + len(rows)
        try:
            outputs = translate(rows, max_new_tokens)
        except Exception as error:  # noqa: BLE001 - answered to each client
            for job in group:
                job.error = f"{type(error).__name__}: {error}"
        else:
            start = 0
            for job in group:
                job.output, start = outputs[start:start + len(job.rows)], start + len(job.rows)
        for job in group:
            job.done.set()


def batching_worker(jobs: queue.Queue, translate: Translate, max_batch: int, counters: Counters) -> None:
    while True:
        run_batch(take_batch(jobs, max_batch), translate, counters)


# ---------------------------------------------------------------- one at a time (transformers, optimum)

def load_generate(engine: str, model: str, onnx_dir: Path) -> Translate:
    import torch
    torch.set_num_threads(cores())
    if engine == "transformers":
        from transformers import T5ForConditionalGeneration
        generator = T5ForConditionalGeneration.from_pretrained(model).eval()
    else:
        from optimum.onnxruntime import ORTModelForSeq2SeqLM
        if not (onnx_dir / "config.json").is_file():  # Optimum's own export, as its users get it
            ORTModelForSeq2SeqLM.from_pretrained(model, export=True).save_pretrained(onnx_dir)
        generator = ORTModelForSeq2SeqLM.from_pretrained(onnx_dir)

    def generate(rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        ids = torch.tensor(rows, dtype=torch.int64)
        with torch.inference_mode():
            out = generator.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     num_beams=1, max_new_tokens=max_new_tokens)
        return out[:, 1:].tolist()
    return generate


# ---------------------------------------------------------------- HTTP

def handler(answer: Callable[[list[list[int]], int], Job], counters: Counters) -> type[BaseHTTPRequestHandler]:
    """POST /generate: `answer(rows, max_new_tokens)` returns the finished job; GET /stats: `counters`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/stats":
                return self.reply(404, {"error": "GET /stats only"})
            self.reply(200, {"calls": counters.calls, "rows": counters.rows})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rows, max_new_tokens = [list(map(int, r)) for r in body["input_ids"]], int(body["max_new_tokens"])
                if not rows or max_new_tokens < 1:
                    raise ValueError("input_ids must have a row and max_new_tokens must be >= 1")
            except (ValueError, KeyError, TypeError) as error:
                return self.reply(400, {"error": str(error)})
            job = answer(rows, max_new_tokens)
            self.reply(500, {"error": job.error}) if job.error else self.reply(200, {"output_ids": job.output})

        def reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass
    return Handler


def in_turn(generate: Translate, counters: Counters) -> Callable[[list[list[int]], int], Job]:
    def answer(rows: list[list[int]], max_new_tokens: int) -> Job:
        job = Job(rows, max_new_tokens)
        run_batch([job], generate, counters)
        return job
    return answer


def queued(jobs: queue.Queue) -> Callable[[list[list[int]], int], Job]:
    def answer(rows: list[list[int]], max_new_tokens: int) -> Job:
        job = Job(rows, max_new_tokens)
        jobs.put(job)
        job.done.wait()
        return job
    return answer


class InTurnServer(HTTPServer):
    request_queue_size = 256  # waiting clients queue in the backlog instead of being refused


class BatchingServer(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--onnx-dir", type=Path, help="where Optimum's export of this checkpoint is kept (optimum)")
    parser.add_argument("--ct2-dir", type=Path, help="where CTranslate2's conversion of this checkpoint is kept "
                                                     "(ctranslate2; converted on first use)")
    parser.add_argument("--compute-type", choices=COMPUTE_TYPES, default="float32",
                        help="ctranslate2: weights and compute type (the conversion's quantization too)")
    parser.add_argument("--max-batch", type=int, default=32, help="ctranslate2: most requests in one translate_batch")
    parser.add_argument("--convert-only", action="store_true", help="ctranslate2: convert into --ct2-dir and exit")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    needed = {"optimum": "onnx_dir", "ctranslate2": "ct2_dir"}.get(args.engine)
    if needed and getattr(args, needed) is None:
        parser.error(f"--engine {args.engine} needs --{needed.replace('_', '-')}")
    if args.convert_only:
        convert(args.model, args.ct2_dir, args.compute_type)
        return
    counters = Counters()
    if args.engine == "ctranslate2":
        ensure_converted(args.model, args.ct2_dir, args.compute_type)
        jobs: queue.Queue = queue.Queue()
        translate = ct2_translator(args.ct2_dir, args.compute_type, args.max_batch)
        threading.Thread(target=batching_worker, args=(jobs, translate, args.max_batch, counters), daemon=True).start()
        BatchingServer(("127.0.0.1", args.port), handler(queued(jobs), counters)).serve_forever()
    else:
        generate = load_generate(args.engine, args.model, args.onnx_dir)
        InTurnServer(("127.0.0.1", args.port), handler(in_turn(generate, counters), counters)).serve_forever()


if __name__ == "__main__":
    main()
