"""Export of the Hugging Face T5 checkpoint to validated ONNX graphs in the model repository."""
