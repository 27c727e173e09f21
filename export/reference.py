"""The PyTorch reference that exported graphs and served answers must match: greedy decoding
of the checkpoint itself.

`transformers` `generate(do_sample=False, num_beams=1)` wherever it works. `transformers`
4.57.6 cannot decode checkpoints whose decoder has another depth than their encoder
(`num_decoder_layers != num_layers`: its cache raises IndexError); those get a plain loop that
re-runs the whole decoder on the tokens so far at every step (no cache, nothing to get wrong)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import T5ForConditionalGeneration

from contract.tokens import TokenIds


@dataclass
class Reference:
    """Greedy output. Row i's answer is `tokens[i, :lengths[i]]` (`</s>` included when emitted),
    then the pad id; `logits[i, t]` are the scores that chose `tokens[i, t]`."""

    tokens: np.ndarray  # int64 [batch, steps]
    lengths: np.ndarray  # int32 [batch]
    logits: np.ndarray  # float32 [batch, steps, vocab]

    def answer(self, row: int) -> list[int]:
        return self.tokens[row, : self.lengths[row]].tolist()


def generate_supported(model: T5ForConditionalGeneration) -> bool:
    """Whether `transformers`' `generate` can decode this checkpoint (see the module docstring)."""
    config = model.config
    return config.num_decoder_layers in (None, config.num_layers)


def greedy_reference(model: T5ForConditionalGeneration, input_ids: np.ndarray, attention_mask: np.ndarray,
                     max_new_tokens: int) -> Reference:
    """Greedy decoding of a right-padded batch, at most `max_new_tokens` per row, on the model's device."""
    tokens = TokenIds.from_model_config(model.config)
    ids = torch.from_numpy(np.asarray(input_ids, np.int64)).to(model.device)
    mask = torch.from_numpy(np.asarray(attention_mask, np.int64)).to(model.device)
    with torch.inference_mode():
        if generate_supported(model):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, output_logits=True, return_dict_in_generate=True)
            chosen, logits = out.sequences[:, 1:], torch.stack(out.logits, dim=1)
        else:
            chosen, logits = _plain_loop(model, ids, mask, max_new_tokens, tokens)
    chosen = chosen.cpu().numpy()
    ended = chosen == tokens.eos
    lengths = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, chosen.shape[1]).astype(np.int32)
    chosen = np.where(np.arange(chosen.shape[1]) < lengths[:, None], chosen, tokens.pad)
    return Reference(chosen, lengths, logits.float().cpu().numpy())


def _plain_loop(model: T5ForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                tokens: TokenIds) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
    sequence = torch.full((len(ids), 1), tokens.decoder_start, dtype=torch.long, device=ids.device)
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    steps = []
    for _ in range(max_new_tokens):
        logits = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=sequence,
                       use_cache=False).logits[:, -1]
        chosen = torch.where(done, tokens.pad, logits.argmax(dim=-1))
        sequence = torch.cat([sequence, chosen[:, None]], dim=1)
        steps.append(logits)
        done |= chosen == tokens.eos
        if done.all():
            break
    return sequence[:, 1:], torch.stack(steps, dim=1)
