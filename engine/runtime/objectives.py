"""Objectives: small ONNX subgraphs behind the model that make one scalar to differentiate.

Every objective here is  sum_i sum_c w[i, c] * reduce(layer)[i, c]  with w fed at run time as
OBJECTIVE_WEIGHTS (N x C): a one-hot row picks a class logit or a filter's mean activation per item,
a dense row gives a weighted sum or a direction in channel space. Items are independent, so the
gradient of the sum gives each item's own gradient in one run.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..writer import GraphWriter
from .program import Extra

OBJECTIVE = "objective"
OBJECTIVE_ITEMS = "objective_items"
OBJECTIVE_WEIGHTS = "objective_weights"
TOP_CLASS = "objective_top_class"  # with top=True: each item's arg-max channel (as float), fetchable


def channel_objective(
    tensor: str,
    layout: str,
    rank: int,
    channels: int,
    activation: str | None = None,
    opset: int = 17,
    top: bool = False,
    token_prefix: int | None = None,
) -> Extra:
    """sum over items of w[i] . spatial_mean(tensor[i]) (first through `activation`, Softmax or Sigmoid, for
    probabilities).
    A token layer (N, T, C) with `token_prefix` P is averaged over its patch tokens T[P:], per channel.

    `top`: w is not fed but made in the graph, one-hot at each item's largest channel (its top class), so a
    single run both picks the class and differentiates its score; ArgMax and OneHot carry no gradient."""
    w = GraphWriter(opset, scope="objective")
    current = tensor
    if activation == "Softmax":
        current = w.op("Softmax", current, out="objective_softmax", axis=-1)
    elif activation == "Sigmoid":
        current = w.op("Sigmoid", current, out="objective_sigmoid")
    if rank == 4:
        current = w.reduce("ReduceMean", current, [1, 2] if layout.upper() == "NHWC" else [2, 3], keepdims=0,
                           out="objective_pooled")
    elif rank == 3 and token_prefix is not None:  # the patch tokens P.. to the end
        patches = w.op("Slice", current, w.ints([token_prefix]), w.ints([2 ** 62]), w.ints([1]),
                       out="objective_patches")
        current = w.reduce("ReduceMean", patches, [1], keepdims=0, out="objective_pooled")
    elif rank != 2:
        current = w.op("Flatten", current, out="objective_flat", axis=1)
    if top:
        w.op("ArgMax", current, out="objective_top", axis=1, keepdims=0)
        w.op("OneHot", "objective_top", w.const(channels, np.int64), w.const([0, 1]), out=OBJECTIVE_WEIGHTS, axis=-1)
        w.op("Cast", "objective_top", out=TOP_CLASS, to=TensorProto.FLOAT)
    weighted = w.op("Mul", current, OBJECTIVE_WEIGHTS, out="objective_weighted")
    w.op("ReduceSum", w.reduce("ReduceSum", weighted, [1], keepdims=0, out=OBJECTIVE_ITEMS), out=OBJECTIVE,
         keepdims=0)
    inputs = [] if top else [helper.make_tensor_value_info(OBJECTIVE_WEIGHTS, TensorProto.FLOAT, ["N", channels])]
    return Extra(
        nodes=w.nodes, inits=w.new_inits, inputs=inputs,
        key=("channel", tensor, layout, rank, channels, activation, top),
    )


def one_hot(indices, channels: int) -> np.ndarray:
    """Objective weights selecting one channel or class per item."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    w = np.zeros((idx.size, channels), np.float32)
    w[np.arange(idx.size), idx] = 1.0
    return w
