"""A model repository's exported graphs in-process, for the benchmarks that time them
(`bench.serving`'s roofline, `bench.graph_profile`, `bench.decode_memory`, `bench.latency`,
`bench.encoder_arena`): where the graphs are, the token ids the export recorded, the encoder and
decoder on ONNX Runtime with the server's session settings, and the median time of decode steps."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from time import perf_counter

from contract.names import DECODER, ENCODER, MANIFEST, version_file
from contract.tokens import TokenIds
from runtime.greedy import DecodeBatch
from runtime.onnx_runtime import OrtSeq2Seq


def graph_path(repository: Path, model: str) -> Path:
    """`model`'s graph in `repository` (`ENCODER` or `DECODER`)."""
    return repository / version_file(model)


def repository_tokens(repository: Path) -> TokenIds:
    """The decoder start, `</s>` and pad ids the export recorded in the repository's manifest."""
    return TokenIds.from_dict(json.loads((repository / MANIFEST).read_text())["token_ids"])


def open_graphs(repository: Path, **options) -> OrtSeq2Seq:
    """Encoder and decoder of `repository` on ONNX Runtime (`options`: `OrtSeq2Seq`'s)."""
    return OrtSeq2Seq(str(graph_path(repository, ENCODER)), str(graph_path(repository, DECODER)), **options)


def median_step_ms(decode: DecodeBatch, steps: int) -> float:
    """The median wall time, in milliseconds, of `steps` decode steps of `decode`'s rows."""
    times = []
    for _ in range(steps):
        start = perf_counter()
        decode.step()
        times.append((perf_counter() - start) * 1000)
    return statistics.median(times)
