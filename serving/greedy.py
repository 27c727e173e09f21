"""Greedy decoding over a T5 decoder step, with the key/value cache carried between steps.

The loop is pure NumPy and knows nothing about Triton: `t5_greedy` runs it with a step that
calls the `t5_decoder` model through BLS, the exporter validates the ONNX graphs with a step
that calls ONNX Runtime in-process. Both speak the tensor names of Optimum's merged decoder
(`decoder_model_merged.onnx`): `past_key_values.{layer}.{decoder|encoder}.{key|value}` in,
`present.{...}` and `logits` out, `use_cache_branch` choosing the branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from serving.limits import DECODER_START_ID, EOS_ID, PAD_ID

Tensors = dict[str, np.ndarray]
RunGraph = Callable[[Tensors, list[str]], Tensors]
"""Runs the merged decoder graph: (feed, requested output names) -> outputs by name."""


@dataclass(frozen=True)
class DecoderSignature:
    """What the loop needs to know about the decoder graph: its cache inputs and their shape."""

    past_names: tuple[str, ...]  # past_key_values.* input names, in graph order
    num_heads: int
    head_dim: int

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, list]) -> "DecoderSignature":
        """Build from the graph's input names and shapes (`[batch, heads, length, head_dim]`)."""
        past = [name for name in inputs if name.startswith("past_key_values.")]
        if not past:
            raise ValueError("decoder graph has no past_key_values.* inputs: export it with past")
        shape = inputs[past[0]]
        return cls(tuple(past), int(shape[1]), int(shape[3]))

    def present_name(self, past_name: str) -> str:
        return past_name.replace("past_key_values.", "present.", 1)

    def self_attention(self) -> list[str]:
        return [n for n in self.past_names if ".decoder." in n]


class CachedDecoder:
    """One decoder step with its cache: step 0 fills self- and cross-attention K/V, later
    steps feed them back and only the (growing) self-attention K/V come out again."""

    def __init__(self, run: RunGraph, signature: DecoderSignature):
        self._run = run
        self._sig = signature

    def __call__(
        self,
        input_ids: np.ndarray,
        encoder_hidden_states: np.ndarray,
        encoder_attention_mask: np.ndarray,
        past: Tensors | None,
    ) -> tuple[np.ndarray, Tensors]:
        """Return last-position logits `[batch, vocab]` and the cache for the next step."""
        first = past is None
        if first:
            empty = np.zeros(
                (input_ids.shape[0], self._sig.num_heads, 0, self._sig.head_dim),
                dtype=encoder_hidden_states.dtype,
            )
            past = {name: empty for name in self._sig.past_names}
        feed: Tensors = {
            "input_ids": input_ids,
            "encoder_hidden_states": encoder_hidden_states,
            "encoder_attention_mask": encoder_attention_mask,
            "use_cache_branch": np.array([not first]),
            **past,
        }
        wanted = self._sig.past_names if first else self._sig.self_attention()
        outputs = self._run(feed, ["logits", *(self._sig.present_name(n) for n in wanted)])
        new_past = dict(past)  # cross-attention K/V stay as computed at step 0
        for name in wanted:
            new_past[name] = outputs[self._sig.present_name(name)]
        return outputs["logits"][:, -1, :], new_past


@dataclass
class Generation:
    """Greedy output: `tokens[i, :lengths[i]]` are row i's new tokens, `</s>` included if emitted."""

    tokens: np.ndarray  # int64 [batch, longest], PAD_ID after each row's end
    lengths: np.ndarray  # int32 [batch]
    scores: np.ndarray  # float32 [batch]: mean log-probability of the row's tokens
    steps: int  # decoder calls made


def chosen_log_probs(logits: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """log softmax(logits)[chosen] per row, computed stably in float64."""
    logits = logits.astype(np.float64, copy=False)
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    return logits[np.arange(len(chosen)), chosen] - log_norm


def greedy_generate(
    step: Callable[[np.ndarray, np.ndarray, np.ndarray, Tensors | None], tuple[np.ndarray, Tensors]],
    encoder_hidden_states: np.ndarray,
    encoder_attention_mask: np.ndarray,
    max_new_tokens: np.ndarray,
) -> Generation:
    """Greedy decoding, token-for-token what `transformers` `generate(do_sample=False,
    num_beams=1)` returns. Each row stops at `</s>` or at its own `max_new_tokens`; rows that
    stop leave the batch at once, so later steps compute only the rows still running."""
    batch = encoder_hidden_states.shape[0]
    limits = np.asarray(max_new_tokens, dtype=np.int64).reshape(batch)
    tokens = np.full((batch, int(limits.max())), PAD_ID, dtype=np.int64)
    lengths = np.zeros(batch, dtype=np.int32)
    log_prob_sums = np.zeros(batch, dtype=np.float64)
    rows = np.arange(batch)  # original row of each running sequence
    states, mask = encoder_hidden_states, encoder_attention_mask
    next_ids = np.full((batch, 1), DECODER_START_ID, dtype=np.int64)
    past: Tensors | None = None
    steps = 0
    while rows.size:
        logits, past = step(next_ids, states, mask, past)
        steps += 1
        chosen = logits.argmax(axis=-1)
        log_prob_sums[rows] += chosen_log_probs(logits, chosen)
        tokens[rows, lengths[rows]] = chosen
        lengths[rows] += 1
        running = (chosen != EOS_ID) & (lengths[rows] < limits[rows])
        if not running.all():
            rows, chosen = rows[running], chosen[running]
            states, mask = states[running], mask[running]
            past = {name: value[running] for name, value in past.items()}
        next_ids = chosen[:, None].astype(np.int64)
    scores = (log_prob_sums / np.maximum(lengths, 1)).astype(np.float32)
    return Generation(tokens[:, : int(lengths.max(initial=0))], lengths, scores, steps)
