"""Rules for elementwise ops and activations (and the guided-backprop overrides)."""
from __future__ import annotations

import math

from onnx import TensorProto

from .emitter import attrs
from .registry import rule


# --- pass-through and elementwise ----------------------------------------------------------------
@rule("Identity", "Dropout")
def identity(e, node, dy, needs):
    """dx = dy"""
    return [dy[0]]


@rule("Cast")
def cast(e, node, dy, needs):
    """dx = dy  (float-to-float casts only; gradients stay float32, the type convlens computes in)"""
    return [dy[0]]


@rule("Relu")
def relu(e, node, dy, needs):
    """dx = dy * (y > 0)  (before a max-pool, passes.py moves the mask behind the unpooling)"""
    return [e.mask(e.op("Greater", node.output[0], e.zero()), dy[0])]


def guided_relu(e, node, dy, needs):
    """dx = relu(dy) * (y > 0)  (guided backpropagation: only positive signals, only through active units)"""
    return [e.mask(e.op("Greater", node.output[0], e.zero()), e.op("Relu", dy[0]))]





@rule("LeakyRelu")
def leaky_relu(e, node, dy, needs):
    """dx = dy if x > 0 else alpha * dy"""
    alpha = attrs(node).get("alpha", 0.01)
    return [e.op("Where", e.op("Greater", node.input[0], e.zero()), dy[0], e.op("Mul", dy[0], e.const(alpha)))]


@rule("PRelu")
def prelu(e, node, dy, needs):
    """dx = dy if x > 0 else slope * dy"""
    cond = e.op("Greater", node.input[0], e.zero())
    return [e.op("Where", cond, dy[0], e.op("Mul", dy[0], node.input[1])), None]


@rule("Clip")
def clip(e, node, dy, needs):
    """dx = dy where min < x < max"""
    a = attrs(node)
    x = node.input[0]
    lo = node.input[1] if len(node.input) > 1 and node.input[1] else (e.const(a["min"]) if "min" in a else None)
    hi = node.input[2] if len(node.input) > 2 and node.input[2] else (e.const(a["max"]) if "max" in a else None)
    cond = None
    for bound, op in ((lo, "Greater"), (hi, "Less")):
        if bound is not None:
            c = e.op(op, x, bound)
            cond = c if cond is None else e.op("And", cond, c)
    return [dy[0] if cond is None else e.mask(cond, dy[0])]


def guided_clip(e, node, dy, needs):
    """dx = relu(dy) where min < x < max  (guided backpropagation through ReLU6-style clips)"""
    return clip(e, node, [e.op("Relu", dy[0])], needs)


def deconvnet_relu(e, node, dy, needs):
    """dx = relu(dy)  (deconvnet, Zeiler and Fergus 2014: the ReLU applied to the signal going back, no forward
    mask; as Captum's Deconvolution, only ReLU nodes are changed)"""
    return [e.op("Relu", dy[0])]


# the rule sets of this family a request may select (all of them: rules.OVERRIDES)
OVERRIDES = {"guided": {"Relu": guided_relu, "Clip": guided_clip}, "deconvnet": {"Relu": deconvnet_relu}}


@rule("Sigmoid")
def sigmoid(e, node, dy, needs):
    """dx = dy * y * (1 - y)"""
    y = node.output[0]
    return [e.op("Mul", dy[0], e.op("Mul", y, e.op("Sub", e.const(1.0), y)))]


@rule("HardSigmoid")
def hard_sigmoid(e, node, dy, needs):
    """dx = alpha * dy where 0 < alpha * x + beta < 1"""
    a = attrs(node)
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    z = e.op("Add", e.op("Mul", node.input[0], e.const(alpha)), e.const(beta))
    cond = e.op("And", e.op("Greater", z, e.zero()), e.op("Less", z, e.const(1.0)))
    return [e.mask(cond, e.op("Mul", dy[0], e.const(alpha)))]


@rule("HardSwish")
def hard_swish(e, node, dy, needs):
    """dx = dy * (0 if x < -3, 1 if x > 3, (2x + 3) / 6 otherwise)"""
    x = node.input[0]
    mid = e.op("Add", e.op("Mul", x, e.const(1 / 3)), e.const(0.5))
    slope = e.op("Where", e.op("Less", x, e.const(-3.0)), e.zero(),
                 e.op("Where", e.op("Greater", x, e.const(3.0)), e.const(1.0), mid))
    return [e.op("Mul", dy[0], slope)]


@rule("Tanh")
def tanh(e, node, dy, needs):
    """dx = dy * (1 - y^2)"""
    y = node.output[0]
    return [e.op("Mul", dy[0], e.op("Sub", e.const(1.0), e.op("Mul", y, y)))]


@rule("Elu")
def elu(e, node, dy, needs):
    """dx = dy if x > 0 else dy * (y + alpha)"""
    alpha = attrs(node).get("alpha", 1.0)
    neg = e.op("Mul", dy[0], e.op("Add", node.output[0], e.const(alpha)))
    return [e.op("Where", e.op("Greater", node.input[0], e.zero()), dy[0], neg)]


@rule("Erf")
def erf(e, node, dy, needs):
    """dx = dy * 2 / sqrt(pi) * exp(-x^2)"""
    x = node.input[0]
    g = e.op("Exp", e.op("Neg", e.op("Mul", x, x)))
    return [e.op("Mul", dy[0], e.op("Mul", g, e.const(2 / math.sqrt(math.pi))))]


@rule("Gelu")
def gelu(e, node, dy, needs):
    """dx = dy * (Phi(x) + x * phi(x)), or the derivative of the tanh approximation"""
    x = node.input[0]
    if attrs(node).get("approximate", "none") == "tanh":
        c = math.sqrt(2 / math.pi)
        x2 = e.op("Mul", x, x)
        inner = e.op("Mul", e.op("Add", x, e.op("Mul", e.op("Mul", x2, x), e.const(0.044715))), e.const(c))
        t = e.op("Tanh", inner)
        dinner = e.op("Mul", e.op("Add", e.const(1.0), e.op("Mul", x2, e.const(3 * 0.044715))), e.const(c))
        sech2 = e.op("Sub", e.const(1.0), e.op("Mul", t, t))
        slope = e.op("Add", e.op("Mul", e.op("Add", e.const(1.0), t), e.const(0.5)),
                     e.op("Mul", e.op("Mul", e.op("Mul", x, sech2), dinner), e.const(0.5)))
    else:
        cdf = e.op(
            "Mul", e.op("Add", e.const(1.0), e.op("Erf", e.op("Mul", x, e.const(1 / math.sqrt(2))))), e.const(0.5)
        )
        pdf = e.op(
            "Mul", e.op("Exp", e.op("Mul", e.op("Mul", x, x), e.const(-0.5))), e.const(1 / math.sqrt(2 * math.pi))
        )
        slope = e.op("Add", cdf, e.op("Mul", x, pdf))
    return [e.op("Mul", dy[0], slope)]


@rule("Softplus")
def softplus(e, node, dy, needs):
    """dx = dy * sigmoid(x)"""
    return [e.op("Mul", dy[0], e.op("Sigmoid", node.input[0]))]


@rule("Add")
def add(e, node, dy, needs):
    """da = dy, db = dy"""
    return [dy[0], dy[0]]


@rule("Sum")
def sum_(e, node, dy, needs):
    """dx_i = dy"""
    return [dy[0]] * len(node.input)


@rule("Mean")
def mean(e, node, dy, needs):
    """dx_i = dy / n"""
    g = e.op("Mul", dy[0], e.const(1.0 / len(node.input)))
    return [g] * len(node.input)


@rule("Sub")
def sub(e, node, dy, needs):
    """da = dy, db = -dy"""
    return [dy[0], e.op("Neg", dy[0]) if needs[1] else None]


@rule("Mul")
def mul(e, node, dy, needs):
    """da = dy * b, db = dy * a"""
    a, b = node.input
    return [e.op("Mul", dy[0], b) if needs[0] else None, e.op("Mul", dy[0], a) if needs[1] else None]


@rule("Div")
def div(e, node, dy, needs):
    """da = dy / b, db = -dy * y / b"""
    a, b = node.input
    da = e.op("Div", dy[0], b) if needs[0] else None
    db = e.op("Neg", e.op("Div", e.op("Mul", dy[0], node.output[0]), b)) if needs[1] else None
    return [da, db]


@rule("Neg")
def neg(e, node, dy, needs):
    """dx = -dy"""
    return [e.op("Neg", dy[0])]


@rule("Sqrt")
def sqrt(e, node, dy, needs):
    """dx = dy / (2 y)"""
    return [e.op("Div", e.op("Mul", dy[0], e.const(0.5)), node.output[0])]


@rule("Reciprocal")
def reciprocal(e, node, dy, needs):
    """dx = -dy * y^2"""
    y = node.output[0]
    return [e.op("Neg", e.op("Mul", dy[0], e.op("Mul", y, y)))]


@rule("Pow")
def pow_(e, node, dy, needs):
    """dx = dy * p * x^(p-1);  dp = dy * y * ln(x)"""
    x, p = node.input
    dx = dp = None
    if needs[0]:
        dx = e.op("Mul", dy[0], e.op("Mul", p, e.op("Pow", x, e.op("Sub", p, e.const(1.0)))))
    if needs[1]:
        dp = e.op("Mul", dy[0], e.op("Mul", node.output[0], e.op("Log", x)))
    return [dx, dp]


@rule("Exp")
def exp(e, node, dy, needs):
    """dx = dy * y"""
    return [e.op("Mul", dy[0], node.output[0])]


@rule("Log")
def log(e, node, dy, needs):
    """dx = dy / x"""
    return [e.op("Div", dy[0], node.input[0])]


@rule("Abs")
def abs_(e, node, dy, needs):
    """dx = dy * sign(x)"""
    return [e.op("Mul", dy[0], e.op("Sign", node.input[0]))]


@rule("Max", "Min")
def max_min(e, node, dy, needs):
    """dx_i = dy * [x_i == y] / #{j : x_j == y}  (ties split the gradient equally, as torch.maximum does)"""
    y = node.output[0]
    hits = [e.op("Cast", e.op("Equal", x, y), to=TensorProto.FLOAT) for x in node.input]
    share = e.op("Div", dy[0], hits[0] if len(hits) == 1 else e.op("Sum", *hits))
    return [e.op("Mul", share, hit) if needs[i] else None for i, hit in enumerate(hits)]


@rule("Where")
def where(e, node, dy, needs):
    """da = dy where cond, db = dy where not cond"""
    c = node.input[0]
    da = e.op("Where", c, dy[0], e.zero()) if needs[1] else None
    db = e.op("Where", c, e.zero(), dy[0]) if needs[2] else None
    return [None, da, db]
