"""The input adapter: RGB pixels (0..255, N x H x W x 3) to what the model expects, as ONNX nodes.

Written in front of the model so that every gradient is a gradient in pixel space and every
technique is written once, whatever the layout, color order and normalization of the weights.
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ..metadata import InputSpec

PIXELS = "pixels"
GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # RGB -> luma weights


def adapter_nodes(spec: InputSpec) -> tuple[list, dict]:
    """Nodes and initializers mapping PIXELS to spec.name: layout, color order, then x * a + b per channel."""
    nodes, inits = [], {}
    current = PIXELS
    channel_axis = 3
    if spec.layout.upper() == "NCHW":
        nodes.append(
            helper.make_node("Transpose", [current], ["pixels_nchw"], perm=[0, 3, 1, 2], name="adapter_layout")
        )
        current, channel_axis = "pixels_nchw", 1
    if spec.channels == 1:  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY: one channel, gradients to all three
        inits["adapter_gray"] = numpy_helper.from_array(GRAY.reshape((1, 3, 1, 1) if channel_axis == 1 else (3,)),
                                                        "adapter_gray")
        inits["adapter_gray_axis"] = numpy_helper.from_array(np.array([channel_axis], np.int64), "adapter_gray_axis")
        nodes.append(helper.make_node("Mul", [current, "adapter_gray"], ["pixels_weighted"], name="adapter_gray"))
        nodes.append(
            helper.make_node(
                "ReduceSum",
                ["pixels_weighted", "adapter_gray_axis"],
                ["pixels_gray"],
                keepdims=1,
                name="adapter_gray_sum",
            )
        )
        current = "pixels_gray"
    elif spec.color.upper() == "BGR":
        inits["adapter_bgr_index"] = numpy_helper.from_array(np.array([2, 1, 0], np.int64), "adapter_bgr_index")
        nodes.append(
            helper.make_node(
                "Gather", [current, "adapter_bgr_index"], ["pixels_bgr"], axis=channel_axis, name="adapter_color"
            )
        )
        current = "pixels_bgr"
    std, mean = per_channel_std_mean(spec)
    scale = (spec.scale / std).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    shape = (1, spec.channels, 1, 1) if channel_axis == 1 else (spec.channels,)
    if not np.allclose(scale, 1.0):
        inits["adapter_scale"] = numpy_helper.from_array(scale.reshape(shape), "adapter_scale")
        nodes.append(helper.make_node("Mul", [current, "adapter_scale"], ["pixels_scaled"], name="adapter_scale"))
        current = "pixels_scaled"
    if not np.allclose(shift, 0.0):
        inits["adapter_shift"] = numpy_helper.from_array(shift.reshape(shape), "adapter_shift")
        nodes.append(helper.make_node("Add", [current, "adapter_shift"], ["pixels_shifted"], name="adapter_shift"))
        current = "pixels_shifted"
    nodes.append(helper.make_node("Identity", [current], [spec.name], name="adapter_out"))
    return nodes, inits


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
