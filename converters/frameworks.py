"""Importing the frameworks: lazily, in an order that works, with one sentence when one is missing."""
from __future__ import annotations

import importlib.util
import os
import sys

from convlens.engine.errors import ConvlensError


def preload_triton() -> None:
    """Import triton (shipped with CUDA builds of torch) before TensorFlow: imported after it, it segfaults."""
    if importlib.util.find_spec("triton") is not None and "tensorflow" not in sys.modules:
        try:
            import triton.runtime  # noqa: F401
        except Exception:  # a broken triton only matters to torch, not to the converters
            pass


def keras_modules():
    """(keras, tensorflow, tf2onnx)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    preload_triton()
    try:
        import keras
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        raise ConvlensError(
            "Converting a Keras model needs TensorFlow and tf2onnx: pip install 'convlens[keras]'."
        ) from None
    return keras, tf, tf2onnx


# `--weights none` builds the model's own random initialization from this seed, so `verify` (or anyone) can
# build the very same weights again; the seed is recorded in the converted file's metadata
RANDOM_WEIGHTS_SEED = 0


def seeded_torch(build):
    """build() with torch's generator seeded by RANDOM_WEIGHTS_SEED, the caller's generator state kept."""
    torch = torch_module()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return build()


def torch_module(what: str = "Converting a PyTorch model", extras: str = "torch"):
    """torch, or one sentence saying that `what` needs it and what to install."""
    try:
        import torch
    except ImportError:
        raise ConvlensError(f"{what} needs torch: pip install 'convlens[{extras}]'.") from None
    return torch
