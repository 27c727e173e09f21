"""The in-process reference: `transformers` greedy `generate` on the checkpoint the server was
exported from, fed the very prompts/windows/batches the client sends (`client.batching.Plan`),
so its answers are comparable token for token with the server's."""
from __future__ import annotations

import numpy as np

from client.batching import ChunkResult, Plan
from client.prompt import EOS_ID


class TransformersReference:
    def __init__(self, checkpoint: str):
        import torch
        from transformers import T5ForConditionalGeneration

        self.torch = torch
        self.model = T5ForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int) -> ChunkResult:
        """Greedy answers with the server's contract: ids (decoder start dropped, padding after
        the length), lengths (`</s>` counted when emitted) and mean token log-probabilities."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model.generate(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                                      max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      output_logits=True, return_dict_in_generate=True)
        ids = out.sequences[:, 1:]
        log_probs = torch.log_softmax(torch.stack(out.logits, dim=1).double(), dim=-1)
        chosen = log_probs.gather(-1, ids[:, :, None]).squeeze(-1).numpy()
        ids = ids.numpy()
        ended = ids == EOS_ID
        lengths = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, ids.shape[1])
        scores = np.array([chosen[row, :length].mean() for row, length in enumerate(lengths)], dtype=np.float32)
        ids = np.where(np.arange(ids.shape[1]) < lengths[:, None], ids, 0)
        return ChunkResult(ids, lengths.reshape(-1, 1).astype(np.int32), scores.reshape(-1, 1))

    def run(self, plan: Plan, max_new_tokens: int) -> list[ChunkResult]:
        return [self.generate(chunk.input_ids, chunk.attention_mask, max_new_tokens) for chunk in plan.chunks]
