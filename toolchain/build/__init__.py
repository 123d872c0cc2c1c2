"""Engine builds per hardware target (ONNX Runtime artifacts for CPU targets; TensorRT to come)."""
