"""convlens engine: ONNX + ONNX Runtime + numpy only; it never imports TensorFlow or torch.

    from convlens.engine import load, activations
    model = load("vgg16.onnx")
    acts = activations(model, "cat.jpg", ["block1_conv1"])
"""
from .errors import ConvlensError
from .model.model import Model, load
from .techniques.activations import activations, predictions

__all__ = ["ConvlensError", "Model", "load", "activations", "predictions"]
