"""Request limits of the served model: the serving contract's numbers, in one place. The
config generator publishes them in `t5_qa`'s parameters, where the client reads them."""

MAX_INPUT_TOKENS = 512  # t5-base's model_max_length; longer rows are refused (the client windows them)
DEFAULT_NEW_TOKENS = 32
MAX_NEW_TOKENS_CAP = 64
MAX_TEXT_BYTES = 262_144  # per question or context on the text endpoint; longer text is refused, not read
# Padding columns of the self-attention cache worth one copy to drop: the decode batch trims its
# oldest all-padding columns once there are this many, so its past stays below
# MAX_NEW_TOKENS_CAP + TRIM_COLUMNS however rows join (runtime/greedy.py).
TRIM_COLUMNS = 16
# The cross-attention cache's width, while rows decode, is a multiple of this (at most
# MAX_INPUT_TOKENS): a joiner a few tokens longer than every running row fits without a copy of
# every row's cross cache (~240 MB for t5-base at batch 16), at the cost of some masked columns.
CROSS_WIDTH_STEP = 64
MAX_DECODER_PAST = MAX_NEW_TOKENS_CAP + TRIM_COLUMNS  # longest self-attention cache a decode step is given
# Largest batch the TensorRT engines' optimization profiles cover: export/tensorrt.py builds them up to
# it, and serving/repository.py caps gpu-tensorrt's rows per decode step and max_batch_size at it.
TENSORRT_MAX_BATCH = 64
