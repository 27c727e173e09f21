"""int8 on the cpu target (`PRECISION=int8`): the installed graphs are dynamically quantized (the
merged decoder's If branches too) and smaller, the manifest's agreement with fp32 is what its
documented definition gives when recomputed here, the floor stops quantization that is broken,
a precision a target cannot serve is refused before anything is exported, and tritonserver
serves the int8 graphs' answers token for token."""
from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from client import QAClient
from contract.names import DECODER, ENCODER, MANIFEST, version_file
from export.demo_model import build_demo_model
from export.onnx_export import GRAPHS, INT8_GRAPHS, export_model, graph_signature
from export.precision import PRECISIONS, check_precision
from export.quantize import AGREEMENT_FLOOR, quantize_export, settings
from export.tensorrt import PRECISIONS as ENGINE_PRECISIONS
from export.validate import AGREEMENT_STRIDE, ValidationError, validate_agreement
from runtime.greedy import greedy_generate
from runtime.onnx_runtime import OrtSeq2Seq
from serving.pipeline import build
from serving.pipeline import main as pipeline_main
from serving.repository import TARGETS
from serving.serve import main as serve_main
from shared_data import squad_pairs
from tests.helpers import REPO_ROOT, copy_model_code, start_server


@pytest.fixture(scope="module")
def int8_repository(tmp_path_factory, checkpoint, exports) -> Path:
    """The test checkpoint built for the cpu target in int8 (the session's fp32 export reused)."""
    repository = copy_model_code(tmp_path_factory.mktemp("serving-int8"))
    build(str(checkpoint), repository, "cpu", exports, precision="int8")
    return repository


@pytest.fixture(scope="module")
def manifest(int8_repository) -> dict:
    return json.loads((int8_repository / MANIFEST).read_text())


def graphs(folder: Path, files: dict[str, str]) -> tuple[Path, Path]:
    return folder / files[ENCODER], folder / files[DECODER]


def op_counts(path: Path) -> dict[str, Counter]:
    """Operator counts of a graph and of each subgraph (the decoder's If branches), by name."""
    counts: dict[str, Counter] = {}

    def walk(graph: onnx.GraphProto, name: str) -> None:
        counts[name] = Counter(node.op_type for node in graph.node)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, attribute.name)

    walk(onnx.load(str(path)).graph, "main")
    return counts


def weight_types(path: Path) -> dict[str, set[int]]:
    """Per graph and subgraph (the merged decoder's If branches) of the model at `path`, the
    element types of the weights its MatMulInteger nodes multiply by (initializers of the graph
    or of an enclosing one)."""
    found: dict[str, set[int]] = {}

    def walk(graph, name: str, outer: dict[str, int]) -> None:
        weights = {**outer, **{i.name: i.data_type for i in graph.initializer}}
        types = {weights[node.input[1]] for node in graph.node
                 if node.op_type == "MatMulInteger" and node.input[1] in weights}
        if types:
            found[name] = types
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, attribute.name, weights)

    walk(onnx.load(str(path)).graph, "main", {})
    return found


def answers(graph_pair: tuple[Path, Path], prompts, tokens, pairs, new_tokens: int, batch: int) -> list[list[int]]:
    """Greedy answers (`</s>` included) of the graphs, `batch` prompts at a time, with the loop the server runs."""
    runtime = OrtSeq2Seq(*map(str, graph_pair))
    rows: list[list[int]] = []
    for start in range(0, len(pairs), batch):
        ids, mask = prompts.encode_batch(pairs[start: start + batch])
        out = greedy_generate(runtime.run_decoder, runtime.signature, tokens, runtime.encode(ids, mask), mask,
                              np.full(len(ids), new_tokens))
        rows += [out.tokens[row, : out.lengths[row]].tolist() for row in range(len(ids))]
    return rows


def test_installed_graphs_are_quantized_and_smaller(int8_repository, manifest, export_dir):
    encoder, decoder = (int8_repository / version_file(name) for name in (ENCODER, DECODER))
    ops = op_counts(encoder)["main"]
    assert ops["MatMulInteger"] >= 4 and ops["DynamicQuantizeLinear"] >= 1
    # The weights in the type this machine's CPU multiplies without losing sums (QInt8 with VNNI).
    wanted = onnx.TensorProto.INT8 if settings()["weight_type"] == "QInt8" else onnx.TensorProto.UINT8
    assert weight_types(encoder) == {"main": {wanted}}
    assert weight_types(decoder) == {"then_branch": {wanted}, "else_branch": {wanted}}  # both decoder steps
    decoder_ops = op_counts(decoder)
    assert set(decoder_ops) == {"main", "then_branch", "else_branch"}  # the merged graph's If, kept
    for branch in ("then_branch", "else_branch"):  # both steps quantized: the first and the with-past one
        assert decoder_ops[branch]["MatMulInteger"] >= 4 and decoder_ops[branch]["DynamicQuantizeLinear"] >= 1
    fp32 = {name: (export_dir / GRAPHS[name]).stat().st_size for name in GRAPHS}
    assert encoder.stat().st_size < fp32[ENCODER] and decoder.stat().st_size < 0.7 * fp32[DECODER]
    assert manifest["precision"] == "int8"
    assert manifest["int8"]["bytes"] == {name: {"fp32": fp32[name], "int8": (int8_repository / version_file(name))
                                                .stat().st_size} for name in GRAPHS}
    # Same inputs and outputs as the fp32 graphs: the configs written from the manifest fit them.
    assert {name: graph_signature(int8_repository / version_file(name)) for name in GRAPHS} == \
        {name: manifest["graphs"][name] for name in GRAPHS}


def test_manifest_agreement_is_the_documented_rate(manifest, export_dir, prompts, tokens):
    """Recomputed from both graph pairs: per row the common prefix of the two greedy answers,
    summed, over the fp32 answers' lengths summed; identical answers over prompts."""
    report = manifest["validation"]["int8"]
    pairs = squad_pairs(report["prompts"], AGREEMENT_STRIDE)
    fp32, int8 = (answers(graphs(export_dir, files), prompts, tokens, pairs, report["new_tokens"], report["batch"])
                  for files in (GRAPHS, INT8_GRAPHS))
    prefixes = []
    for a, b in zip(fp32, int8):
        same = [x == y for x, y in zip(a, b)]
        prefixes.append(same.index(False) if False in same else len(same))
    reference = sum(map(len, fp32))
    assert (report["agreeing_tokens"], report["reference_tokens"]) == (sum(prefixes), reference)
    assert report["token_agreement"] == pytest.approx(sum(prefixes) / reference, abs=1e-4)
    assert report["identical_answers"] == pytest.approx(np.mean([a == b for a, b in zip(fp32, int8)]), abs=1e-4)
    assert report["floor"] == AGREEMENT_FLOOR <= report["token_agreement"]
    assert report["weight_type"] == settings()["weight_type"] and report["prompts"] >= 16


def test_floor_fails_graphs_of_another_checkpoint(tmp_path, checkpoint, export_dir, int8_repository):
    """Broken quantization for real: the int8 graphs judged against a differently seeded checkpoint's fp32."""
    other = build_demo_model("tiny", tmp_path / "other", seed=1)
    export_model(str(other), tmp_path / "onnx")
    with pytest.raises(ValidationError, match=r"int8 graphs agree with the fp32 graphs on \d+\.\d% of the answer "
                                              r"tokens .* below the floor of 50%: the quantization is broken"):
        validate_agreement(str(checkpoint), graphs(tmp_path / "onnx", GRAPHS), graphs(export_dir, INT8_GRAPHS),
                           AGREEMENT_FLOOR, squad_pairs(8, AGREEMENT_STRIDE))


def test_below_the_floor_nothing_is_kept(tmp_path, checkpoint, export_dir, int8_repository):
    """A recorded rate a stricter floor refuses fails at reuse; a fresh quantization that fails
    leaves no int8 graph and no record behind (a later build quantizes again)."""
    with pytest.raises(ValidationError, match="below the floor of 101%"):
        quantize_export(str(checkpoint), export_dir, floor=1.01)
    fresh = tmp_path / "export"
    fresh.mkdir()
    for name in GRAPHS.values():
        (fresh / name).hardlink_to(export_dir / name)
    recorded = json.loads((export_dir / MANIFEST).read_text())
    (fresh / MANIFEST).write_text(json.dumps({k: v for k, v in recorded.items() if k != "int8"}))
    with pytest.raises(ValidationError, match="below the floor of 101%"):
        quantize_export(str(checkpoint), fresh, floor=1.01)
    assert sorted(p.name for p in fresh.iterdir()) == sorted([*GRAPHS.values(), MANIFEST])
    assert "int8" not in json.loads((fresh / MANIFEST).read_text())


@pytest.mark.parametrize("target, precision, executor, message", [
    ("gpu-tensorrt", "int8", None, "TARGET=gpu-tensorrt cannot serve PRECISION=int8: it serves bf16 or fp32 "
                                   "(int8 is ONNX Runtime's dynamic quantization on the CPU: TARGET=cpu)"),
    ("gpu-onnxruntime", "int8", None, "TARGET=gpu-onnxruntime cannot serve PRECISION=int8: it serves fp32"),
    ("gpu-torch", "int8", None, "TARGET=gpu-torch cannot serve PRECISION=int8: it serves bf16 or fp32"),
    ("cpu", "bf16", None, "TARGET=cpu cannot serve PRECISION=bf16: it serves fp32 or int8 (bf16 is for GPU targets"),
    ("cpu", "int8", "torch", "TARGET=cpu with the torch executor cannot serve PRECISION=int8"),
])
def test_precisions_a_target_cannot_serve(tmp_path, target, precision, executor, message):
    """Refused with the reason, before the checkpoint is even looked at (this one does not exist)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        build(str(tmp_path / "no-checkpoint"), tmp_path / "repository", target, tmp_path / "onnx",
              precision=precision, executor=executor)
    assert not (tmp_path / "onnx").exists()


def test_command_lines_refuse_them_too(tmp_path, capsys):
    model = str(tmp_path / "no-checkpoint")
    assert pipeline_main(["build", "--model", model, "--target", "gpu-torch", "--precision", "int8"]) == 2
    assert "cannot build: TARGET=gpu-torch cannot serve PRECISION=int8" in capsys.readouterr().err
    assert serve_main(["--model", model, "--target", "cpu", "--precision", "bf16"]) == 2
    assert "cannot serve: TARGET=cpu cannot serve PRECISION=bf16" in capsys.readouterr().err


def test_one_list_of_precisions_and_the_defaults():
    """Every target has its list (default first); the GPU targets' defaults are what they were."""
    assert set(PRECISIONS) == set(TARGETS)
    assert check_precision("cpu", None) == "fp32" and check_precision("cpu", "int8") == "int8"
    assert check_precision("gpu-tensorrt", None) == ENGINE_PRECISIONS[0] == "bf16"
    assert check_precision("gpu-torch", None) == "bf16"


def make_n(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "-n", "--no-print-directory", *args, "SETUP_STAMP="], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_passes_precision_only_when_given():
    """`PRECISION=` reaches export and serve; left empty, every command keeps its own default."""
    assert "--precision int8" in make_n("export", "PRECISION=int8")
    assert "--target cpu --precision int8" in make_n("serve", "PRECISION=int8")
    for target in ("export", "serve", "engines", "gpu-check"):
        assert "--precision" not in make_n(target)
    assert "--precision fp32" in make_n("engines", "PRECISION=fp32")


def test_served_int8_answers_are_the_int8_graphs(int8_repository, export_dir, tmp_path, prompts, tokens):
    """tritonserver over the int8 repository answers each prompt (one request at a time, so that
    the server's batch is the prompt alone, as below: dynamic quantization's activation scales
    span a batch) with the int8 graphs' tokens, not the fp32 ones'."""
    pairs = squad_pairs(32, AGREEMENT_STRIDE)
    int8 = answers(graphs(export_dir, INT8_GRAPHS), prompts, tokens, pairs, 16, batch=1)
    fp32 = answers(graphs(export_dir, GRAPHS), prompts, tokens, pairs, 16, batch=1)
    differ = [i for i in range(len(pairs)) if int8[i] != fp32[i]]
    assert differ, "the int8 graphs answer every prompt as fp32 does: nothing would tell them apart"
    chosen = (differ[:3] + [i for i in range(len(pairs)) if i not in differ][:2])
    server = start_server(int8_repository, tmp_path / "tritonserver.log")
    try:
        with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as client:
            for i in chosen:
                ids = np.array([prompts.encode(*pairs[i])], dtype=np.int64)
                served, lengths, _ = client.generate(ids, np.ones_like(ids), 16)
                assert served[0, : int(lengths[0, 0])].tolist() == int8[i], f"prompt {i}"
    finally:
        server.stop()
