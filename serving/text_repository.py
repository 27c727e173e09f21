"""Configs of the text endpoint (`t5_qa_text`: UTF-8 question and context in, answer out),
built beside the token-id models by `serving.repository`. Not built yet: returns no models."""
from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc


def text_configs(manifest: dict, target: object, token_configs: dict[str, mc.ModelConfig]) -> dict[str, mc.ModelConfig]:
    """Configs of the text-endpoint models for `target`, given the token-id models' configs."""
    return {}
