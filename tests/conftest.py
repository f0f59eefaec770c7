"""Shared fixtures. Frameworks are imported in an order that works (triton before TensorFlow)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.keras_converter import _preload_triton  # noqa: E402

_preload_triton()
