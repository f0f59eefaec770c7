"""Objectives: small ONNX subgraphs behind the model that make one scalar to differentiate.

Every objective here is  sum_i sum_c w[i, c] * reduce(layer)[i, c]  with w fed at run time as
OBJECTIVE_WEIGHTS (N x C): a one-hot row picks a class logit or a filter's mean activation per item,
a dense row gives a weighted sum or a direction in channel space. Items are independent, so the
gradient of the sum gives each item's own gradient in one run.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

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
    nodes, inits = [], {}
    current = tensor
    if activation == "Softmax":
        nodes.append(helper.make_node("Softmax", [current], ["objective_softmax"], axis=-1, name="objective_softmax"))
        current = "objective_softmax"
    elif activation == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", [current], ["objective_sigmoid"], name="objective_sigmoid"))
        current = "objective_sigmoid"
    if rank == 4:
        axes = [1, 2] if layout.upper() == "NHWC" else [2, 3]
        if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
            inits["objective_axes"] = numpy_helper.from_array(np.array(axes, np.int64), "objective_axes")
            nodes.append(helper.make_node("ReduceMean", [current, "objective_axes"], ["objective_pooled"], keepdims=0,
                                          name="objective_pooled"))
        else:
            nodes.append(helper.make_node("ReduceMean", [current], ["objective_pooled"], axes=axes, keepdims=0,
                                          name="objective_pooled"))
        current = "objective_pooled"
    elif rank == 3 and token_prefix is not None:
        for part, value in (("start", token_prefix), ("end", 2 ** 62), ("axis", 1)):  # tokens P.. to the end
            inits[f"objective_patch_{part}"] = numpy_helper.from_array(np.array([value], np.int64),
                                                                       f"objective_patch_{part}")
        nodes.append(
            helper.make_node(
                "Slice",
                [current, "objective_patch_start", "objective_patch_end", "objective_patch_axis"],
                ["objective_patches"],
                name="objective_patches",
            )
        )
        if opset >= 18:
            inits["objective_axes"] = numpy_helper.from_array(np.array([1], np.int64), "objective_axes")
            nodes.append(helper.make_node("ReduceMean", ["objective_patches", "objective_axes"], ["objective_pooled"],
                                          keepdims=0, name="objective_pooled"))
        else:
            nodes.append(helper.make_node("ReduceMean", ["objective_patches"], ["objective_pooled"], axes=[1],
                                          keepdims=0, name="objective_pooled"))
        current = "objective_pooled"
    elif rank != 2:
        current_2d = "objective_flat"
        nodes.append(helper.make_node("Flatten", [current], [current_2d], axis=1, name="objective_flat"))
        current = current_2d
    if top:
        inits["objective_depth"] = numpy_helper.from_array(np.array(channels, np.int64), "objective_depth")
        inits["objective_onehot_values"] = numpy_helper.from_array(
            np.array([0, 1], np.float32), "objective_onehot_values"
        )
        nodes += [
            helper.make_node("ArgMax", [current], ["objective_top"], axis=1, keepdims=0, name="objective_top"),
            helper.make_node(
                "OneHot",
                ["objective_top", "objective_depth", "objective_onehot_values"],
                [OBJECTIVE_WEIGHTS],
                axis=-1,
                name=OBJECTIVE_WEIGHTS,
            ),
            helper.make_node("Cast", ["objective_top"], [TOP_CLASS], to=TensorProto.FLOAT, name=TOP_CLASS),
        ]
    inits["objective_item_axis"] = numpy_helper.from_array(np.array([1], np.int64), "objective_item_axis")
    nodes += [
        helper.make_node("Mul", [current, OBJECTIVE_WEIGHTS], ["objective_weighted"], name="objective_weighted"),
        helper.make_node("ReduceSum", ["objective_weighted", "objective_item_axis"], [OBJECTIVE_ITEMS], keepdims=0,
                         name=OBJECTIVE_ITEMS),
        helper.make_node("ReduceSum", [OBJECTIVE_ITEMS], [OBJECTIVE], keepdims=0, name=OBJECTIVE),
    ]
    inputs = [] if top else [helper.make_tensor_value_info(OBJECTIVE_WEIGHTS, TensorProto.FLOAT, ["N", channels])]
    return Extra(
        nodes=nodes, inits=inits, inputs=inputs, key=("channel", tensor, layout, rank, channels, activation, top)
    )


def one_hot(indices, channels: int) -> np.ndarray:
    """Objective weights selecting one channel or class per item."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    w = np.zeros((idx.size, channels), np.float32)
    w[np.arange(idx.size), idx] = 1.0
    return w
