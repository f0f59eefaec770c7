"""The rule registry and the helpers rules share.

A rule is rule(e, node, dy, needs) -> one gradient name (or None) per input, in input order; it may stop
after the last input that gets a gradient (the walker reads missing ones as None). `e` is the Emitter:
its op/const/ints and its vocabulary (zero, zeros_like, mask, unbroadcast) are all a rule needs.
"""
from __future__ import annotations

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
