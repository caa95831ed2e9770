"""ONNX stages: export from PyTorch, TensorRT-compatibility lint."""
