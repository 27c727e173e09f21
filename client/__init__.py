"""Client of the T5 SQuAD v2 question-answering server (Triton): the `t5_qa` ensemble over
gRPC or HTTP, sync (`QAClient`) or asyncio (`AsyncQAClient`), with typed answers and errors.

    from client import QAClient
    with QAClient("localhost:8001") as qa:
        print(qa.answer("Who wrote it?", "It was written by Melville.").text)
"""
from client.aio import AsyncQAClient
from client.api import QAClient, answer
from client.errors import (InvalidArgument, InvalidInput, QAError, RequestTimeout, ServerError,
                           ServerUnavailable)
from client.results import Answer
from client.retry import NO_RETRY, RetryPolicy

__all__ = ["Answer", "AsyncQAClient", "QAClient", "answer", "RetryPolicy", "NO_RETRY", "InvalidArgument",
           "InvalidInput", "QAError", "RequestTimeout", "ServerError", "ServerUnavailable"]
