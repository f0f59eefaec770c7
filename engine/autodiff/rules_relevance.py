"""Relevance rules: backward rules that carry relevance instead of gradient (LRP, Montavon et al. 2019), and the
deconvnet ReLU. They replace the gradient rules of the ops they name, per node, through a composite
(composites.py); every other op keeps its gradient rule (max-pool: the winner takes all; reshapes route).

A rule for a linear op (Conv, Gemm, MatMul with constant weights) follows one pattern, Zennit's BasicHook: a few
forward copies of the layer with modified inputs and weights, the upstream relevance divided by a stabilized sum
of their outputs, pushed back through each copy by the op's own gradient rule, and multiplied by the modified
inputs:  R_in = sum_k  x_k * grad_x layer(x_k; W_k) [R_out / stab(z)]. The modified weights are folded once, at
build time. stab(z) = z + eps * sign(z), with sign(0) = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from ..errors import ConvlensError
from .registry import RULES

LINEAR_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Term:
    """One forward copy of a linear layer: which input (x, x+, x-, ones, a bound) and which weights."""

    x: str  # "x", "pos", "neg", "ones", "low", "high"
    weight: Callable  # numpy weight -> modified weight
    bias: Callable | None  # numpy bias -> modified bias; None: no bias


def _same(w):
    return w


def _pos(w):
    return np.maximum(w, 0)


def _neg(w):
    return np.minimum(w, 0)


def _ones(w):
    return np.ones_like(w)


def _square(w):
    return w * w


# --- building blocks ------------------------------------------------------------------------------------
def stabilize(e, z: str, eps: float) -> str:
    """z + eps * (sign(z) + (z == 0)), Zennit's stabilizer: never zero, sign kept."""
    sign = e.op("Add", e.op("Sign", z), e.op("Cast", e.op("Equal", z, e.zero()), to=1))
    return e.op("Add", z, e.op("Mul", sign, e.const(float(eps))))


def _weights(e, node):
    """(weight name, weight value, bias value or None) of a linear node with constant weights."""
    w = e.value(node.input[1])
    if w is None:
        raise ConvlensError(f"{node.op_type} node {node.name!r} multiplies two computed tensors; LRP rules need a "
                            "constant weight there (attention layers are outside these methods).")
    b = e.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return w, b


def _input(e, node, kind: str, bounds: tuple | None) -> str:
    x = node.input[0]
    if kind == "x":
        return x
    if kind == "pos":
        return x if _nonnegative(e, x) else e.op("Relu", x)
    if kind == "neg":
        return e.op("Neg", e.op("Relu", e.op("Neg", x)))
    full = e.op("Shape", x)
    if kind == "ones":
        return e.op("ConstantOfShape", full, value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    value = np.asarray(bounds[0] if kind == "low" else bounds[1], np.float32).reshape(-1)
    rank = len(e.static_shape(x, f"the first layer {node.name!r}"))
    if value.size > 1 and node.op_type == "Conv":  # per channel, on a convolution's channel-first input
        value = value.reshape([1, -1] + [1] * (rank - 2))
    return e.op("Expand", e.const(value), full)


def _copy(e, node, x: str, term: Term, w, b) -> object:
    """A forward copy of `node` on input x with the term's weights (the bias too unless the term drops it, as
    Zennit's parameter modifiers do); returns the copy (a NodeProto)."""
    inputs = [x, e.const(np.ascontiguousarray(term.weight(w).astype(np.float32)))]
    if b is not None and term.bias is not None:
        bias = term.bias(b).astype(np.float32)
        if np.any(bias):
            inputs.append(e.const(bias))
    out = e.copy_of(node, inputs, e.fresh())
    e.shapes[x] = e.shape(node.input[0])
    e.shapes[out] = e.shape(node.output[0])
    return e.nodes[-1]


def _back(e, copy, s: str) -> str:
    """The copy's own gradient rule: the gradient of <copy's output, s> with respect to its input."""
    return RULES[copy.op_type](e, copy, [s], [True] + [False] * (len(copy.input) - 1))[0]


def _nonnegative(e, x: str) -> bool:
    """True where the layer's input is known to be >= 0 (a ReLU's output), so the x- terms vanish."""
    producer = e.producers.get(x)
    return producer is not None and producer[1].op_type == "Relu"


def _skip(e, node, kind: str) -> bool:
    return kind == "neg" and _nonnegative(e, node.input[0])


def basic(e, node, dy, groups, mapper=None, reduce_times_input=True, bounds=None, eps=1e-6, signs=None):
    """The BasicHook pattern. `groups`: lists of (Term, factor); each group's outputs are summed into one
    denominator; R = sum over groups and terms of factor * x_term * back(term, dy / stab(denominator))."""
    w, b = _weights(e, node)
    total = None
    for g, group in enumerate(groups):
        live = [(t, f) for t, f in group if not _skip(e, node, t.x)]
        if not live:
            continue
        copies = [(_copy(e, node, _input(e, node, t.x, bounds), t, w, b), f, t) for t, f in live]
        outs = [c.output[0] if signs is None or sg > 0 else e.op("Neg", c.output[0])  # ZBox subtracts its bounds
                for (c, _, _), sg in zip(copies, signs or [1] * len(copies))]
        z = outs[0] if len(outs) == 1 else e.op("Sum", *outs)
        s = e.op("Div", dy[0], stabilize(e, z, eps))
        if mapper is not None:
            s = mapper(g, s)
        for copy, factor, term in copies:
            grad = _back(e, copy, s)
            part = e.op("Mul", copy.input[0], grad) if reduce_times_input else grad
            if factor != 1.0:
                part = e.op("Mul", part, e.const(float(factor)))
            total = part if total is None else e.op("Add", total, part)
    return [total if total is not None else e.zeros_like(node.input[0])]


# --- the rules (Zennit's names and defaults) ------------------------------------------------------------
def epsilon(e, node, dy, needs, eps=1e-6):
    """R_in = x * grad(R / stab(z, eps)): LRP-epsilon (eps = 0: LRP-0)"""
    return basic(e, node, dy, [[(Term("x", _same, _same), 1.0)]], eps=eps)


def zplus(e, node, dy, needs, stabilizer=1e-6):
    """R_in = x+ * grad_{W+}(R / z) + x- * grad_{W-}(R / z), z = W+ x+ + b+ + W- x-: LRP-z+ (alpha 1, beta 0)"""
    return basic(e, node, dy, [[(Term("pos", _pos, _pos), 1.0), (Term("neg", _neg, None), 1.0)]], eps=stabilizer)


def alpha_beta(e, node, dy, needs, alpha=2.0, beta=1.0, stabilizer=1e-6):
    """alpha * (positive contributions' share) - beta * (negative contributions' share) of R"""
    return basic(e, node, dy, [[(Term("pos", _pos, _pos), alpha), (Term("neg", _neg, None), alpha)],
                               [(Term("pos", _neg, _neg), -beta), (Term("neg", _pos, None), -beta)]], eps=stabilizer)


def gamma(e, node, dy, needs, gamma=0.25, stabilizer=1e-6):
    """Generalized LRP-gamma: positive contributions boosted by gamma where z > 0, negative ones where z < 0"""
    def up(w):
        return w + gamma * np.maximum(w, 0)

    def down(w):
        return w + gamma * np.minimum(w, 0)

    z = node.output[0]
    positive = e.op("Cast", e.op("Greater", z, e.zero()), to=1)
    negative = e.op("Cast", e.op("Less", z, e.zero()), to=1)
    return basic(e, node, dy, [[(Term("pos", up, up), 1.0), (Term("neg", down, None), 1.0)],
                               [(Term("pos", down, down), 1.0), (Term("neg", up, None), 1.0)]],
                 mapper=lambda g, s: e.op("Mul", s, positive if g == 0 else negative), eps=stabilizer)


def flat(e, node, dy, needs, stabilizer=1e-6):
    """R spread evenly over each output's receptive field: weights and inputs set to one, bias zero"""
    return basic(e, node, dy, [[(Term("ones", _ones, None), 1.0)]], reduce_times_input=False, eps=stabilizer)


def wsquare(e, node, dy, needs, stabilizer=1e-6):
    """R spread in proportion to the squared weights (bias squared too, as Zennit does)"""
    return basic(e, node, dy, [[(Term("ones", _square, _square), 1.0)]], reduce_times_input=False, eps=stabilizer)


def zbox(e, node, dy, needs, low=0.0, high=1.0, stabilizer=1e-6):
    """For inputs bounded in [low, high]: R = x*grad_W - low*grad_{W+} - high*grad_{W-} over z - z_low+ - z_high-"""
    return basic(e, node, dy, [[(Term("x", _same, _same), 1.0), (Term("low", _pos, _pos), -1.0),
                                (Term("high", _neg, _neg), -1.0)]],
                 bounds=(low, high), signs=(1, -1, -1), eps=stabilizer)


def passing(e, node, dy, needs):
    """R_in = R_out  (activations, batch norm that no canonizer folded: relevance passes through)"""
    return [dy[0]] + [None] * (len(node.input) - 1)


def norm(e, node, dy, needs, stabilizer=1e-6):
    """R_i = x_i * grad_i(R / stab(y)): a sum splits relevance in proportion to its inputs' contributions
    (residual adds), an average pool is a linear layer without weights to modify"""
    s = e.op("Div", dy[0], stabilize(e, node.output[0], stabilizer))
    grads = RULES[node.op_type](e, node, [s], needs)
    return [None if g is None or not needs[i] else e.op("Mul", node.input[i], g) for i, g in enumerate(grads)]
