"""Triton Python model `t5_decoder` (Python-backend targets): one step of Optimum's merged T5
decoder graph on ONNX Runtime, for direct step calls. Returns only the outputs the caller asks
for, so later steps do not send the unchanged cross-attention keys and values back.

With `lazy_session` (where `t5_greedy` runs the decoder in its own process) the session opens
on the first request, so the weights are not held twice, and ONNX Runtime is imported only then
(the GPU image has none). A repository built for the torch executor holds the checkpoint and no
graph (`export.checkpoint`): there every call is answered with an error saying so."""
from __future__ import annotations

from pathlib import Path

from contract.parameters import GraphParameters
from runtime.triton_utils import error_response, input_array, model_file, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = GraphParameters.from_args(args)
        self.path, self.threads = model_file(args), params.intra_op_threads
        self.session = None
        if not params.lazy_session:
            self.open()

    def open(self) -> None:
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path} not found: this repository was built for the torch executor, "
                                    "which runs the checkpoint and exports no decoder graph; build it with "
                                    "the onnxruntime executor to call decoder steps directly")
        from runtime.onnx_runtime import open_session, run_graph
        self.run_graph = run_graph
        self.session = open_session(self.path, self.threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        if self.session is None:
            try:
                self.open()
            except FileNotFoundError as error:
                return [error_response(str(error), invalid=False) for _ in requests]
        responses = []
        for request in requests:
            feed = {name: input_array(request, name) for name in self.input_names}
            wanted = request.requested_output_names() or self.output_names
            try:
                responses.append(response(**self.run_graph(self.session, feed, list(wanted))))
            except Exception as error:  # noqa: BLE001 - ONNX Runtime names the bad input
                responses.append(error_response(f"decoder step failed: {error}"))
        return responses
