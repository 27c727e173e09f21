"""Helpers for the Python-backend models: parameters, typed errors, input access.

Imported only inside Triton's Python stub, where `triton_python_backend_utils` exists."""
from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.validation import InvalidRequest  # noqa: F401 - the models import it from here


def parameters(args: dict) -> dict[str, str]:
    """The `parameters` block of the model's config, as plain strings."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def model_file(args: dict, filename: str = "model.onnx") -> str:
    return f"{args['model_repository']}/{args['model_version']}/{filename}"


def error_response(message: str, invalid: bool = True, code: str | None = None) -> "pb_utils.InferenceResponse":
    """An error response; `code` ('UNAVAILABLE', ...) overrides INVALID_ARG/INTERNAL."""
    if code is None:
        code = "INVALID_ARG" if invalid else "INTERNAL"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))


def input_array(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def response(**outputs: np.ndarray) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])
