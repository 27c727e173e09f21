"""Helpers for the Python-backend models: files, typed errors, input access. (Their
parameters: `contract.parameters`.)

Imported only inside Triton's Python stub, where `triton_python_backend_utils` exists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from contract.names import GRAPH
from runtime.validation import InvalidRequest  # noqa: F401 - the models import it from here


def repository_file(args: dict, relative: str) -> str:
    """A file of the model repository (`relative` to its root), from a model's `args`."""
    return str(Path(args["model_repository"]).parent / relative)


def model_file(args: dict, filename: str = GRAPH) -> str:
    """A file in this model's version folder."""
    return f"{args['model_repository']}/{args['model_version']}/{filename}"


def error_response(message: str, invalid: bool = True, code: str | None = None) -> "pb_utils.InferenceResponse":
    """An error response; `code` ('UNAVAILABLE', ...) overrides INVALID_ARG/INTERNAL."""
    if code is None:
        code = "INVALID_ARG" if invalid else "INTERNAL"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))


def input_array(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def has_input(request, name: str) -> bool:
    """Whether the request carries the (optional) input `name`."""
    return pb_utils.get_input_tensor_by_name(request, name) is not None


def response(**outputs: np.ndarray) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])
