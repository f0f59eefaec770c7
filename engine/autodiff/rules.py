"""Gradient rules, one per ONNX op: rule(e, node, dy, needs) -> one gradient name (or None) per input.

`dy[k]` is the gradient of output k (None if nothing flows back through it); `needs[i]` says whether
input i's gradient is wanted (only inputs on the path from `wrt` to the objective are). The first
docstring line is the formula. Rules for ops in BROADCASTING return gradients in the output's shape;
the walker sums them down to each input's shape, once, in one place.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConvlensError
from .emitter import Emitter, attrs

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
    """dy where cond holds, 0 elsewhere."""
    return e.op("Where", cond, dy, _zero(e))


# --- pass-through and elementwise ----------------------------------------------------------------
@rule("Identity", "Dropout")
def identity(e, node, dy, needs):
    """dx = dy"""
    return [dy[0]] + [None] * (len(node.input) - 1)


@rule("Cast")
def cast(e, node, dy, needs):
    """dx = cast(dy) back to x's float type (float paths only)"""
    return [dy[0]]


@rule("Relu")
def relu(e, node, dy, needs):
    """dx = dy * (y > 0)"""
    return [_mask(e, e.op("Greater", node.output[0], _zero(e)), dy[0])]


def guided_relu(e, node, dy, needs):
    """dx = relu(dy) * (y > 0)  (guided backpropagation: only positive signals, only through active units)"""
    return [_mask(e, e.op("Greater", node.output[0], _zero(e)), e.op("Relu", dy[0]))]





@rule("LeakyRelu")
def leaky_relu(e, node, dy, needs):
    """dx = dy if x > 0 else alpha * dy"""
    alpha = attrs(node).get("alpha", 0.01)
    return [e.op("Where", e.op("Greater", node.input[0], _zero(e)), dy[0], e.op("Mul", dy[0], e.const(alpha)))]


@rule("PRelu")
def prelu(e, node, dy, needs):
    """dx = dy if x > 0 else slope * dy"""
    cond = e.op("Greater", node.input[0], _zero(e))
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
    return [dy[0] if cond is None else _mask(e, cond, dy[0])] + [None] * (len(node.input) - 1)


def guided_clip(e, node, dy, needs):
    """dx = relu(dy) where min < x < max  (guided backpropagation through ReLU6-style clips)"""
    return clip(e, node, [e.op("Relu", dy[0])], needs)


OVERRIDES = {"guided": {"Relu": guided_relu, "Clip": guided_clip}}


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
    cond = e.op("And", e.op("Greater", z, _zero(e)), e.op("Less", z, e.const(1.0)))
    return [_mask(e, cond, e.op("Mul", dy[0], e.const(alpha)))]


@rule("HardSwish")
def hard_swish(e, node, dy, needs):
    """dx = dy * (0 if x < -3, 1 if x > 3, (2x + 3) / 6 otherwise)"""
    x = node.input[0]
    mid = e.op("Add", e.op("Mul", x, e.const(1 / 3)), e.const(0.5))
    slope = e.op("Where", e.op("Less", x, e.const(-3.0)), _zero(e),
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
    return [e.op("Where", e.op("Greater", node.input[0], _zero(e)), dy[0], neg)]


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
        cdf = e.op("Mul", e.op("Add", e.const(1.0), e.op("Erf", e.op("Mul", x, e.const(1 / math.sqrt(2))))), e.const(0.5))
        pdf = e.op("Mul", e.op("Exp", e.op("Mul", e.op("Mul", x, x), e.const(-0.5))), e.const(1 / math.sqrt(2 * math.pi)))
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
    """dx_i = dy where x_i is the selected value (first wins on ties is not modelled: ties share)"""
    y = node.output[0]
    return [_mask(e, e.op("Equal", x, y), dy[0]) if needs[i] else None for i, x in enumerate(node.input)]


@rule("Where")
def where(e, node, dy, needs):
    """da = dy where cond, db = dy where not cond"""
    c = node.input[0]
    da = e.op("Where", c, dy[0], _zero(e)) if needs[1] else None
    db = e.op("Where", c, _zero(e), dy[0]) if needs[2] else None
    return [None, da, db]


# --- linear algebra ------------------------------------------------------------------------------
def _swap_last(e, name):
    rank = len(e.shape(name) or [0, 0])
    perm = list(range(rank))
    perm[-2:] = perm[-1], perm[-2]
    return e.op("Transpose", name, perm=perm)


@rule("MatMul")
def matmul(e, node, dy, needs):
    """da = dy @ b^T, db = a^T @ dy (batch dimensions of b summed when b is 2-D)"""
    a, b = node.input
    da = db = None
    if needs[0]:
        bv = e.value(b)
        bt = e.const(np.ascontiguousarray(np.swapaxes(bv, -1, -2))) if bv is not None and bv.ndim >= 2 else _swap_last(e, b)
        da = e.op("MatMul", dy[0], bt)
    if needs[1]:
        db = e.op("MatMul", _swap_last(e, a), dy[0])
        extra = len(e.shape(db) or e.shape(node.output[0])) - len(e.shape(b))
        if extra > 0:
            db = e.op("ReduceSum", db, e.ints(list(range(extra))), keepdims=0)
    return [da, db]


@rule("Gemm")
def gemm(e, node, dy, needs):
    """Y = alpha op(A) op(B) + beta C: dA = alpha dY op(B)^T (transposed back), dB likewise, dC = beta dY"""
    a_ = attrs(node)
    alpha, beta = a_.get("alpha", 1.0), a_.get("beta", 1.0)
    ta, tb = a_.get("transA", 0), a_.get("transB", 0)
    A, B = node.input[0], node.input[1]
    g = dy[0]
    out = [None, None, None]
    if needs[0]:
        out[0] = (e.op("Gemm", g, B, alpha=alpha, transB=0 if tb else 1) if not ta
                  else e.op("Gemm", B, g, alpha=alpha, transA=tb, transB=1))
    if needs[1]:
        out[1] = (e.op("Gemm", A, g, alpha=alpha, transA=0 if ta else 1) if not tb
                  else e.op("Gemm", g, A, alpha=alpha, transA=1, transB=ta))
    if len(node.input) > 2 and needs[2]:
        cg = e.op("Mul", g, e.const(beta))
        cshape = e.shape(node.input[2])
        oshape = e.shape(node.output[0])
        out[2] = _unbroadcast(e, cg, cshape, oshape)
    return out


# --- convolution and pooling ---------------------------------------------------------------------
def _conv_geometry(e, node, x, w_shape):
    a = attrs(node)
    xs = e.static_shape(x, f"{node.op_type} node {node.name!r}")
    spatial = xs[2:]
    n = len(spatial)
    k = list(a.get("kernel_shape", w_shape[2:] if w_shape else []))
    s = list(a.get("strides", [1] * n))
    d = list(a.get("dilations", [1] * n))
    pads = list(a.get("pads", [0] * (2 * n)))
    auto = a.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * n)
        for i in range(n):
            out = -(-spatial[i] // s[i])
            total = max(0, (out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - spatial[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + n] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * n)
    return xs, spatial, k, s, d, pads


def _transpose_conv(e, g, weight, xs, spatial, k, s, d, pads, group, out_shape, ceil_fix=True):
    """x-gradient of a convolution as ConvTranspose, padded or cropped to x's size."""
    n = len(spatial)
    out_sp = out_shape[2:]
    natural = [(out_sp[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - pads[i] - pads[i + n] for i in range(n)]
    outpad = [spatial[i] - natural[i] for i in range(n)]
    fits = all(0 <= p < max(s[i], d[i]) for i, p in enumerate(outpad))
    if fits:
        return e.op("ConvTranspose", g, weight, strides=s, dilations=d, pads=pads, group=group, output_padding=outpad)
    res = e.op("ConvTranspose", g, weight, strides=s, dilations=d, pads=pads, group=group)
    # ceil_mode pooling can make the natural size larger than x: crop; otherwise pad the tail with zeros
    crop = [min(natural[i], spatial[i]) for i in range(n)]
    res = e.op("Slice", res, e.ints([0] * n), e.ints(crop), e.ints(list(range(2, 2 + n))))
    tail = [spatial[i] - crop[i] for i in range(n)]
    if any(tail):
        res = e.op("Pad", res, e.ints([0, 0] + [0] * n + [0, 0] + tail))
    return res


@rule("Conv")
def conv(e, node, dy, needs):
    """dx = conv_transpose(dy, W); at stride 1 a conv of dy with W flipped in space and in/out channels swapped"""
    x, w = node.input[0], node.input[1]
    if needs[1] or (len(node.input) > 2 and needs[2]):
        raise ConvlensError(f"Conv node {node.name!r}: gradients with respect to weights are not supported.")
    wv = e.value(w)
    w_shape = list(wv.shape) if wv is not None else e.shape(w)
    xs, spatial, k, s, d, pads = _conv_geometry(e, node, x, w_shape)
    group = attrs(node).get("group", 1)
    n = len(spatial)
    back_pads = [d[i] * (k[i] - 1) - pads[i] for i in range(n)] + [d[i] * (k[i] - 1) - pads[i + n] for i in range(n)]
    if wv is not None and all(v == 1 for v in s) and all(p >= 0 for p in back_pads):
        o, ipg = wv.shape[0], wv.shape[1]
        flipped = wv.reshape(group, o // group, ipg, *wv.shape[2:]).swapaxes(1, 2)
        flipped = flipped.reshape(group * ipg, o // group, *wv.shape[2:])[(...,) + (slice(None, None, -1),) * n]
        wf = e.const(np.ascontiguousarray(flipped))
        dx = e.op("Conv", dy[0], wf, pads=back_pads, dilations=d, group=group)
    else:
        out_shape = e.static_shape(node.output[0], f"Conv node {node.name!r}")
        dx = _transpose_conv(e, dy[0], w, xs, spatial, k, s, d, pads, group, out_shape)
    return [dx] + [None] * (len(node.input) - 1)


@rule("ConvTranspose")
def conv_transpose(e, node, dy, needs):
    """dx = conv(dy, W) with the same strides, pads, dilations and groups"""
    a = attrs(node)
    n = len(e.static_shape(node.input[0], "ConvTranspose")) - 2
    keep = {k: a[k] for k in ("strides", "dilations", "pads", "group") if k in a}
    if "pads" not in keep:
        keep["pads"] = [0] * (2 * n)
    dx = e.op("Conv", dy[0], node.input[1], **keep)
    return [dx] + [None] * (len(node.input) - 1)


@rule("MaxPool")
def max_pool(e, node, dy, needs):
    """dx = dy scattered (added) to the argmax position of each window"""
    x = node.input[0]
    indices = e.extra_output(node, 1)
    zeros = e.op("ConstantOfShape", e.op("Shape", x), value=_tensor0())
    flat = e.op("Reshape", zeros, e.ints([-1]))
    scattered = e.op("ScatterElements", flat, e.op("Reshape", indices, e.ints([-1])),
                     e.op("Reshape", dy[0], e.ints([-1])), axis=0, reduction="add")
    return [e.op("Reshape", scattered, e.op("Shape", x))]


def _tensor0():
    from onnx import helper, TensorProto

    return helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])


@rule("AveragePool")
def average_pool(e, node, dy, needs):
    """dx = conv_transpose(dy / count, ones): each input gets its share of every window it is in"""
    a = attrs(node)
    x = node.input[0]
    xs, spatial, k, s, d, pads = _conv_geometry(e, node, x, None)
    n = len(spatial)
    out_shape = e.static_shape(node.output[0], f"AveragePool node {node.name!r}")
    channels = xs[1]
    counts = _window_counts(spatial, out_shape[2:], k, s, pads, bool(a.get("count_include_pad", 0)))
    scaled = e.op("Mul", dy[0], e.const((1.0 / counts).astype(np.float32)))
    ones = e.const(np.ones([channels, 1] + k, np.float32))
    return [_transpose_conv(e, scaled, ones, xs, spatial, k, s, [1] * n, pads, channels, out_shape)]


def _window_counts(spatial, out_sp, k, s, pads, include_pad):
    """The divisor of each pooling window: its inputs, pads included or not (ceil-mode overhang never)."""
    n = len(spatial)
    per_axis = []
    for i in range(n):
        starts = np.arange(out_sp[i]) * s[i] - pads[i]
        first, last = (-pads[i], spatial[i] + pads[i + n]) if include_pad else (0, spatial[i])
        lo, hi = np.maximum(starts, first), np.minimum(starts + k[i], last)
        per_axis.append(np.maximum(hi - lo, 1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts.astype(np.float64)


@rule("GlobalAveragePool")
def global_average_pool(e, node, dy, needs):
    """dx = expand(dy) / (H * W)"""
    xs = e.static_shape(node.input[0], "GlobalAveragePool")
    scaled = e.op("Mul", dy[0], e.const(1.0 / float(np.prod(xs[2:]))))
    return [e.op("Expand", scaled, e.op("Shape", node.input[0]))]


@rule("GlobalMaxPool")
def global_max_pool(e, node, dy, needs):
    """dx = dy where x equals its channel's max"""
    eq = e.op("Equal", node.input[0], node.output[0])
    return [e.op("Where", eq, e.op("Expand", dy[0], e.op("Shape", node.input[0])), _zero(e))]


# --- reductions ----------------------------------------------------------------------------------
def _reduce_axes(e, node):
    a = attrs(node)
    rank = len(e.static_shape(node.input[0], node.op_type))
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = e.value(node.input[1])
        if axes is None:
            raise ConvlensError(f"{node.op_type} node {node.name!r}: axes must be constant to differentiate it.")
        axes = [int(v) for v in np.atleast_1d(axes)]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return [], a.get("keepdims", 1)
        axes = list(range(rank))
    return sorted(v % rank for v in axes), a.get("keepdims", 1)


def _expand_back(e, node, g, axes, keepdims):
    if not keepdims and axes:
        g = e.op("Unsqueeze", g, e.ints(axes))
    return e.op("Expand", g, e.op("Shape", node.input[0]))


@rule("ReduceSum")
def reduce_sum(e, node, dy, needs):
    """dx = expand(dy)"""
    axes, keep = _reduce_axes(e, node)
    return [_expand_back(e, node, dy[0], axes, keep)] + [None] * (len(node.input) - 1)


@rule("ReduceMean")
def reduce_mean(e, node, dy, needs):
    """dx = expand(dy) / count"""
    axes, keep = _reduce_axes(e, node)
    xs = e.static_shape(node.input[0], "ReduceMean")
    count = float(np.prod([xs[a] for a in axes])) if axes else 1.0
    g = e.op("Mul", dy[0], e.const(1.0 / count))
    return [_expand_back(e, node, g, axes, keep)] + [None] * (len(node.input) - 1)


@rule("ReduceMax", "ReduceMin")
def reduce_max(e, node, dy, needs):
    """dx = expand(dy) where x equals the reduced value"""
    axes, keep = _reduce_axes(e, node)
    y = node.output[0]
    if not keep and axes:
        y = e.op("Unsqueeze", y, e.ints(axes))
    g = _expand_back(e, node, dy[0], axes, keep)
    return [_mask(e, e.op("Equal", node.input[0], y), g)] + [None] * (len(node.input) - 1)


# --- shape and data movement ---------------------------------------------------------------------
@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(e, node, dy, needs):
    """dx = reshape(dy, shape(x))"""
    return [e.op("Reshape", dy[0], e.op("Shape", node.input[0]))] + [None] * (len(node.input) - 1)


@rule("Transpose")
def transpose(e, node, dy, needs):
    """dx = transpose(dy, inverse(perm))"""
    perm = attrs(node).get("perm")
    if perm is None:
        perm = list(range(len(e.static_shape(node.input[0], "Transpose"))))[::-1]
    return [e.op("Transpose", dy[0], perm=[int(i) for i in np.argsort(perm)])]


@rule("Concat")
def concat(e, node, dy, needs):
    """dx_i = slice of dy along axis"""
    axis = attrs(node)["axis"]
    out = []
    start = 0
    for i, x in enumerate(node.input):
        shape = e.static_shape(x, f"Concat node {node.name!r}")
        size = shape[axis]
        out.append(e.op("Slice", dy[0], e.ints([start]), e.ints([start + size]), e.ints([axis])) if needs[i] else None)
        start += size
    return out


@rule("Split")
def split(e, node, dy, needs):
    """dx = concat(dy_i), zeros for outputs that got no gradient"""
    axis = attrs(node).get("axis", 0)
    parts = []
    for k, y in enumerate(node.output):
        if dy[k] is not None:
            parts.append(dy[k])
        else:
            parts.append(e.op("ConstantOfShape", e.op("Shape", y), value=_tensor0()))
    return [e.op("Concat", *parts, axis=axis)] + [None] * (len(node.input) - 1)


@rule("Slice")
def slice_(e, node, dy, needs):
    """dx = dy placed back at the sliced positions (zeros elsewhere)"""
    xs = e.static_shape(node.input[0], f"Slice node {node.name!r}")
    rank = len(xs)
    starts, ends = e.value(node.input[1]), e.value(node.input[2])
    axes = e.value(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = e.value(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    if starts is None or ends is None or axes is None or steps is None:
        raise ConvlensError(f"Slice node {node.name!r}: starts, ends, axes and steps must be constant to differentiate it.")
    if np.any(steps != 1):
        return [_slice_scatter(e, node, dy[0], xs, starts, ends, axes, steps)] + [None] * (len(node.input) - 1)
    pads = [0] * (2 * rank)
    for st, en, ax in zip(starts, ends, axes):
        ax = int(ax) % rank
        dim = xs[ax]
        st = int(np.clip(st + dim if st < 0 else st, 0, dim))
        en = int(np.clip(en + dim if en < 0 else en, 0, dim))
        pads[ax], pads[ax + rank] = st, dim - en
    return [e.op("Pad", dy[0], e.ints(pads))] + [None] * (len(node.input) - 1)


def _slice_scatter(e, node, g, xs, starts, ends, axes, steps):
    # strided slices: scatter through the flat index of each kept element
    idx = np.arange(int(np.prod(xs[1:]))).reshape(xs[1:])
    sl = [slice(None)] * len(xs[1:])
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = int(ax) % len(xs)
        if ax == 0:
            raise ConvlensError(f"Slice node {node.name!r}: slicing the batch axis cannot be differentiated.")
        sl[ax - 1] = slice(int(st), int(en), int(sp))
    kept = idx[tuple(sl)]
    zeros = e.op("ConstantOfShape", e.op("Shape", node.input[0]), value=_tensor0())
    flat = e.op("Reshape", zeros, e.ints([0, -1]))
    n_idx = e.op("Expand", e.const(kept.reshape(1, -1), np.int64), e.op("Shape", e.op("Reshape", g, e.ints([0, -1]))))
    scattered = e.op("ScatterElements", flat, n_idx, e.op("Reshape", g, e.ints([0, -1])), axis=1)
    return e.op("Reshape", scattered, e.op("Shape", node.input[0]))


@rule("Pad")
def pad(e, node, dy, needs):
    """dx = dy with the padding sliced off (constant mode)"""
    a = attrs(node)
    mode = a.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        raise ConvlensError(f"Pad node {node.name!r}: only constant padding can be differentiated, not {mode!r}.")
    pads = a.get("pads")
    if pads is None:
        pads = e.value(node.input[1])
    if pads is None:  # pads computed at run time (exporters' "same" padding): slice with runtime bounds
        if len(node.input) > 3 and node.input[3]:
            raise ConvlensError(f"Pad node {node.name!r}: runtime pads with an axes input cannot be differentiated.")
        rank = len(e.static_shape(node.input[0], f"Pad node {node.name!r}"))
        starts = e.op("Slice", node.input[1], e.ints([0]), e.ints([rank]))
        ends = e.op("Add", starts, e.op("Shape", node.input[0]))
        return [e.op("Slice", dy[0], starts, ends, e.ints(list(range(rank))))] + [None] * (len(node.input) - 1)
    xs = e.static_shape(node.input[0], f"Pad node {node.name!r}")
    rank = len(xs)
    if len(node.input) > 3 and node.input[3]:
        axes = [int(v) % rank for v in e.value(node.input[3])]
    else:
        axes = list(range(rank))
    pads = [int(p) for p in pads]
    k = len(axes)
    starts = [pads[i] for i in range(k)]
    ends = [pads[i] + (xs[ax] if isinstance(xs[ax], int) else 0) for i, ax in enumerate(axes)]
    keep = [i for i, ax in enumerate(axes) if isinstance(xs[ax], int) and (pads[i] or pads[i + k])]
    if not keep:
        return [dy[0]] + [None] * (len(node.input) - 1)
    return [e.op("Slice", dy[0], e.ints([starts[i] for i in keep]), e.ints([ends[i] for i in keep]),
                 e.ints([axes[i] for i in keep]))] + [None] * (len(node.input) - 1)


@rule("Gather")
def gather(e, node, dy, needs):
    """dx = zeros with dy added back at the gathered indices along axis"""
    x, ind = node.input
    axis = attrs(node).get("axis", 0)
    xs = e.static_shape(x, f"Gather node {node.name!r}")
    axis %= len(xs)
    idx = e.value(ind)
    if idx is None:
        raise ConvlensError(f"Gather node {node.name!r}: indices must be constant to differentiate it.")
    idx = np.where(idx < 0, idx + xs[axis], idx)
    g = dy[0]
    if idx.ndim == 0:
        g = e.op("Unsqueeze", g, e.ints([axis]))
        idx = idx.reshape(1)
    if idx.ndim != 1:
        raise ConvlensError(f"Gather node {node.name!r}: only scalar or 1-D indices can be differentiated.")
    if axis != 0 and sorted(idx.tolist()) == list(range(xs[axis])):  # a permutation: gather back
        return [e.op("Gather", g, e.ints(np.argsort(idx)), axis=axis), None]
    shape = [1] * len(xs)
    shape[axis] = len(idx)
    full = e.op("Expand", e.const(idx.reshape(shape), np.int64), e.op("Shape", g))
    zeros = e.op("ConstantOfShape", e.op("Shape", x), value=_tensor0())
    return [e.op("ScatterElements", zeros, full, g, axis=axis, reduction="add"), None]


@rule("Expand")
def expand(e, node, dy, needs):
    """dx = dy summed over the broadcast axes (by the walker)"""
    return [dy[0], None]


@rule("Tile")
def tile(e, node, dy, needs):
    """dx = sum of dy over the tiles"""
    xs = e.static_shape(node.input[0], f"Tile node {node.name!r}")
    reps = [int(r) for r in e.value(node.input[1])]
    if reps[0] != 1:
        raise ConvlensError(f"Tile node {node.name!r}: tiling the batch axis cannot be differentiated.")
    split_shape, axes = [-1], []
    for i in range(1, len(xs)):
        axes.append(len(split_shape))
        split_shape += [reps[i], xs[i]]
    g = e.op("Reshape", dy[0], e.ints(split_shape))
    return [e.op("ReduceSum", g, e.ints(axes), keepdims=0), None]


@rule("Resize", "Upsample")
def resize(e, node, dy, needs):
    """dx = M_h^T dy M_w, the interpolation matrices of each spatial axis, found by resizing unit vectors"""
    xs = e.static_shape(node.input[0], f"{node.op_type} node {node.name!r}")
    ys = e.static_shape(node.output[0], f"{node.op_type} node {node.name!r}")
    if len(xs) != 4 or xs[:2][1:] != ys[:2][1:]:
        raise ConvlensError(f"{node.op_type} node {node.name!r}: only spatial resizing of 4-D tensors can be differentiated.")
    scales = e.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "Upsample":
        scales = e.value(node.input[1])
    mh = _interp_matrix(node, xs[2], ys[2], 2, scales)
    mw = _interp_matrix(node, xs[3], ys[3], 3, scales)
    g = e.op("MatMul", dy[0], e.const(np.ascontiguousarray(mw)))  # (..., Ho, Wo) @ (Wo, Wi)
    g = e.op("MatMul", e.const(np.ascontiguousarray(mh.T)), g)  # (Hi, Ho) @ (..., Ho, Wi)
    return [g] + [None] * (len(node.input) - 1)


def _interp_matrix(node, n_in, n_out, axis, scales):
    """M (n_out x n_in) with resize(v) = M v along one axis, by running the op on unit vectors."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    a = attrs(node)
    shape_in = [n_in, 1, 1, 1]
    shape_in[axis] = n_in
    basis = np.zeros(shape_in, np.float32)
    for i in range(n_in):
        basis[(i, 0) + tuple(i if ax == axis else 0 for ax in (2, 3))] = 1.0
    keep = {k: v for k, v in a.items() if k in ("mode", "coordinate_transformation_mode", "nearest_mode",
                                                  "cubic_coeff_a", "exclude_outside")}
    if scales is not None and len(scales):
        axis_scales = np.ones(4, np.float32)
        axis_scales[axis] = scales[axis]
        feed, inputs = {"scales": axis_scales}, ["x", "", "scales"]
        info = helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])
    else:
        sizes = np.array(shape_in, np.int64)
        sizes[axis] = n_out
        feed, inputs = {"sizes": sizes}, ["x", "", "", "sizes"]
        info = helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])
    n = helper.make_node("Resize", inputs, ["y"], **keep)
    g = helper.make_graph([n], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in), info],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    out = ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])).run(None, {"x": basis, **feed})[0]
    return out.reshape(n_in, n_out).T


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
    return [e.op("Mul", dy[0], e.const(factor))] + [None] * 4


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
    return [e.op("Div", t, sigma)] + [None] * (len(node.input) - 1)


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
