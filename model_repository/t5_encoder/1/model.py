"""Triton Python model `t5_encoder` (cpu and gpu-torch targets), after `t5_validate` has
checked the token ids: the T5 encoder graph on ONNX Runtime, or with the torch executor the
checkpoint's encoder on PyTorch, whose output stays on its device (handed to `t5_greedy`
through DLPack on a GPU). Requests of the same length that wait together run as one batch.
With `lazy_session` (cpu target, where `t5_greedy` runs the encoder graph itself) the graph
opens on the first request, so the weights are not held twice."""
from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract.names import ATTENTION_MASK, INPUT_IDS, LAST_HIDDEN_STATE
from contract.parameters import GraphParameters
from runtime.triton_utils import error_response, input_array, model_file, repository_file, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        p = GraphParameters.from_args(args)
        if p.executor == "torch":
            from runtime.torch_t5 import TorchEncoder
            self.encode = TorchEncoder(repository_file(args, p.checkpoint), p.device, p.dtype, p.intra_op_threads)
            self.on_device = p.device != "cpu"
        else:
            self.path, self.threads, self.on_device = model_file(args), p.intra_op_threads, False
            self.encode = self.open_and_encode if p.lazy_session else self.open()

    def open(self):
        """The encoder graph on ONNX Runtime, as an `encode(ids, mask)` function."""
        from runtime.onnx_runtime import EncoderGraph  # not in the GPU image
        return EncoderGraph(self.path, self.threads)

    def open_and_encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.encode = self.open()
        return self.encode(ids, mask)

    def output(self, states) -> "pb_utils.InferenceResponse":
        """A response holding `states`: device tensors through DLPack, host ones as NumPy."""
        if self.on_device:
            from torch.utils.dlpack import to_dlpack
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor.from_dlpack(LAST_HIDDEN_STATE, to_dlpack(states.contiguous()))])
        return response(**{LAST_HIDDEN_STATE: states if isinstance(states, np.ndarray) else states.numpy()})

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            input_ids, attention_mask = input_array(request, INPUT_IDS), input_array(request, ATTENTION_MASK)
            groups.setdefault(input_ids.shape[1], []).append((i, input_ids, attention_mask))
        for group in groups.values():
            try:
                states = self.encode(np.concatenate([g[1] for g in group]), np.concatenate([g[2] for g in group]))
            except Exception as error:  # noqa: BLE001 - every request must get an answer
                for i, _, _ in group:
                    responses[i] = error_response(f"encoder failed: {error}", invalid=False)
                continue
            start = 0
            for i, input_ids, _ in group:
                responses[i] = self.output(states[start: start + len(input_ids)])
                start += len(input_ids)
        return responses
