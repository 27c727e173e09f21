"""What users run before this project: a one-request-at-a-time HTTP server around
`transformers` `generate` or Optimum's `ORTModelForSeq2SeqLM.generate` (greedy). The
benchmark's baselines; not for production.

  python -m bench.baseline_server --engine transformers --model build/models/demo-base --port 9000

POST /generate {"input_ids": [[...]], "max_new_tokens": 16} -> {"output_ids": [[...]]}
(new tokens only, without the decoder start token). Requests are served strictly in turn.
"""
from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import torch


def load(engine: str, model: str, onnx_dir: Path):
    if engine == "transformers":
        from transformers import T5ForConditionalGeneration
        return T5ForConditionalGeneration.from_pretrained(model).eval()
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    if not (onnx_dir / "config.json").is_file():  # Optimum's own export, as its users get it
        ORTModelForSeq2SeqLM.from_pretrained(model, export=True).save_pretrained(onnx_dir)
    return ORTModelForSeq2SeqLM.from_pretrained(onnx_dir)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("transformers", "optimum"), required=True)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--onnx-dir", type=Path, required=True,
                        help="where Optimum's export of this checkpoint is kept (optimum engine)")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = load(args.engine, args.model, args.onnx_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ids = torch.tensor(body["input_ids"], dtype=torch.int64)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     num_beams=1, max_new_tokens=int(body["max_new_tokens"]))
            data = json.dumps({"output_ids": out[:, 1:].tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    class Server(HTTPServer):
        request_queue_size = 256  # waiting clients queue in the backlog instead of being refused

    Server(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
