"""Prompt format, truncation and input checks of the client's tokenization."""
from __future__ import annotations

import pytest
from transformers import T5TokenizerFast

from client.errors import InvalidInput
from client.prompt import EOS_ID, MAX_INPUT_TOKENS, prompt_text
from tests.inputs import TOKENIZER_JSON


@pytest.fixture(scope="module")
def hf_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast(tokenizer_file=str(TOKENIZER_JSON), model_max_length=MAX_INPUT_TOKENS)


def test_prompt_has_two_spaces_and_one_eos(prompts, hf_tokenizer):
    assert prompt_text("Q?", "C.") == "question: Q?  context: C."
    ids = prompts.encode("Who wrote it?", "Melville wrote it.")
    assert ids == hf_tokenizer("question: Who wrote it?  context: Melville wrote it.").input_ids
    assert ids.count(EOS_ID) == 1 and ids[-1] == EOS_ID


def test_long_context_is_truncated_like_transformers(prompts, hf_tokenizer):
    question, context = "What is the last word?", "word " * 2000 + "end"
    ids = prompts.encode(question, context)
    assert len(ids) == MAX_INPUT_TOKENS and ids[-1] == EOS_ID
    assert ids == hf_tokenizer(prompt_text(question, context), truncation=True, max_length=512).input_ids


def test_question_is_never_truncated(prompts):
    question = "why " * 600 + "?"
    with pytest.raises(InvalidInput, match="question is too long"):
        prompts.encode(question, "short context")
    long_question = "why " * 400 + "?"  # fits: the context gives way
    ids = prompts.encode(long_question, "context " * 400)
    assert len(ids) == MAX_INPUT_TOKENS
    assert prompts.tokenizer.decode(ids).startswith("question: " + long_question.strip()[:20])


@pytest.mark.parametrize("question, context, problem", [
    ("", "c", "question is empty"), ("  \n\t", "c", "question is empty"),
    ("q", "", "context is empty"), ("q", "   ", "context is empty"),
    (None, "c", "question must be a string"), ("q", b"bytes", "context must be a string"),
])
def test_bad_text_is_refused_with_the_reason(prompts, question, context, problem):
    with pytest.raises(InvalidInput, match=problem):
        prompts.encode(question, context)


def test_empty_batch_is_refused(prompts):
    with pytest.raises(InvalidInput, match="no questions"):
        prompts.encode_batch([])
