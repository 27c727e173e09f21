"""Configs of the text endpoint, built beside the token-id models by `serving.repository`.

    t5_qa_text (ensemble)   question, context: UTF-8 strings [1]; optional max_new_tokens INT32 [1]
                            and no_answer_threshold FP32 [1]
                            -> answer STRING [1], score FP32 [1], no_answer BOOL [1]
      t5_tokenizer          question, context -> input_ids, attention_mask (`contract.prompt`)
      ...                   the steps of `t5_qa`, copied (cpu: t5_greedy; GPU: t5_encoder -> t5_greedy)
      t5_tokenizer          output_ids, output_lengths, output_scores -> answer, score, no_answer

`t5_tokenizer` is one Python model for both ends, so the tokenizer is held by one process
(two models would be two stubs, each with its own copy): every input is optional, and a request
brings either the text inputs or the generated ones; each step asks for its own outputs.
Tensor names, dtypes and dims between the steps are copied from the token models' configs
(`token_configs`), so the text endpoint follows any change to `t5_qa` and cannot drift from
it. The model loads the tokenizer that the export step installs at `TOKENIZER_FILE`.
"""
from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from contract.limits import MAX_TEXT_BYTES
from contract.names import (ANSWER, ATTENTION_MASK, CONTEXT, INPUT_IDS, NO_ANSWER, NO_ANSWER_THRESHOLD, QA, QA_TEXT,
                            QUESTION, SCORE, TOKENIZER, TOKENIZER_FILE)
from contract.parameters import ModelParameters, ServedModel, TokenizerParameters
from contract.tokens import TokenIds

CPU = mc.ModelInstanceGroup.KIND_CPU


def _string(cls, name: str):
    return cls(name=name, data_type=mc.TYPE_STRING, dims=[1])


def _as(cls, tensor, optional: bool = False):
    """`tensor` (a ModelInput or ModelOutput) as a `cls`: same name, dtype and dims."""
    copy = cls(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    if optional:
        copy.optional = True
    return copy


def _python_model(name: str, batch: int, parameters: ModelParameters) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=batch)
    config.instance_group.add(count=1, kind=CPU)
    for key, value in parameters.to_strings().items():
        config.parameters[key].string_value = value
    return config


def text_configs(manifest: dict, target: object, token_configs: dict[str, mc.ModelConfig]) -> dict[str, mc.ModelConfig]:
    """Configs of the text-endpoint models for `target`, given the token-id models' configs."""
    qa = token_configs[QA]
    batch = qa.max_batch_size
    token_inputs = [t for t in qa.input if t.name in (INPUT_IDS, ATTENTION_MASK)]
    extra_inputs = [t for t in qa.input if t.name not in (INPUT_IDS, ATTENTION_MASK)]
    served = ServedModel.from_strings({k: v.string_value for k, v in qa.parameters.items()})

    tokenizer = _python_model(TOKENIZER, batch, TokenizerParameters(TOKENIZER_FILE, served.max_input_tokens,
                                                                    MAX_TEXT_BYTES, TokenIds.from_dict(manifest["token_ids"])))
    text_inputs = [_string(mc.ModelInput, QUESTION), _string(mc.ModelInput, CONTEXT)]
    threshold = mc.ModelInput(name=NO_ANSWER_THRESHOLD, data_type=mc.TYPE_FP32, dims=[1], optional=True)
    generated = [_as(mc.ModelInput, t) for t in qa.output]
    answer = [_string(mc.ModelOutput, ANSWER), mc.ModelOutput(name=SCORE, data_type=mc.TYPE_FP32, dims=[1]),
              mc.ModelOutput(name=NO_ANSWER, data_type=mc.TYPE_BOOL, dims=[1])]
    tokenizer.input.extend(_as(mc.ModelInput, t, optional=True) for t in (*text_inputs, *generated, threshold))
    tokenizer.output.extend([*(_as(mc.ModelOutput, t) for t in token_inputs), *answer])

    text = mc.ModelConfig(name=QA_TEXT, platform="ensemble", max_batch_size=batch)
    text.input.extend([*text_inputs, *extra_inputs, threshold])
    text.output.extend(answer)
    text.ensemble_scheduling.step.add(
        model_name=TOKENIZER, model_version=-1, input_map={t.name: t.name for t in text_inputs},
        output_map={t.name: t.name for t in token_inputs})
    text.ensemble_scheduling.step.extend(qa.ensemble_scheduling.step)
    text.ensemble_scheduling.step.add(
        model_name=TOKENIZER, model_version=-1, input_map={t.name: t.name for t in (*generated, threshold)},
        output_map={t.name: t.name for t in answer})
    for key, value in qa.parameters.items():
        text.parameters[key].CopyFrom(value)
    return {c.name: c for c in (tokenizer, text)}
