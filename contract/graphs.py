"""What the decode loop needs to know about the exported decoder graph, read from its inputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class DecoderSignature:
    """The decoder graph's cache inputs and their shape."""

    past_names: tuple[str, ...]  # past_key_values.* input names, in graph order
    num_heads: int
    head_dim: int
    d_model: int  # width of encoder_hidden_states

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, list]) -> "DecoderSignature":
        """Build from the graph's input names and shapes (`[batch, heads, length, head_dim]`)."""
        past = [name for name in inputs if name.startswith("past_key_values.")]
        if not past:
            raise ValueError("decoder graph has no past_key_values.* inputs: export it with past")
        if "attention_mask" not in inputs:
            raise ValueError("decoder graph has no attention_mask input: re-export it with this project's exporter")
        shape = inputs[past[0]]
        return cls(tuple(past), int(shape[1]), int(shape[3]), int(inputs["encoder_hidden_states"][2]))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DecoderSignature":
        return cls(tuple(values["past_names"]), int(values["num_heads"]), int(values["head_dim"]), int(values["d_model"]))

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def self_names(self) -> list[str]:
        return [n for n in self.past_names if ".decoder." in n]

    @property
    def cross_names(self) -> list[str]:
        return [n for n in self.past_names if ".encoder." in n]

    @staticmethod
    def present(past_name: str) -> str:
        return past_name.replace("past_key_values.", "present.", 1)
