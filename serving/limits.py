"""Token ids and request limits: the serving contract's numbers, in one place.

Token ids and the input limit come from the client's prompt module, which must know them
without importing server code."""
from client.prompt import EOS_ID, MAX_INPUT_TOKENS, PAD_ID

DECODER_START_ID = PAD_ID  # T5 starts decoding from the pad token
DEFAULT_NEW_TOKENS = 32
MAX_NEW_TOKENS_CAP = 64
MAX_TEXT_BYTES = 262_144  # per question or context on the text endpoint; longer text is refused, not read
# Largest batch the TensorRT engines' optimization profiles cover: export/tensorrt.py builds them up to
# it, and serving/repository.py refuses a gpu-tensorrt config whose max_batch_size is larger.
TENSORRT_MAX_BATCH = 64


__all__ = ["EOS_ID", "PAD_ID", "MAX_INPUT_TOKENS", "DECODER_START_ID", "DEFAULT_NEW_TOKENS", "MAX_NEW_TOKENS_CAP",
           "MAX_TEXT_BYTES"]
