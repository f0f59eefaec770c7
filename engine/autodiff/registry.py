"""The rule registry and the helpers rules share.

A rule is rule(e, node, dy, needs) -> one gradient name (or None) per input; see rules.py.
"""
from __future__ import annotations

from .emitter import Emitter

RULES: dict = {}
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Sum", "Mean", "Expand", "PRelu", "Max", "Min"}
# ops whose outputs carry no gradient (indices, shapes, comparisons)
NON_DIFFERENTIABLE = {"Shape", "Size", "ConstantOfShape", "Range", "NonZero", "ArgMax", "ArgMin", "Equal", "Greater",
                      "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "Sign", "Floor", "Ceil",
                      "Round", "IsNaN", "IsInf", "RandomNormalLike", "RandomUniformLike", "EyeLike", "OneHot"}


def rule(*op_types):
    def register(fn):
        for op in op_types:
            RULES[op] = fn
        return fn
    return register


def _zero(e):
    return e.const(0.0)


def _mask(e, cond, dy):
    """dy where cond holds, 0 elsewhere: dy * float(cond), which ONNX Runtime runs several times faster than
    Where with a broadcast zero (measured 5.8 ms against 44 ms on an 8x64x150x150 tensor, 2 threads)."""
    from onnx import TensorProto

    return e.op("Mul", dy, e.op("Cast", cond, to=TensorProto.FLOAT))



def _tensor0():
    from onnx import helper, TensorProto

    return helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])


def _unbroadcast(e: Emitter, g: str, in_shape, out_shape) -> str:
    """Sum g (shaped like the output) down to in_shape: leading axes, then axes where the input has 1."""
    if in_shape is None or out_shape is None:
        return g
    lead = len(out_shape) - len(in_shape)
    axes = list(range(lead))
    for i, d in enumerate(in_shape):
        o = out_shape[lead + i]
        if d == 1 and o != 1:
            axes.append(lead + i)
    if not axes:
        return g
    g = e.op("ReduceSum", g, e.ints(axes), keepdims=1)
    if lead:
        g = e.op("Squeeze", g, e.ints(list(range(lead))))
    return g
