"""What runs inside Triton's Python-backend stub, beside the `model.py` files: the decode batch
and its scheduler, the array backends, ONNX Runtime sessions, request validation and Triton
helpers. It depends on numpy and `contract` only (onnxruntime and torch where they run), never
on the client, the exporter or the host-side `serving` package."""
