"""Converters: the only code that knows TensorFlow/Keras or PyTorch; each is imported lazily.

    from convlens.converters import convert
    convert("torch:vgg16", "vgg16.onnx", weights="none")
"""
from .dispatch import convert, parse_source

__all__ = ["convert", "parse_source"]
