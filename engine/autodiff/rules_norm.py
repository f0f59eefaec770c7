"""Rules for normalization and softmax."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from .emitter import attrs
from .registry import rule


# --- normalization and softmax -------------------------------------------------------------------
@rule("BatchNormalization")
def batch_norm(e, node, dy, needs):
    """dx = dy * scale / sqrt(var + eps) per channel (inference mode)"""
    eps = attrs(node).get("epsilon", 1e-5)
    scale, var = e.value(node.input[1]), e.value(node.input[4])
    if scale is None or var is None:
        raise ConvlensError(f"BatchNormalization node {node.name!r}: scale and variance must be constant.")
    rank = len(e.static_shape(node.input[0], "BatchNormalization"))
    factor = (scale / np.sqrt(var + eps)).astype(np.float32).reshape([-1] + [1] * (rank - 2))
    return [e.op("Mul", dy[0], e.const(factor))]


@rule("LayerNormalization")
def layer_norm(e, node, dy, needs):
    """dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma, with g = dy * gamma over the normalized axes"""
    a = attrs(node)
    rank = len(e.static_shape(node.input[0], "LayerNormalization"))
    axis = a.get("axis", -1) % rank
    axes = list(range(axis, rank))
    eps = a.get("epsilon", 1e-5)
    x = node.input[0]
    mu = e.reduce("ReduceMean", x, axes)
    xc = e.op("Sub", x, mu)
    sigma = e.op("Sqrt", e.op("Add", e.reduce("ReduceMean", e.op("Mul", xc, xc), axes), e.const(eps)))
    xhat = e.op("Div", xc, sigma)
    g = e.op("Mul", dy[0], node.input[1])
    t = e.op("Sub", g, e.reduce("ReduceMean", g, axes))
    t = e.op("Sub", t, e.op("Mul", xhat, e.reduce("ReduceMean", e.op("Mul", g, xhat), axes)))
    return [e.op("Div", t, sigma)]


@rule("Softmax")
def softmax(e, node, dy, needs):
    """dx = y * (dy - sum(dy * y, axis))"""
    axis = attrs(node).get("axis", -1)
    y = node.output[0]
    s = e.op("ReduceSum", e.op("Mul", dy[0], y), e.ints([axis]), keepdims=1)
    return [e.op("Mul", y, e.op("Sub", dy[0], s))]


@rule("LogSoftmax")
def log_softmax(e, node, dy, needs):
    """dx = dy - exp(y) * sum(dy, axis)"""
    axis = attrs(node).get("axis", -1)
    s = e.op("ReduceSum", dy[0], e.ints([axis]), keepdims=1)
    return [e.op("Sub", dy[0], e.op("Mul", e.op("Exp", node.output[0]), s))]
