"""The torch executor (`--executor torch`: the checkpoint's own encoder in `t5_encoder` and its
decoder inside `t5_greedy`'s decode loop, on PyTorch: what the gpu-torch target runs on the
GPU) served by a real tritonserver on the CPU in fp32: token-for-token `generate`'s answers for single requests,
mixed-length batches and concurrent requests sharing decode steps."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from client import QAClient
from contract.names import CHECKPOINT
from contract.parameters import GraphParameters, GreedyParameters
from tests.helpers import build_repository, expected_tokens, hf_generate, start_server
from tests.inputs import parity_pairs

PAIRS = parity_pairs()[1::2][:24]  # 24 inputs of all lengths, SQuAD dev and hand-made


@pytest.fixture(scope="module")
def torch_served(tmp_path_factory, checkpoint, exports, prompts):
    root = tmp_path_factory.mktemp("serving-torch")
    repository = build_repository(checkpoint, root, exports, executor="torch")
    server = start_server(repository, root / "tritonserver.log")
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer) as client:
        yield repository, client
    server.stop()


def test_the_repository_runs_the_checkpoint_in_t5_encoder_and_t5_greedy(torch_served):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    repository, _ = torch_served

    def params(model: str, kind):
        config = text_format.Parse((repository / model / "config.pbtxt").read_text(), mc.ModelConfig())
        return kind.from_strings({k: v.string_value for k, v in config.parameters.items()})

    for model, kind in (("t5_encoder", GraphParameters), ("t5_greedy", GreedyParameters)):
        p = params(model, kind)
        assert (p.executor, p.checkpoint, p.device, p.dtype) == ("torch", CHECKPOINT, "cpu", "float32"), model
    assert params("t5_greedy", GreedyParameters).decoder_mode == "in_process"
    assert (repository / CHECKPOINT / "model.safetensors").is_file()
    # Nothing exported: export.checkpoint installs the checkpoint as it is.
    assert not list(repository.rglob("*.onnx"))


def test_a_direct_decoder_step_says_there_is_no_graph(torch_served):
    """t5_decoder stays served (its folder holds code) but has no graph to open: a direct call
    gets an error naming why, and the server keeps answering."""
    import tritonclient.grpc as grpcclient
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    repository, client = torch_served
    config = text_format.Parse((repository / "t5_decoder" / "config.pbtxt").read_text(), mc.ModelConfig())
    inputs = []
    for tensor in config.input:
        dtype = mc.DataType.Name(tensor.data_type)[len("TYPE_"):]
        dtype = {"STRING": "BYTES"}.get(dtype, dtype)
        data = np.zeros([1 if d == -1 else d for d in tensor.dims], dtype=triton_to_np_dtype(dtype))
        inputs.append(grpcclient.InferInput(tensor.name, list(data.shape), dtype))
        inputs[-1].set_data_from_numpy(data)
    with grpcclient.InferenceServerClient(client.url) as raw:
        with pytest.raises(InferenceServerException, match="built for the torch executor"):
            raw.infer("t5_decoder", inputs)
    assert client.health()["ready"]


def test_single_requests_match_generate(torch_served, prompts, hf_model):
    _, client = torch_served
    for index, pair in enumerate(PAIRS[:12]):
        ids = np.array([prompts.encode(*pair)])
        limit = (None, 64, 5)[index % 3]
        tokens, lengths, _ = client.generate(ids, np.ones_like(ids), limit)
        reference = hf_generate(hf_model, ids, np.ones_like(ids), limit or 32)[0]
        assert expected_tokens(tokens[0, : lengths[0, 0]]) == expected_tokens(reference), f"input {index}"


def test_batches_and_concurrent_requests_match_generate(torch_served, prompts, hf_model):
    """Two mixed-length batches of 6 and 12 single requests at once: rows join the running
    batch at different steps and leave at different steps."""
    _, client = torch_served
    ids, mask = prompts.encode_batch(PAIRS[12:])
    reference = hf_generate(hf_model, ids, mask, 32)

    def batch(rows: slice):
        return client.generate(ids[rows], mask[rows])

    def single(row: int):
        width = int(mask[row].sum())
        return client.generate(ids[row: row + 1, :width], mask[row: row + 1, :width])

    with ThreadPoolExecutor(14) as pool:
        batches = [pool.submit(batch, rows) for rows in (slice(0, 6), slice(6, 12))]
        singles = [pool.submit(single, row) for row in range(12)]
        for start, future in zip((0, 6), batches):
            tokens, lengths, _ = future.result()
            for row in range(6):
                assert expected_tokens(tokens[row, : lengths[row, 0]]) == expected_tokens(reference[start + row])
        for row, future in enumerate(singles):
            tokens, lengths, _ = future.result()
            assert expected_tokens(tokens[0, : lengths[0, 0]]) == expected_tokens(reference[row]), f"row {row}"
