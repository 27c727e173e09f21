"""Triton Python model `t5_validate`, the first step of `t5_qa` on every target: checks the
token ids of each request (`serving.validation`) and passes valid ones on unchanged to the
encoder; a native (GPU) encoder would otherwise read out-of-vocabulary ids or over-long inputs
unchecked."""
from __future__ import annotations

from serving.triton_utils import error_response, input_array, parameters, response
from serving.validation import InvalidRequest, check_token_ids


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.max_tokens = int(params["max_input_tokens"])
        self.vocab_size = int(params["vocab_size"])

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            input_ids, attention_mask = input_array(request, "input_ids"), input_array(request, "attention_mask")
            try:
                check_token_ids(input_ids, attention_mask, self.max_tokens, self.vocab_size)
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
                continue
            responses.append(response(valid_input_ids=input_ids, valid_attention_mask=attention_mask))
        return responses
