"""One evaluation run: the chosen dev-set questions through the server (asyncio client,
batches in flight concurrently), the official metric on the answers, and optionally the same
prompts through the in-process `transformers` reference, answer for answer."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from client.aio import AsyncQAClient
from client.batching import Plan
from client.core import config_parameter, is_demo
from client.progress import ProgressBar
from client.results import Answer
from shared_data import Question
from evaluation.squad_v2 import best_threshold, evaluate


@dataclass
class Run:
    questions: list[Question]
    answers: list[Answer]
    config: dict
    seconds: float
    plan: Plan  # the prompts and batches sent; the reference answers the same
    reference: dict | None = field(default=None)

    @property
    def predictions(self) -> dict[str, str]:
        return {q.id: a.text for q, a in zip(self.questions, self.answers)}

    def report(self) -> dict:
        golds = {q.id: list(q.answers) for q in self.questions}
        generated = {q.id: a.generated for q, a in zip(self.questions, self.answers)}
        confidence = {q.id: a.score for q, a in zip(self.questions, self.answers)}
        best_f1, f1_at = best_threshold(golds, generated, confidence, "f1")
        best_exact, exact_at = best_threshold(golds, generated, confidence, "exact")
        return {
            "questions": len(self.questions), "metrics": evaluate(golds, self.predictions),
            "best_f1": best_f1, "best_f1_threshold": f1_at, "best_exact": best_exact, "best_exact_threshold": exact_at,
            "seconds": round(self.seconds, 3), "questions_per_s": round(len(self.questions) / self.seconds, 3),
            "prompts": len(self.plan.rows), "batches": len(self.plan.chunks),
            "model_source": config_parameter(self.config, "model_source"), "demo_model": is_demo(self.config),
            "reference": self.reference,
        }


async def run_server(client: AsyncQAClient, questions: list[Question], max_new_tokens: int | None,
                     concurrency: int, progress: bool = True) -> Run:
    config = await client.model_config()
    plan = client.plan_for(config, [(q.question, q.context) for q in questions])
    bar = ProgressBar(len(questions)) if progress else None
    started = time.monotonic()
    answers = await client.answer_plan(plan, max_new_tokens, timeout_s=client.timeout_s * len(plan.chunks),
                                       concurrency=concurrency, progress=bar.update if bar else None)
    seconds = time.monotonic() - started
    if bar:
        bar.close()
    return Run(questions, answers, config, seconds, plan)


def compare_with_reference(client: AsyncQAClient, run: Run, checkpoint: str, max_new_tokens: int | None) -> dict:
    """Answer the same prompts with `transformers` and count identical answers (same tokens)."""
    from evaluation.reference import TransformersReference

    limit = max_new_tokens or int(config_parameter(run.config, "default_new_tokens", "32"))
    reference = TransformersReference(checkpoint)
    started = time.monotonic()
    expected = run.plan.answers(reference.run(run.plan, limit), client.no_answer_threshold, is_demo(run.config))
    seconds = time.monotonic() - started
    mismatches = [{"id": q.id, "server": a.text, "reference": e.text}
                  for q, a, e in zip(run.questions, run.answers, expected)
                  if a.token_ids != e.token_ids or a.text != e.text]
    identical = len(run.questions) - len(mismatches)
    return {"checkpoint": checkpoint, "total": len(run.questions), "identical": identical,
            "parity": identical / len(run.questions), "seconds": round(seconds, 3), "mismatches": mismatches[:20]}
