"""Latency of one question (~180 prompt tokens, 16 new tokens) through three paths, measured
in one run, interleaved: `transformers` `generate` in-process, the same ONNX graphs with our
decode loop in-process (ONNX Runtime), and the served `t5_qa` ensemble over gRPC. Also the
memory of the server behind `--url` (tritonserver plus its Python stubs, summed RSS and PSS).

  make serve &                    # or any running server over the same checkpoint
  python -m bench.latency --checkpoint build/models/demo-base --repository model_repository
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from client import QAClient
from client.tokenizer import load_tokenizer
from contract.prompt import PromptEncoder
from contract.tokens import TokenIds
from contract.names import TOKENIZER_FILE
from runtime.greedy import greedy_generate
from bench.graphs import open_graphs
from serving.server import find_server_pid, server_processes, total_memory_kib
from shared_data import squad_pairs


def pick_question(prompts: PromptEncoder, tokens: int) -> tuple[str, str]:
    pairs = squad_pairs(400, stride=7)
    return min(pairs, key=lambda p: abs(len(prompts.encode(*p)) - tokens))


def grpc_address(text: str) -> str:
    """`--url`: host:port of the server's gRPC endpoint; the port also finds its processes."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be host:port of the server's gRPC endpoint, got {text!r}")
    return text


def server_memory(url: str) -> str:
    """The memory of the tritonserver whose gRPC port `url` names, with its stubs."""
    port = int(url.rsplit(":", 1)[1])
    pid = find_server_pid(grpc_port=port)
    if pid is None:
        return f"no tritonserver with --grpc-port={port} on this machine"
    total = total_memory_kib(server_processes(pid))
    return (f"{total['rss'] / 1024:.0f} MB RSS, {total['pss'] / 1024:.0f} MB PSS "
            f"over {total['processes']} processes (tritonserver + Python stubs)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="build/models/demo-base", help="checkpoint the server was exported from")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="its exported graphs")
    parser.add_argument("--url", type=grpc_address, default="localhost:8001",
                        help="host:port of the running server's gRPC endpoint (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--prompt-tokens", type=int, default=180)
    parser.add_argument("--new-tokens", type=int, default=16)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    import torch  # after the arguments: `--help` and a bad `--url` answer at once
    from transformers import T5ForConditionalGeneration

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    prompts = PromptEncoder.from_tokenizer(load_tokenizer(str(args.repository / TOKENIZER_FILE)))
    question, context = pick_question(prompts, args.prompt_tokens)
    ids = np.array([prompts.encode(question, context)], dtype=np.int64)
    mask = np.ones_like(ids)
    model = T5ForConditionalGeneration.from_pretrained(args.checkpoint).eval()
    tokens = TokenIds.from_model_config(model.config)
    ort = open_graphs(args.repository)
    client = QAClient(args.url, tokenizer=prompts.tokenizer)

    def run_hf() -> np.ndarray:
        with torch.inference_mode():
            return model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                  max_new_tokens=args.new_tokens, do_sample=False, num_beams=1)[0, 1:].numpy()

    def run_ort() -> np.ndarray:
        result = greedy_generate(ort.run_decoder, ort.signature, tokens, ort.encode(ids, mask), mask,
                                 np.array([args.new_tokens]))
        return result.tokens[0]

    def run_triton() -> np.ndarray:
        out, lengths, _ = client.generate(ids, mask, args.new_tokens)
        return out[0, : lengths[0, 0]]

    paths = {"transformers generate (in-process)": run_hf, "ONNX Runtime + our loop (in-process)": run_ort,
             "Triton t5_qa over gRPC": run_triton}
    outputs = {name: fn() for name, fn in paths.items()}  # warm-up, and the tokens to compare
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    reference = outputs["transformers generate (in-process)"]
    base = statistics.median(times["transformers generate (in-process)"])
    print(f"prompt {ids.shape[1]} tokens, {len(reference)} new tokens, median of {args.runs} runs, "
          f"{os.cpu_count()} CPUs\n")
    print("| path | median ms | min ms | vs generate | same tokens |\n|---|---|---|---|---|")
    for name, values in times.items():
        same = np.array_equal(outputs[name], reference)
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | "
              f"{statistics.median(values) / base:.2f}x | {'yes' if same else 'NO'} |")
    print(f"\nserver memory: {server_memory(args.url)}")
    print(json.dumps({name: [round(v, 1) for v in values] for name, values in times.items()}))


if __name__ == "__main__":
    main()
