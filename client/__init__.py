"""Thin client of the T5 SQuAD v2 question-answering server (Triton, `t5_qa` ensemble)."""
from client.api import Answer, QAClient, answer
from client.errors import InvalidInput, QAError, ServerError

__all__ = ["Answer", "QAClient", "answer", "InvalidInput", "QAError", "ServerError"]
