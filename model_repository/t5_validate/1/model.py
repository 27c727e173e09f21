"""Triton Python model `t5_validate`, the first step of `t5_qa` on every target: checks the
token ids of each request (`runtime.validation`) and passes valid ones on unchanged to the
encoder; a native (GPU) encoder would otherwise read out-of-vocabulary ids or over-long inputs
unchecked."""
from __future__ import annotations

from contract.names import ATTENTION_MASK, INPUT_IDS
from contract.parameters import ValidateParameters
from runtime.triton_utils import error_response, input_array, response
from runtime.validation import InvalidRequest, check_token_ids


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.params = ValidateParameters.from_args(args)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            input_ids, attention_mask = input_array(request, INPUT_IDS), input_array(request, ATTENTION_MASK)
            try:
                check_token_ids(input_ids, attention_mask, self.params.max_input_tokens, self.params.vocab_size)
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
                continue
            responses.append(response(**{f"valid_{INPUT_IDS}": input_ids, f"valid_{ATTENTION_MASK}": attention_mask}))
        return responses
