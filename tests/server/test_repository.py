"""The generated model repository: configs parse with Triton's schema, the ensemble's steps
connect, tensor names match the ONNX graphs, and the served config says what it serves."""
from __future__ import annotations

import json

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract.parameters import (GraphParameters, GreedyParameters, ServedModel, TokenizerParameters,
                                 ValidateParameters)
from contract.names import CHECKPOINT
from contract.tokens import TokenIds
from serving.repository import TARGETS, build_configs

MODELS = ["t5_validate", "t5_encoder", "t5_decoder", "t5_greedy", "t5_qa"]


def parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.fixture(scope="module")
def manifest(repository) -> dict:
    return json.loads((repository / "export_manifest.json").read_text())


def test_every_config_parses_with_the_triton_schema(repository):
    for name in MODELS:
        config = parse(repository / name / "config.pbtxt")
        assert config.name == name


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_writes_configs_triton_parses(manifest, target, tmp_path):
    """Each target's configs, written and parsed back with Triton's protobuf schema."""
    from serving.repository import write_repository

    (tmp_path / "export_manifest.json").write_text(json.dumps(manifest))
    if TARGETS[target].executor == "torch":
        (tmp_path / CHECKPOINT).mkdir(parents=True)  # what the pipeline installs for it
    written = write_repository(tmp_path, target)
    for name, path in written.items():
        config = parse(path)
        assert config.name == name
        assert config.platform == "ensemble" or config.backend or config.platform == "tensorrt_plan"
    kinds = {parse(written[n]).instance_group[0].kind for n in ("t5_encoder", "t5_decoder")}
    assert kinds == ({mc.ModelInstanceGroup.KIND_CPU} if target == "cpu" else {mc.ModelInstanceGroup.KIND_GPU})
    greedy = GreedyParameters.from_strings(strings(parse(written["t5_greedy"])))
    if target == "gpu-torch":  # the checkpoint on PyTorch, the decoder inside t5_greedy, on the device
        encoder = GraphParameters.from_strings(strings(parse(written["t5_encoder"])))
        assert (encoder.executor, encoder.device, encoder.dtype) == ("torch", "cuda", "bfloat16")
        assert (greedy.decoder_mode, greedy.executor, greedy.device, greedy.dtype) == \
            ("in_process", "torch", "cuda", "bfloat16")
        assert not greedy.cpu_only_inputs
    elif target != "cpu":
        assert not greedy.cpu_only_inputs and greedy.decoder_mode == "bls"
        assert parse(written["t5_encoder"]).model_warmup, "GPU graph models warm up"
    assert ("t5_decoder_init" in written) == (target == "gpu-tensorrt")


def test_switching_target_removes_the_other_targets_models(manifest, tmp_path):
    from serving.repository import write_repository

    (tmp_path / "export_manifest.json").write_text(json.dumps(manifest))
    write_repository(tmp_path, "gpu-tensorrt")
    assert (tmp_path / "t5_decoder_init" / "config.pbtxt").is_file()
    (tmp_path / "t5_decoder_init" / "1" / "__pycache__").mkdir(parents=True)  # Python's, from an earlier run
    (tmp_path / "t5_decoder_init" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"")
    write_repository(tmp_path, "cpu")
    assert not (tmp_path / "t5_decoder_init").exists(), "a model folder without config would fail to load"


def test_a_model_folder_an_older_version_generated_is_removed(manifest, tmp_path):
    """After an upgrade that renamed t5_tokenize to t5_tokenizer, the old folder holds only what
    the build made there (config, tokenizer, Python's caches): Triton would try to load it."""
    from serving.repository import write_repository

    (tmp_path / "export_manifest.json").write_text(json.dumps(manifest))
    old = tmp_path / "t5_tokenize"
    (old / "1" / "__pycache__").mkdir(parents=True)
    for path in (old / "config.pbtxt", old / "1" / "tokenizer.json", old / "1" / "__pycache__" / "model.cpython-311.pyc"):
        path.write_text("")
    kept = tmp_path / "my_model"  # someone's own model: code in it
    (kept / "1").mkdir(parents=True)
    (kept / "config.pbtxt").write_text("")
    (kept / "1" / "model.py").write_text("")
    write_repository(tmp_path, "cpu")
    assert not old.exists()
    assert (kept / "1" / "model.py").is_file(), "a folder with code in it stays"


def test_no_onnxruntime_tensorrt_accelerator(manifest, tmp_path):
    """ORT's TensorRT accelerator would rebuild engines at run time (no engine cache, no
    profiles for a past that grows every step): no config asks for it."""
    from serving.repository import write_repository

    (tmp_path / "export_manifest.json").write_text(json.dumps(manifest))
    for config in write_repository(tmp_path, "gpu-onnxruntime").values():
        assert not parse(config).optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_ensemble_steps_connect(manifest, target):
    """Every step input is an ensemble input or an earlier step's output, with the same
    dtype and (batch-less) dims; every ensemble output is produced."""
    configs = build_configs(manifest, TARGETS[target])
    qa = configs["t5_qa"]
    available = {t.name: (t.data_type, list(t.dims)) for t in qa.input}
    for step in qa.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {t.name: t for t in model.input}
        assert set(step.input_map) == set(inputs), f"{step.model_name} inputs not all mapped"
        for model_input, tensor in step.input_map.items():
            assert tensor in available, f"{tensor} used by {step.model_name} before it is produced"
            dtype, dims = available[tensor]
            assert dtype == inputs[model_input].data_type
            assert dims == list(inputs[model_input].dims)
        outputs = {t.name: t for t in model.output}
        for model_output, tensor in step.output_map.items():
            available[tensor] = (outputs[model_output].data_type, list(outputs[model_output].dims))
    for output in qa.output:
        assert available[output.name] == (output.data_type, list(output.dims))


GRAPH_FILES = {  # target -> model -> the ONNX graph it serves (TensorRT: builds its engine from)
    "cpu": {"t5_encoder": "encoder_model.onnx", "t5_decoder": "decoder_model_merged.onnx"},
    "gpu-onnxruntime": {"t5_encoder": "encoder_model.onnx", "t5_decoder": "decoder_model_merged.onnx"},
    "gpu-torch": {"t5_encoder": "encoder_model.onnx", "t5_decoder": "decoder_model_merged.onnx"},
    "gpu-tensorrt": {"t5_encoder": "encoder_model.onnx", "t5_decoder_init": "decoder_model.onnx",
                     "t5_decoder": "decoder_with_past_model.onnx"},
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_tensor_names_match_the_onnx_graphs(repository, manifest, export_dir, target):
    assert set(GRAPH_FILES) == set(TARGETS)
    configs = build_configs(manifest, TARGETS[target])
    for name, filename in GRAPH_FILES[target].items():
        graph = onnx.load(str(export_dir / filename), load_external_data=False).graph
        config = configs[name]
        assert [t.name for t in config.input] == [i.name for i in graph.input]
        assert [t.name for t in config.output] == [o.name for o in graph.output]


def test_the_checkpoints_signatures_are_the_onnx_graphs(manifest, checkpoint):
    """The torch executor's repository describes the encoder and decoder from the checkpoint's
    config alone (`export.checkpoint`): the same names, types, shapes and order as the graphs
    Optimum exports, so both paths write the same t5_greedy and t5_encoder configs."""
    from transformers import AutoConfig

    from export.checkpoint import graph_signatures

    from_config = graph_signatures(AutoConfig.from_pretrained(checkpoint))
    for name, signature in from_config.items():
        for side in ("inputs", "outputs"):
            assert list(signature[side].items()) == list(manifest["graphs"][name][side].items()), (name, side)


def strings(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def test_greedy_knows_the_decoders_cache_inputs(repository, manifest):
    decoder = parse(repository / "t5_decoder" / "config.pbtxt")
    greedy = GreedyParameters.from_strings(strings(parse(repository / "t5_greedy" / "config.pbtxt")))
    past = [t for t in decoder.input if t.name.startswith("past_key_values.")]
    assert greedy.signature.past_names == tuple(t.name for t in past)
    assert [greedy.signature.num_heads, greedy.signature.head_dim] == [past[0].dims[1], past[0].dims[3]]
    assert greedy.signature.d_model == [t for t in decoder.input if t.name == "encoder_hidden_states"][0].dims[2]
    assert greedy.tokens == TokenIds.from_dict(manifest["token_ids"]) and greedy.cpu_only_inputs


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_python_models_parameters_are_its_typed_contract(manifest, target):
    """Each Python model's `parameters` block is exactly its dataclass in `contract.parameters`
    (no key written that the model does not read back, none missing), for every target."""
    typed = {"t5_validate": ValidateParameters, "t5_greedy": GreedyParameters, "t5_tokenizer": TokenizerParameters,
             "t5_qa": ServedModel, "t5_qa_text": ServedModel}
    configs = build_configs(manifest, TARGETS[target])
    if TARGETS[target].graph_backend == "python":
        typed.update({"t5_encoder": GraphParameters, "t5_decoder": GraphParameters})
    for name, config in configs.items():
        if name not in typed:
            assert not config.parameters, f"{name} carries untyped parameters"
            continue
        values = strings(config)
        assert typed[name].from_strings(values).to_strings() == values, name


def test_served_config_names_the_demo_model(client, repository, manifest):
    assert manifest["demo"] is True
    assert client.demo_model is True
    params = client.model_config["parameters"]
    assert params["model_source"]["string_value"] == manifest["model"]
    assert params["target"]["string_value"] == "cpu"


def test_client_warns_on_every_demo_answer(client, caplog):
    with caplog.at_level("WARNING", logger="client"):
        answers = client.answer_batch([("Who?", "Bob."), ("What?", "A thing.")], max_new_tokens=2)
    assert all(a.demo_model for a in answers)
    assert sum("DEMO model" in r.message for r in caplog.records) == len(answers)


def test_decoder_model_answers_a_direct_step(server, repository, prompts):
    """`t5_decoder` is served on the cpu target too (its session opens on first use): a
    first step through it gives the logits of the in-process graph."""
    import numpy as np
    import tritonclient.grpc as grpc

    from runtime.onnx_runtime import OrtSeq2Seq

    local = OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))
    ids = np.array([prompts.encode("Who?", "Bob went home.")])
    mask = np.ones_like(ids)
    states = local.encode(ids, mask)
    signature = local.signature
    empty = np.zeros((1, signature.num_heads, 0, signature.head_dim), np.float32)
    feed = {"input_ids": np.zeros((1, 1), np.int64), "attention_mask": np.ones((1, 1), np.int64),
            "encoder_hidden_states": states, "encoder_attention_mask": mask, "use_cache_branch": np.array([False]),
            **{name: empty for name in signature.past_names}}
    expected = local.run_decoder(feed, ["logits"])["logits"][:, -1, :]
    inputs = []
    for name, value in feed.items():
        datatype = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(bool): "BOOL"}[value.dtype]
        tensor = grpc.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    with grpc.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}") as raw:
        result = raw.infer("t5_decoder", inputs, outputs=[grpc.InferRequestedOutput("logits")])
    np.testing.assert_allclose(result.as_numpy("logits")[:, -1, :], expected, atol=1e-5)


def test_models_are_ready(client, server):
    import tritonclient.grpc as grpc
    with grpc.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}") as raw:
        assert all(raw.is_model_ready(name) for name in MODELS)
