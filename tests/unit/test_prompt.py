"""Prompt format, truncation and input checks of the client's tokenization. `transformers` (which
loads torch) is imported only by the tests that compare with its tokenizer."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from contract.prompt import InvalidPrompt
from contract.limits import MAX_INPUT_TOKENS
from contract.prompt import prompt_text
from tests.inputs import TOKENIZER_JSON

if TYPE_CHECKING:
    from transformers import T5TokenizerFast


@pytest.fixture(scope="module")
def hf_tokenizer() -> T5TokenizerFast:
    from transformers import T5TokenizerFast

    return T5TokenizerFast(tokenizer_file=str(TOKENIZER_JSON), model_max_length=MAX_INPUT_TOKENS)


def test_prompt_has_two_spaces_and_one_eos(prompts, hf_tokenizer):
    assert prompt_text("Q?", "C.") == "question: Q?  context: C."
    ids = prompts.encode("Who wrote it?", "Melville wrote it.")
    assert ids == hf_tokenizer("question: Who wrote it?  context: Melville wrote it.").input_ids
    eos = hf_tokenizer.eos_token_id
    assert ids.count(eos) == 1 and ids[-1] == eos


def test_long_context_is_truncated_like_transformers(prompts, hf_tokenizer):
    question, context = "What is the last word?", "word " * 2000 + "end"
    ids = prompts.encode(question, context)
    assert len(ids) == MAX_INPUT_TOKENS and ids[-1] == hf_tokenizer.eos_token_id
    assert ids == hf_tokenizer(prompt_text(question, context), truncation=True, max_length=512).input_ids


def test_question_is_never_truncated(prompts):
    question = "why " * 600 + "?"
    with pytest.raises(InvalidPrompt, match="question is too long"):
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
    with pytest.raises(InvalidPrompt, match=problem):
        prompts.encode(question, context)


def test_empty_batch_is_refused(prompts):
    with pytest.raises(InvalidPrompt, match="no questions"):
        prompts.encode_batch([])


def test_installed_client_finds_the_served_models_tokenizer(tmp_path):
    """`pip install ./client` puts the package anywhere: the default tokenizer must not depend
    on where the package lies, only on `$T5QA_TOKENIZER` or the served model beside the caller."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    site = tmp_path / "site-packages"
    shutil.copytree(REPO_ROOT / "client", site / "client", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    served = work / "model_repository" / "t5_tokenizer" / "1"
    served.mkdir(parents=True)
    shutil.copy(TOKENIZER_JSON, served / "tokenizer.json")
    code = "from client.tokenizer import load_tokenizer; print(load_tokenizer().get_vocab_size())"
    env = {k: v for k, v in os.environ.items() if k != "T5QA_TOKENIZER"} | {"PYTHONPATH": str(site)}
    found = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "32100"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env | {"T5QA_TOKENIZER": str(TOKENIZER_JSON)},
                           capture_output=True, text=True, timeout=60)
    assert named.returncode == 0 and named.stdout.strip() == "32100", named.stderr


def test_prompt_encoder_takes_the_served_models_ids(prompts):
    """The ids come from the served config (strings, as Triton returns them), not constants."""
    served = prompts.served({"eos_token_id": "7", "pad_token_id": "3", "max_input_tokens": "64"})
    assert (served.eos_id, served.pad_id, served.max_tokens) == (7, 3, 64)
    ids, mask = served.pad([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 3, 3]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(InvalidPrompt, match=r"does not append </s> \(id 7\)"):
        served.encode("Who?", "Bob.")  # the t5-base tokenizer ends prompts with id 1
