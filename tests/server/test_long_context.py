"""Long contexts: the windows cover the whole context with the configured overlap and repeat
the question; the answer reported is the best window's, checked against direct `generate`
calls on each window through the real server; a context whose only answering window is a
late one gets that window's answer."""
from __future__ import annotations

import numpy as np
import pytest

from client import QAClient
from client.errors import InvalidInput
from client.results import Answer
from client.windows import choose, context_windows
from shared_data import load_questions

QUESTION = "Which country is this text about?"


@pytest.fixture(scope="module")
def questions():
    return load_questions()


@pytest.fixture(scope="module")
def paragraphs(questions) -> list[str]:
    return list(dict.fromkeys(q.context for q in questions))


@pytest.fixture(scope="module")
def long_context(paragraphs) -> str:
    return " ".join(paragraphs[200:212])  # about 2300 tokens of plain English


def test_a_context_that_fits_is_one_whole_window(prompts):
    context = "The novel was written in 1851 by Herman Melville."
    [window] = context_windows(prompts, QUESTION, context)
    assert window.whole and (window.start, window.end) == (0, len(context))
    assert window.input_ids == prompts.encode(QUESTION, context)


@pytest.mark.parametrize("stride", [0, 64, 128, 300])
def test_windows_cover_the_context_with_the_configured_overlap(prompts, long_context, stride):
    full = prompts.tokens(QUESTION, long_context)
    budget = prompts.max_tokens - 1 - full.prefix
    windows = context_windows(prompts, QUESTION, long_context, stride)
    assert len(windows) > 1 and not any(w.whole for w in windows)
    assert windows[0].first == 0 and windows[-1].last == len(full.spans)
    for window in windows:
        assert len(window.input_ids) <= prompts.max_tokens
        assert window.input_ids == prompts.tokens(QUESTION, long_context[window.start: window.end]).ids
        assert window.input_ids[: full.prefix] == full.ids[: full.prefix], "the question is repeated as is"
        assert (window.start, window.end) == (full.spans[window.first][0], full.spans[window.last - 1][1])
    for before, after in zip(windows, windows[1:]):
        overlap = before.last - after.first
        assert stride <= overlap <= stride + 32, "cuts move back to a word boundary, by at most 32 tokens"
        assert before.last - before.first >= budget - 40, "windows before the last are (nearly) full"
        assert after.first > before.first
    covered = np.zeros(len(long_context), bool)
    for window in windows:
        covered[window.start: window.end] = True
    assert all(covered[i] or long_context[i].isspace() for i in range(len(long_context)))


def test_text_without_spaces_is_cut_between_tokens(prompts):
    context = "abcdefghijklmnopqrstuvwxyz0123456789" * 150
    windows = context_windows(prompts, QUESTION, context, stride=50)
    assert len(windows) > 1 and windows[0].start == 0 and windows[-1].end == len(context)
    assert all(len(w.input_ids) <= prompts.max_tokens for w in windows)
    assert all(b.start < a.end for a, b in zip(windows, windows[1:])), "windows overlap"


def test_stride_must_leave_room_in_each_window(prompts, long_context):
    budget = prompts.max_tokens - 1 - prompts.tokens(QUESTION, long_context).prefix
    with pytest.raises(InvalidInput, match=f"stride must be between 0 and {budget - 1}"):
        context_windows(prompts, QUESTION, long_context, stride=budget)
    with pytest.raises(InvalidInput, match="stride"):
        context_windows(prompts, QUESTION, long_context, stride=-1)


def answer(text: str, score: float, below: bool = False) -> Answer:
    return Answer("" if below else text, (1,), score, False, generated=text, below_threshold=below)


def test_choose_prefers_any_answer_to_an_abstention():
    assert choose([answer("", -0.1), answer("Paris", -5.0), answer("", -0.2)]) == 1
    assert choose([answer("Lyon", -3.0), answer("Paris", -1.0), answer("Nice", -2.0)]) == 1
    assert choose([answer("Lyon", -1.0), answer("Paris", -1.0)]) == 0  # ties: the earliest window
    assert choose([answer("", -3.0), answer("", -0.5)]) == 1  # all abstain: the most confident
    # An answer below the threshold counts as an abstention, even with the best score.
    assert choose([answer("Paris", -0.1, below=True), answer("Lyon", -4.0)]) == 1


def direct_window_answers(client: QAClient, question: str, context: str) -> list[tuple[str, tuple, float]]:
    """Each window answered alone by a direct `generate` call: (text, tokens, score)."""
    results = []
    for window in context_windows(client.prompts, question, context, client.stride):
        ids = np.array([window.input_ids], np.int64)
        tokens, lengths, scores = client.generate(ids, np.ones_like(ids))
        kept = tuple(int(t) for t in tokens[0, : lengths[0, 0]])
        results.append((client.prompts.decode(kept), kept, float(scores[0, 0])))
    return results


def expected_choice(results: list[tuple[str, tuple, float]]) -> int:
    answering = [i for i, (text, _, _) in enumerate(results) if text]
    pool = answering or range(len(results))
    return max(pool, key=lambda i: (results[i][2], -i))


def test_windowed_answer_is_the_best_window_of_direct_calls(client, questions, prompts, long_context):
    cases = [(q.question, q.context) for q in questions if len(prompts.tokens(q.question, q.context).ids) > 512][:4]
    cases.append((QUESTION, long_context))
    answers = client.answer_batch(cases)  # all windows of all cases in one batch call
    for (question, context), result in zip(cases, answers):
        windows = context_windows(prompts, question, context)
        direct = direct_window_answers(client, question, context)
        best = expected_choice(direct)
        assert result.windows == len(windows) > 1
        assert result.window == (windows[best].start, windows[best].end)
        assert (result.text, result.token_ids) == direct[best][:2]
        assert result.score == pytest.approx(direct[best][2], abs=1e-5)


def test_an_answer_only_in_a_late_window_is_found(client, questions, paragraphs, prompts):
    """Filler paragraphs, then the paragraph of a dev question. The random model's answers are
    meaningless, so "the answer" is mechanical: among fixed candidates, the first question for
    which every window abstains except the last, checked with direct calls. The filler is made
    of paragraphs on which the model abstains for that question."""
    for candidate in questions[0:3000:150]:
        pool = paragraphs[200:264]
        alone = client.answer_batch([(candidate.question, paragraph) for paragraph in pool], max_new_tokens=8)
        quiet = [paragraph for paragraph, answer in zip(pool, alone) if answer.no_answer]
        if len(quiet) < 12:
            continue
        filler = " ".join(quiet[:12]) + " "
        context = filler + candidate.context
        direct = direct_window_answers(client, candidate.question, context)
        if direct[-1][0] and not any(text for text, _, _ in direct[:-1]):
            break
    else:
        pytest.fail("no candidate where only the last window answers: the premise of this test")
    windows = context_windows(prompts, candidate.question, context)
    needle = len(filler)  # where the question's own paragraph starts: in the last window only
    assert windows[-1].start <= needle and windows[-1].end == len(context) and windows[-2].end <= needle
    result = client.answer(candidate.question, context)
    assert result.text == direct[-1][0] and result.window == (windows[-1].start, windows[-1].end)
    assert result.windows == len(windows) and not result.no_answer

    with QAClient(client.url, tokenizer=prompts.tokenizer, long_context="truncate") as truncating:
        assert truncating.answer(candidate.question, context).no_answer, "the first window alone abstains"
    with QAClient(client.url, tokenizer=prompts.tokenizer, no_answer_threshold=direct[-1][2] + 1e-3) as strict:
        below = strict.answer(candidate.question, context)
        assert below.no_answer and below.windows == len(windows)
