"""Configs of the text endpoint, built beside the token-id models by `serving.repository`.

    t5_qa_text (ensemble)   question, context: UTF-8 strings [1]; optional max_new_tokens INT32 [1]
                            and no_answer_threshold FP32 [1]
                            -> answer STRING [1], score FP32 [1], no_answer BOOL [1]
      t5_tokenize           question, context -> input_ids, attention_mask (`client.prompt`)
      ...                   the steps of `t5_qa`, copied (t5_encoder -> t5_greedy)
      t5_detokenize         output_ids, output_lengths, output_scores -> answer, score, no_answer

Tensor names, dtypes and dims between the steps are copied from the token models' configs
(`token_configs`), so the text endpoint follows any change to `t5_qa` and cannot drift from
it. Both Python models load the tokenizer that the export step installs at `TOKENIZER_FILE`.
"""
from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from serving.limits import MAX_TEXT_BYTES

TOKENIZER_FILE = "t5_tokenize/1/tokenizer.json"  # relative to the repository root
CPU = mc.ModelInstanceGroup.KIND_CPU


def _string(cls, name: str):
    return cls(name=name, data_type=mc.TYPE_STRING, dims=[1])


def _as(cls, tensor):
    """`tensor` (a ModelInput or ModelOutput) as a `cls`: same name, dtype and dims."""
    return cls(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))


def _python_model(name: str, batch: int, **params: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=batch)
    config.instance_group.add(count=1, kind=CPU)
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def text_configs(manifest: dict, target: object, token_configs: dict[str, mc.ModelConfig]) -> dict[str, mc.ModelConfig]:
    """Configs of the text-endpoint models for `target`, given the token-id models' configs."""
    qa = token_configs["t5_qa"]
    batch = qa.max_batch_size
    token_inputs = [t for t in qa.input if t.name in ("input_ids", "attention_mask")]
    extra_inputs = [t for t in qa.input if t.name not in ("input_ids", "attention_mask")]
    max_tokens = qa.parameters["max_input_tokens"].string_value

    ids = {key: qa.parameters[key].string_value for key in ("eos_token_id", "pad_token_id")}
    tokenize = _python_model("t5_tokenize", batch, tokenizer_file=TOKENIZER_FILE, max_input_tokens=max_tokens,
                             max_text_bytes=str(MAX_TEXT_BYTES), **ids)
    tokenize.input.extend([_string(mc.ModelInput, "question"), _string(mc.ModelInput, "context")])
    tokenize.output.extend(_as(mc.ModelOutput, t) for t in token_inputs)

    threshold = mc.ModelInput(name="no_answer_threshold", data_type=mc.TYPE_FP32, dims=[1], optional=True)
    detokenize = _python_model("t5_detokenize", batch, tokenizer_file=TOKENIZER_FILE)
    detokenize.input.extend(_as(mc.ModelInput, t) for t in qa.output)
    detokenize.input.append(threshold)
    detokenize.output.extend([_string(mc.ModelOutput, "answer"),
                              mc.ModelOutput(name="score", data_type=mc.TYPE_FP32, dims=[1]),
                              mc.ModelOutput(name="no_answer", data_type=mc.TYPE_BOOL, dims=[1])])

    text = mc.ModelConfig(name="t5_qa_text", platform="ensemble", max_batch_size=batch)
    text.input.extend([_string(mc.ModelInput, "question"), _string(mc.ModelInput, "context"), *extra_inputs, threshold])
    text.output.extend(_as(mc.ModelOutput, t) for t in detokenize.output)
    text.ensemble_scheduling.step.add(
        model_name="t5_tokenize", model_version=-1, input_map={"question": "question", "context": "context"},
        output_map={t.name: t.name for t in token_inputs})
    text.ensemble_scheduling.step.extend(qa.ensemble_scheduling.step)
    text.ensemble_scheduling.step.add(
        model_name="t5_detokenize", model_version=-1, input_map={t.name: t.name for t in detokenize.input},
        output_map={t.name: t.name for t in detokenize.output})
    for key, value in qa.parameters.items():
        text.parameters[key].CopyFrom(value)
    text.parameters["token_model"].string_value = qa.name
    return {c.name: c for c in (tokenize, detokenize, text)}
