"""Triton Python model `t5_decoder` (cpu target): one step of Optimum's merged T5 decoder
graph on ONNX Runtime. Returns only the outputs the caller asks for, so later steps do not
send the unchanged cross-attention keys and values back."""
from __future__ import annotations

from serving.onnx_runtime import open_session, run_graph
from serving.triton_utils import error_response, input_array, model_file, parameters, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.session = open_session(model_file(args), int(parameters(args)["intra_op_threads"]))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            feed = {name: input_array(request, name) for name in self.input_names}
            wanted = request.requested_output_names() or self.output_names
            try:
                responses.append(response(**run_graph(self.session, feed, list(wanted))))
            except Exception as error:  # noqa: BLE001 - ONNX Runtime names the bad input
                responses.append(error_response(f"decoder step failed: {error}"))
        return responses
