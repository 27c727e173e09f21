"""Greedy decoding with iteration-level batching over a T5 decoder step.

A `DecodeBatch` holds the rows being decoded and their key/value cache. Rows join at any step
(`admit`: one decoder call computes their first token and their cross-attention keys/values)
and leave as soon as they emit `</s>` or reach their limit (`step`). Rows that joined at
different times have self-attention caches of different lengths: the shorter ones are
left-padded and masked out through the decoder's `attention_mask`. T5's attention bias depends
only on the distance between positions, so padding on the left changes nothing but the
summation order (differences ~1e-6 on the logits).

The batch knows nothing about Triton nor about requests: `admit` and `step` return the rows
that finished, and whoever drives the batch answers them (`t5_greedy`'s scheduler thread,
`runtime.scheduler`; the exporter's validation through `greedy_generate`). Both call the graph through a `RunGraph` callable and speak the tensor
names of the merged decoder exported by `export.onnx_export`: `input_ids`, `attention_mask`
(decoder), `encoder_attention_mask`, `encoder_hidden_states`, `use_cache_branch`,
`past_key_values.{layer}.{decoder|encoder}.{key|value}` in; `logits` and `present.*` out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from contract.graphs import DecoderSignature
from contract.limits import CROSS_WIDTH_STEP, MAX_INPUT_TOKENS, TRIM_COLUMNS
from contract.tokens import TokenIds
from runtime.arrays import NumpyArrays

Tensors = dict[str, np.ndarray]
RunGraph = Callable[[Tensors, list[str]], Tensors]
"""Runs the merged decoder graph: (feed, requested output names) -> outputs by name."""
LogitsHook = Callable[[list["Sequence"], np.ndarray], None]
"""Sees each decoder call's live rows and their next-token logits `[rows, vocab]` (validation)."""


def split_feed(feed: Tensors, signature: DecoderSignature) -> tuple[bool, Tensors]:
    """For a decoder exported as two graphs (TensorRT cannot build the merged graph's If):
    whether this call is a first step (-> the no-past graph) and the feed that graph takes."""
    first = not bool(feed["use_cache_branch"][0])
    drop = {"use_cache_branch", *signature.past_names} if first else {"use_cache_branch", "encoder_hidden_states"}
    return first, {name: value for name, value in feed.items() if name not in drop}


@dataclass(eq=False)
class Sequence:
    """One row to decode: its encoder output, its limit, and what it has produced so far."""

    states: Any  # [encoder_length, d_model]: a NumPy array, or a torch tensor with `runtime.arrays.TorchArrays`
    mask: np.ndarray  # [encoder_length] int64
    limit: int
    tokens: list[int] = field(default_factory=list)
    log_prob: float = 0.0
    owner: Any = None  # what the row belongs to (a request); the batch never looks at it
    input_ids: np.ndarray | None = None  # [encoder_length]: the prompt, until `runtime.encoding` sets `states`

    @property
    def needs_encoding(self) -> int:
        """Prompt tokens still to encode (0 once `states` is set)."""
        return 0 if self.input_ids is None else len(self.input_ids)

    @property
    def score(self) -> float:
        """Mean log-probability of the tokens produced."""
        return self.log_prob / max(len(self.tokens), 1)


class DecodeBatch:
    """The rows being decoded together and their cache; see the module docstring.

    Rows live in slots. A finished row leaves a hole that later steps still compute (cheap:
    a step's cost is mostly reading the weights) instead of a copy of the whole cache, which
    for t5-base at batch 16 is ~240 MB of cross-attention keys and values; joining rows fill
    holes in place. The arrays are compacted when holes outnumber the rows. The padding no row
    uses is trimmed as soon as it is worth a copy (`TRIM_COLUMNS`): the self-attention cache's
    oldest columns (every row lives at most its limit of steps, so the past stays within the
    longest limit plus `TRIM_COLUMNS`, however long rows keep joining), and the cross-attention
    cache's widest columns once the rows that needed them left. The cross-attention cache grows
    and shrinks in steps of `CROSS_WIDTH_STEP` columns (`cross_width`), so that rows of similar
    lengths come and go without copying it. Memory and step cost follow the rows being decoded,
    not the history of the batch. Rows that find no hole are appended into spare rows of the
    cross-attention cache's buffers (`_append_cross`): a buffer that runs out doubles, so an
    append copies only its own rows, not every row's cache."""

    def __init__(self, run: RunGraph, signature: DecoderSignature, tokens: TokenIds, arrays=None,
                 on_logits: LogitsHook | None = None):
        """`tokens`: the checkpoint's decoder start, `</s>` and pad ids. `arrays`
        (`runtime.arrays`) handles the states, cache and logits; NumPy by default."""
        self._run = run
        self._sig = signature
        self._tokens = tokens
        self._on_logits = on_logits
        self._xp = arrays or NumpyArrays()
        self.slots: list[Sequence | None] = []  # None: a hole
        self._cache: Tensors = {}  # self-attention [B, H, P, D] (left-padded), cross [B, H, S, D]
        self._cross_buffers: Tensors = {}  # each cross cache is the first B rows of its buffer
        self._decoder_mask = np.zeros((0, 0), np.int64)  # [B, P]: 1 where the self cache is real
        self._encoder_mask = np.zeros((0, 0), np.int64)  # [B, S]
        self._last = np.zeros(0, np.int64)  # [B]: each slot's latest token
        self.calls = 0  # decoder graph calls made

    @property
    def rows(self) -> list[Sequence]:
        return [row for row in self.slots if row is not None]

    def __len__(self) -> int:
        return sum(row is not None for row in self.slots)

    def admit(self, new: list[Sequence]) -> list[Sequence]:
        """First step for `new` rows (one graph call), then they join the running rows.
        Returns the rows that finished already (one token)."""
        if not new:
            return []
        xp = self._xp
        width = max(len(s.mask) for s in new)
        states = xp.stack([xp.pad(s.states, 0, width) for s in new])
        for row in new:
            row.states = None  # held by the cache from now on; do not keep the request's copy alive
        mask = np.stack([NumpyArrays.pad(s.mask, 0, width) for s in new]).astype(np.int64)
        empty = xp.zeros((len(new), self._sig.num_heads, 0, self._sig.head_dim), like=states)
        feed = {"input_ids": np.full((len(new), 1), self._tokens.decoder_start, np.int64),
                "attention_mask": np.ones((len(new), 1), np.int64),
                "encoder_attention_mask": mask, "encoder_hidden_states": states,
                "use_cache_branch": np.array([False]), **{n: empty for n in self._sig.past_names}}
        out = self._run(feed, ["logits", *(self._sig.present(n) for n in self._sig.past_names)])
        self.calls += 1
        running = self._choose(new, out["logits"][:, -1, :])
        keep = [i for i, still in enumerate(running) if still]
        if keep:  # indexing copies the cache (~29 ms per admission at 16 clients, t5-base): only if a row is done
            every = len(keep) == len(new)
            cache = {n: out[self._sig.present(n)] if every else out[self._sig.present(n)][keep]
                     for n in self._sig.past_names}
            self._join([new[i] for i in keep], cache, mask if every else mask[keep])
        return [row for row, still in zip(new, running) if not still]

    def step(self) -> list[Sequence]:
        """One decoder call for every slot; finished rows leave holes and are returned."""
        if not len(self):
            return []
        slots = len(self.slots)
        decoder_mask = np.concatenate([self._decoder_mask, np.ones((slots, 1), np.int64)], axis=1)
        # A hole attends to its newest position only: a mask that kept the columns of every step
        # since the hole opened would hold back `_trim` for as long as the hole lasts, and under
        # steady load, with more slots than rows, the highest hole is never filled (the past grew
        # by a column per step: +400 MB in four minutes of the soak's load, t5-base).
        holes = [i for i, row in enumerate(self.slots) if row is None]
        decoder_mask[holes, :-1] = 0
        feed = {"input_ids": self._last[:, None], "attention_mask": decoder_mask,
                "encoder_attention_mask": self._encoder_mask,
                # The cache branch does not read the encoder output: a one-position stand-in.
                "encoder_hidden_states": self._xp.zeros((slots, 1, self._sig.d_model),
                                                        like=self._cache[self._sig.self_names[0]]),
                "use_cache_branch": np.array([True]), **self._cache}
        out = self._run(feed, ["logits", *(self._sig.present(n) for n in self._sig.self_names)])
        self.calls += 1
        for name in self._sig.self_names:
            self._cache[name] = out[self._sig.present(name)]
        self._decoder_mask = decoder_mask
        live = [i for i, row in enumerate(self.slots) if row is not None]
        running = self._choose([self.slots[i] for i in live], out["logits"][live, -1, :])
        finished = [self.slots[i] for i, still in zip(live, running) if not still]
        for i, still in zip(live, running):
            if still:
                self._last[i] = self.slots[i].tokens[-1]
            else:
                self._leave(i)
        self._compact_if_sparse()
        return finished

    def drop(self, rows: list[Sequence]) -> None:
        """Take `rows` out of the batch unfinished (their requests were cancelled)."""
        for i, row in enumerate(self.slots):
            if row is not None and any(row is r for r in rows):
                self._leave(i)
        self._compact_if_sparse()

    def _leave(self, slot: int) -> None:
        self.slots[slot] = None
        self._last[slot] = self._tokens.pad
        self._decoder_mask[slot] = 0
        self._encoder_mask[slot] = 0  # a hole attends to one position: never to nothing
        self._encoder_mask[slot, 0] = 1

    def _compact_if_sparse(self) -> None:
        holes = len(self.slots) - len(self)
        if holes and holes >= len(self):
            self._compact()
        elif len(self):
            self._trim()

    def _trim(self) -> None:
        """Drop cache columns no row uses once there are enough of them (one copy)."""
        xp = self._xp
        first = int(self._decoder_mask.any(axis=0).argmax())  # leading all-padding columns
        if first >= TRIM_COLUMNS:
            self._decoder_mask = np.ascontiguousarray(self._decoder_mask[:, first:])
            for n in self._sig.self_names:
                self._cache[n] = xp.contiguous(self._cache[n][:, :, first:])
        width = self._encoder_mask.shape[1]
        end = cross_width(int(np.flatnonzero(self._encoder_mask.any(axis=0))[-1]) + 1)  # trailing padding
        # A copy of every row's cross cache (~40 ms per 16 MB layer tensor at batch 16) pays for
        # itself over many steps only when it halves the width: rarely trimmed, and then for good.
        if width - end >= max(2 * CROSS_WIDTH_STEP, width // 2):
            self._encoder_mask = np.ascontiguousarray(self._encoder_mask[:, :end])
            for n in self._sig.cross_names:
                self._set_cross(n, xp.contiguous(self._cache[n][:, :, :end]))

    def _choose(self, rows: list[Sequence], logits: np.ndarray) -> list[bool]:
        """Greedy choice: each row's most likely token, and its log-probability for the score.
        Returns which rows go on (not `</s>`, not at their limit)."""
        if self._on_logits is not None:
            self._on_logits(rows, logits)
        chosen = self._xp.argmax(logits)
        running = []
        for row, token, log_prob in zip(rows, chosen, self._xp.log_probs(logits, chosen)):
            row.tokens.append(token)
            row.log_prob += log_prob
            running.append(token != self._tokens.eos and len(row.tokens) < row.limit)
        return running

    def _compact(self) -> None:
        """Drop the holes, then the cache columns no remaining row uses (copies the cache)."""
        keep = [i for i, row in enumerate(self.slots) if row is not None]
        self.slots = [self.slots[i] for i in keep]
        self._last = self._last[keep]
        self._decoder_mask = self._decoder_mask[keep]
        self._encoder_mask = self._encoder_mask[keep]
        if not self.slots:
            self._cache, self._cross_buffers = {}, {}
            return
        first = int(self._decoder_mask.any(axis=0).argmax())  # leading all-padding columns
        used = int(np.flatnonzero(self._encoder_mask.any(axis=0))[-1]) + 1  # before trailing padding
        end = min(cross_width(used), self._encoder_mask.shape[1])
        self._decoder_mask = self._decoder_mask[:, first:]
        self._encoder_mask = self._encoder_mask[:, :end]
        for n in self._sig.self_names:
            self._cache[n] = self._cache[n][keep, :, first:]
        for n in self._sig.cross_names:
            self._set_cross(n, self._cache[n][keep, :, :end])

    def _join(self, rows: list[Sequence], cache: Tensors, encoder_mask: np.ndarray) -> None:
        """Place rows whose first token is chosen (self cache of length 1) into holes, in
        place, or append them; widen the cross-attention cache only when they need it."""
        if not len(self):
            self.slots, self._cache = list(rows), dict(cache)
            self._cross_buffers = {n: cache[n] for n in self._sig.cross_names}
            self._decoder_mask = np.ones((len(rows), 1), np.int64)
            self._encoder_mask, self._last = encoder_mask, np.array([r.tokens[-1] for r in rows], np.int64)
            return
        xp = self._xp
        if encoder_mask.shape[1] > self._encoder_mask.shape[1]:  # widen everything (copies)
            width = cross_width(encoder_mask.shape[1])
            self._encoder_mask = NumpyArrays.pad(self._encoder_mask, 1, width)
            for n in self._sig.cross_names:
                self._set_cross(n, xp.pad(self._cache[n], 2, width))
        width, past = self._encoder_mask.shape[1], self._decoder_mask.shape[1]
        holes = [i for i, row in enumerate(self.slots) if row is None]
        placed = min(len(holes), len(rows))
        for j, slot in enumerate(holes[:placed]):  # in place: copies only the new rows' data
            self.slots[slot] = rows[j]
            self._last[slot] = rows[j].tokens[-1]
            self._decoder_mask[slot] = 0
            self._decoder_mask[slot, -1] = 1
            self._encoder_mask[slot] = 0
            self._encoder_mask[slot, : encoder_mask.shape[1]] = encoder_mask[j]
            for n in self._sig.self_names:
                self._cache[n][slot] = 0
                self._cache[n][slot, :, -1:] = cache[n][j]
            for n in self._sig.cross_names:  # the new row's columns, then zeros past them
                self._cache[n][slot, :, : encoder_mask.shape[1]] = cache[n][j]
                self._cache[n][slot, :, encoder_mask.shape[1]:] = 0
        if placed == len(rows):
            return
        extra = slice(placed, None)  # no holes left: append
        for n in self._sig.self_names:  # a few columns per row: copied
            self._cache[n] = xp.cat([self._cache[n], xp.pad(cache[n][extra], 2, past, left=True)])
        for n in self._sig.cross_names:
            self._append_cross(n, cache[n][extra])
        new_mask = NumpyArrays.pad(np.ones((len(rows) - placed, 1), np.int64), 1, past, left=True)
        self._decoder_mask = np.concatenate([self._decoder_mask, new_mask])
        self._encoder_mask = np.concatenate([self._encoder_mask, NumpyArrays.pad(encoder_mask[extra], 1, width)])
        self.slots += rows[placed:]
        self._last = np.concatenate([self._last, [r.tokens[-1] for r in rows[placed:]]]).astype(np.int64)

    def _set_cross(self, name: str, array) -> None:
        """A new cross cache (`array`, a buffer with no spare rows)."""
        self._cache[name] = self._cross_buffers[name] = array

    def _append_cross(self, name: str, rows) -> None:
        """Append `rows` ([k, H, columns, D], columns within the cache's width) to the cross cache,
        into its buffer's spare rows (zeros from the allocation: a buffer's rows past the cache
        were never written). Only when the buffer is full: a buffer twice the rows needed,
        with the cache copied in once. Untouched spare rows cost no memory on the host (fresh
        zero pages) until a row is written there."""
        cache, buffer = self._cache[name], self._cross_buffers[name]
        used, need = cache.shape[0], cache.shape[0] + rows.shape[0]
        if buffer.shape[0] < need:
            buffer = self._xp.zeros((2 * need, *cache.shape[1:]), like=cache)
            buffer[:used] = cache
            self._cross_buffers[name] = buffer
        buffer[used:need, :, : rows.shape[2]] = rows
        self._cache[name] = buffer[:need]


def cross_width(columns: int) -> int:
    """The cross-attention cache's width for rows needing `columns`: the next multiple of
    CROSS_WIDTH_STEP, not beyond MAX_INPUT_TOKENS (the widest any engine profile takes)."""
    return max(columns, min(-(-columns // CROSS_WIDTH_STEP) * CROSS_WIDTH_STEP, MAX_INPUT_TOKENS))


@dataclass
class Generation:
    """Greedy output: `tokens[i, :lengths[i]]` are row i's new tokens, `</s>` included if emitted."""

    tokens: np.ndarray  # int64 [batch, longest], the pad id after each row's end
    lengths: np.ndarray  # int32 [batch]
    scores: np.ndarray  # float32 [batch]: mean log-probability of the row's tokens
    steps: int  # decoder calls made


def collect(rows: list[Sequence], pad_id: int) -> Generation:
    """Finished rows as padded arrays, in the given order."""
    lengths = np.array([len(r.tokens) for r in rows], dtype=np.int32)
    tokens = np.full((len(rows), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row.tokens)] = row.tokens
    return Generation(tokens, lengths, np.array([r.score for r in rows], dtype=np.float32), 0)


def greedy_generate(run: RunGraph, signature: DecoderSignature, tokens: TokenIds, encoder_hidden_states,
                    encoder_attention_mask: np.ndarray, max_new_tokens: np.ndarray,
                    on_step: Callable[[DecodeBatch], None] | None = None, arrays=None,
                    on_logits: Callable[[list[int], np.ndarray], None] | None = None) -> Generation:
    """Decode one batch to the end: token-for-token what `transformers`
    `generate(do_sample=False, num_beams=1)` returns. `on_step` sees the batch after each call;
    `on_logits` each call's logits with the indices (in this batch) of the rows they belong to."""
    limits = np.asarray(max_new_tokens, dtype=np.int64).reshape(-1)
    rows = [Sequence(s, m, int(n)) for s, m, n in zip(encoder_hidden_states, encoder_attention_mask, limits)]
    index = {id(row): i for i, row in enumerate(rows)}
    hook = None if on_logits is None else lambda live, logits: on_logits([index[id(r)] for r in live], logits)
    batch = DecodeBatch(run, signature, tokens, arrays, hook)
    batch.admit(rows)
    if on_step:
        on_step(batch)
    while len(batch):
        batch.step()
        if on_step:
            on_step(batch)
    generation = collect(rows, tokens.pad)
    generation.steps = batch.calls
    return generation
