"""The input adapter: RGB pixels (0..255, N x H x W x 3) to what the model expects, as ONNX nodes.

Written in front of the model so that every gradient is a gradient in pixel space and every
technique is written once, whatever the layout, color order and normalization of the weights.
"""
from __future__ import annotations

import numpy as np
from ..metadata import InputSpec
from ..writer import GraphWriter

PIXELS = "pixels"
GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # RGB -> luma weights


def adapter_nodes(spec: InputSpec) -> tuple[list, dict]:
    """Nodes and initializers mapping PIXELS to spec.name: layout, color order, then x * a + b per channel."""
    w = GraphWriter(17, scope="adapter")  # opset-neutral: ReduceSum takes its axes as an input from 13 on
    current = PIXELS
    channel_axis = 3
    if spec.layout.upper() == "NCHW":
        current, channel_axis = w.op("Transpose", current, out="pixels_nchw", perm=[0, 3, 1, 2]), 1
    if spec.channels == 1:  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY: one channel, gradients to all three
        gray = w.const(GRAY.reshape((1, 3, 1, 1) if channel_axis == 1 else (3,)), name="adapter_gray")
        current = w.reduce("ReduceSum", w.op("Mul", current, gray, out="pixels_weighted"), [channel_axis],
                           keepdims=1, out="pixels_gray")
    elif spec.color.upper() == "BGR":
        current = w.op("Gather", current, w.ints([2, 1, 0], name="adapter_bgr_index"), out="pixels_bgr",
                       axis=channel_axis)
    std, mean = per_channel_std_mean(spec)
    scale = (spec.scale / std).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    shape = (1, spec.channels, 1, 1) if channel_axis == 1 else (spec.channels,)
    if not np.allclose(scale, 1.0):
        current = w.op("Mul", current, w.const(scale.reshape(shape), name="adapter_scale"), out="pixels_scaled")
    if not np.allclose(shift, 0.0):
        current = w.op("Add", current, w.const(shift.reshape(shape), name="adapter_shift"), out="pixels_shifted")
    w.op("Identity", current, out=spec.name)
    return w.nodes, w.new_inits


def per_channel_std_mean(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """(std, mean) per model channel; a gray model takes the average of a preset's three."""
    std, mean = np.asarray(spec.std, np.float64), np.asarray(spec.mean, np.float64)
    if spec.channels == 1:
        std, mean = std.mean(keepdims=True), mean.mean(keepdims=True)
    return std, mean


def apply_numpy(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The same mapping in numpy, for feeding a framework directly (tests, verify)."""
    x = pixels.astype(np.float64)
    if spec.channels == 1:
        x = (x @ GRAY.astype(np.float64))[..., None]
    elif spec.color.upper() == "BGR":
        x = x[..., ::-1]
    std, mean = per_channel_std_mean(spec)
    x = (x * spec.scale - mean) / std
    if spec.layout.upper() == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)
