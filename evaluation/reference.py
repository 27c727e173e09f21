"""The in-process reference: greedy decoding of the checkpoint the server was exported from
(`export.reference`: `transformers` `generate` where it can), fed the very prompts/windows/
batches the client sends (`client.batching.Plan`), so its answers are comparable token for
token with the server's."""
from __future__ import annotations

import numpy as np

from client.batching import ChunkResult, Plan


class TransformersReference:
    def __init__(self, checkpoint: str):
        import torch
        from transformers import T5ForConditionalGeneration

        self.torch = torch
        self.model = T5ForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int) -> ChunkResult:
        """Greedy answers with the server's contract: ids (decoder start dropped, padding after
        the length), lengths (`</s>` counted when emitted) and mean token log-probabilities."""
        from export.reference import greedy_reference

        reference = greedy_reference(self.model, input_ids, attention_mask, max_new_tokens)
        log_probs = self.torch.log_softmax(self.torch.from_numpy(reference.logits).double(), dim=-1)
        chosen = log_probs.gather(-1, self.torch.from_numpy(reference.tokens)[:, :, None]).squeeze(-1).numpy()
        lengths = reference.lengths
        scores = np.array([chosen[row, :length].mean() for row, length in enumerate(lengths)], dtype=np.float32)
        return ChunkResult(reference.tokens, lengths.reshape(-1, 1).astype(np.int32), scores.reshape(-1, 1))

    def run(self, plan: Plan, max_new_tokens: int) -> list[ChunkResult]:
        return [self.generate(chunk.input_ids, chunk.attention_mask, max_new_tokens) for chunk in plan.chunks]
