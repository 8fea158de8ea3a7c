"""Export: a trained student alone, as safetensors, ONNX, TorchScript or a sentence-transformers folder."""
