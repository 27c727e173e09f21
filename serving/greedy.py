"""Greedy decoding with iteration-level batching over a T5 decoder step.

A `DecodeBatch` holds the rows being decoded and their key/value cache. Rows join at any step
(`admit`: one decoder call computes their first token and their cross-attention keys/values)
and leave as soon as they emit `</s>` or reach their limit (`step`). Rows that joined at
different times have self-attention caches of different lengths: the shorter ones are
left-padded and masked out through the decoder's `attention_mask`. T5's attention bias depends
only on the distance between positions, so padding on the left changes nothing but the
summation order (differences ~1e-6 on the logits).

The batch is pure NumPy and knows nothing about Triton: `t5_greedy` drives one from its
scheduler thread (`serving.scheduler`), the exporter validates the ONNX graphs with
`greedy_generate`. Both call the graph through a `RunGraph` callable and speak the tensor
names of the merged decoder exported by `export.onnx_export`: `input_ids`, `attention_mask`
(decoder), `encoder_attention_mask`, `encoder_hidden_states`, `use_cache_branch`,
`past_key_values.{layer}.{decoder|encoder}.{key|value}` in; `logits` and `present.*` out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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

    @property
    def self_names(self) -> list[str]:
        return [n for n in self.past_names if ".decoder." in n]

    @property
    def cross_names(self) -> list[str]:
        return [n for n in self.past_names if ".encoder." in n]

    @staticmethod
    def present(past_name: str) -> str:
        return past_name.replace("past_key_values.", "present.", 1)


@dataclass(eq=False)
class Sequence:
    """One row to decode: its encoder output, its limit, and what it has produced so far."""

    states: np.ndarray  # [encoder_length, d_model]
    mask: np.ndarray  # [encoder_length] int64
    limit: int
    tokens: list[int] = field(default_factory=list)
    log_prob: float = 0.0
    on_done: Callable[["Sequence"], None] | None = None
    on_error: Callable[["Sequence", Exception], None] | None = None

    @property
    def score(self) -> float:
        """Mean log-probability of the tokens produced."""
        return self.log_prob / max(len(self.tokens), 1)


def chosen_log_probs(logits: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """log softmax(logits)[chosen] per row, computed stably in float64."""
    logits = logits.astype(np.float64, copy=False)
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    return logits[np.arange(len(chosen)), chosen] - log_norm


def _pad_axis(array: np.ndarray, axis: int, width: int, left: bool = False) -> np.ndarray:
    extra = width - array.shape[axis]
    if extra <= 0:
        return array
    padding = [(0, 0)] * array.ndim
    padding[axis] = (extra, 0) if left else (0, extra)
    return np.pad(array, padding)


class DecodeBatch:
    """The rows being decoded together and their cache; see the module docstring."""

    def __init__(self, run: RunGraph, signature: DecoderSignature):
        self._run = run
        self._sig = signature
        self.rows: list[Sequence] = []
        self._cache: Tensors = {}  # self-attention [B, H, P, D] (left-padded), cross [B, H, S, D]
        self._decoder_mask = np.zeros((0, 0), np.int64)  # [B, P]: 1 where the self cache is real
        self._encoder_mask = np.zeros((0, 0), np.int64)  # [B, S]
        self._last = np.zeros(0, np.int64)  # [B]: each row's latest token
        self.calls = 0  # decoder graph calls made

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, new: list[Sequence]) -> None:
        """First step for `new` rows (one graph call), then they join the running rows."""
        if not new:
            return
        width = max(len(s.mask) for s in new)
        states = np.stack([_pad_axis(s.states, 0, width) for s in new])
        mask = np.stack([_pad_axis(s.mask, 0, width) for s in new]).astype(np.int64)
        empty = np.zeros((len(new), self._sig.num_heads, 0, self._sig.head_dim), dtype=states.dtype)
        feed = {"input_ids": np.full((len(new), 1), DECODER_START_ID, np.int64),
                "attention_mask": np.ones((len(new), 1), np.int64),
                "encoder_attention_mask": mask, "encoder_hidden_states": states,
                "use_cache_branch": np.array([False]), **{n: empty for n in self._sig.past_names}}
        out = self._run(feed, ["logits", *(self._sig.present(n) for n in self._sig.past_names)])
        self.calls += 1
        cache = {n: out[self._sig.present(n)] for n in self._sig.past_names}
        keep = self._choose(new, out["logits"][:, -1, :])
        self._join([new[i] for i in keep], {n: v[keep] for n, v in cache.items()},
                   np.ones((len(keep), 1), np.int64), mask[keep])

    def step(self) -> None:
        """One decoder call for every running row; finished rows leave."""
        if not self.rows:
            return
        batch = len(self.rows)
        decoder_mask = np.concatenate([self._decoder_mask, np.ones((batch, 1), np.int64)], axis=1)
        feed = {"input_ids": self._last[:, None], "attention_mask": decoder_mask,
                "encoder_attention_mask": self._encoder_mask,
                # The cache branch does not read the encoder output: a one-position stand-in.
                "encoder_hidden_states": np.zeros((batch, 1, self._sig.d_model), np.float32),
                "use_cache_branch": np.array([True]), **self._cache}
        out = self._run(feed, ["logits", *(self._sig.present(n) for n in self._sig.self_names)])
        self.calls += 1
        for name in self._sig.self_names:
            self._cache[name] = out[self._sig.present(name)]
        self._decoder_mask = decoder_mask
        keep = self._choose(self.rows, out["logits"][:, -1, :])
        if len(keep) < batch:
            self._select(keep)

    def _choose(self, rows: list[Sequence], logits: np.ndarray) -> np.ndarray:
        """Greedy token per row; finished rows are reported. Returns the rows still running."""
        chosen = logits.argmax(axis=-1)
        log_probs = chosen_log_probs(logits, chosen)
        running = []
        for i, (row, token) in enumerate(zip(rows, chosen.tolist())):
            row.tokens.append(token)
            row.log_prob += float(log_probs[i])
            if token == EOS_ID or len(row.tokens) >= row.limit:
                if row.on_done is not None:
                    row.on_done(row)
            else:
                running.append(i)
        return np.array(running, dtype=np.int64)

    def _select(self, keep: np.ndarray) -> None:
        """Keep only rows `keep`, then drop cache columns no remaining row uses."""
        self.rows = [self.rows[i] for i in keep]
        self._last = self._last[keep]
        self._decoder_mask = self._decoder_mask[keep]
        self._encoder_mask = self._encoder_mask[keep]
        self._cache = {n: v[keep] for n, v in self._cache.items()}
        if not self.rows:
            return
        first = int(self._decoder_mask.any(axis=0).argmax())  # leading all-padding columns
        end = int(np.flatnonzero(self._encoder_mask.any(axis=0))[-1]) + 1  # trailing encoder padding
        if first or end < self._encoder_mask.shape[1]:
            self._decoder_mask = self._decoder_mask[:, first:]
            self._encoder_mask = self._encoder_mask[:, :end]
            for n in self._sig.self_names:
                self._cache[n] = self._cache[n][:, :, first:]
            for n in self._sig.cross_names:
                self._cache[n] = self._cache[n][:, :, :end]

    def _join(self, rows: list[Sequence], cache: Tensors, decoder_mask: np.ndarray, encoder_mask: np.ndarray) -> None:
        """Append rows whose first token is chosen; pad both batches' caches to common widths."""
        if not rows:
            return
        last = np.array([r.tokens[-1] for r in rows], dtype=np.int64)
        if not self.rows:
            self.rows, self._cache, self._last = rows, cache, last
            self._decoder_mask, self._encoder_mask = decoder_mask, encoder_mask
            return
        past = max(self._decoder_mask.shape[1], decoder_mask.shape[1])
        width = max(self._encoder_mask.shape[1], encoder_mask.shape[1])
        for name in self._sig.self_names:
            self._cache[name] = np.concatenate(
                [_pad_axis(self._cache[name], 2, past, left=True), _pad_axis(cache[name], 2, past, left=True)])
        for name in self._sig.cross_names:
            self._cache[name] = np.concatenate([_pad_axis(self._cache[name], 2, width), _pad_axis(cache[name], 2, width)])
        self._decoder_mask = np.concatenate([_pad_axis(self._decoder_mask, 1, past, left=True),
                                             _pad_axis(decoder_mask, 1, past, left=True)])
        self._encoder_mask = np.concatenate([_pad_axis(self._encoder_mask, 1, width), _pad_axis(encoder_mask, 1, width)])
        self.rows = self.rows + rows
        self._last = np.concatenate([self._last, last])


@dataclass
class Generation:
    """Greedy output: `tokens[i, :lengths[i]]` are row i's new tokens, `</s>` included if emitted."""

    tokens: np.ndarray  # int64 [batch, longest], PAD_ID after each row's end
    lengths: np.ndarray  # int32 [batch]
    scores: np.ndarray  # float32 [batch]: mean log-probability of the row's tokens
    steps: int  # decoder calls made


def collect(rows: list[Sequence]) -> Generation:
    """Finished rows as padded arrays, in the given order."""
    lengths = np.array([len(r.tokens) for r in rows], dtype=np.int32)
    tokens = np.full((len(rows), int(lengths.max(initial=0))), PAD_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row.tokens)] = row.tokens
    return Generation(tokens, lengths, np.array([r.score for r in rows], dtype=np.float32), 0)


def greedy_generate(run: RunGraph, signature: DecoderSignature, encoder_hidden_states: np.ndarray,
                    encoder_attention_mask: np.ndarray, max_new_tokens: np.ndarray,
                    on_step: Callable[[DecodeBatch], None] | None = None) -> Generation:
    """Decode one batch to the end: token-for-token what `transformers`
    `generate(do_sample=False, num_beams=1)` returns. `on_step` sees the batch after each call."""
    limits = np.asarray(max_new_tokens, dtype=np.int64).reshape(-1)
    rows = [Sequence(s, m, int(n)) for s, m, n in zip(encoder_hidden_states, encoder_attention_mask, limits)]
    batch = DecodeBatch(run, signature)
    batch.admit(rows)
    if on_step:
        on_step(batch)
    while len(batch):
        batch.step()
        if on_step:
            on_step(batch)
    generation = collect(rows)
    generation.steps = batch.calls
    return generation
