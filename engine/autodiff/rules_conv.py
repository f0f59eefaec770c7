"""Rules for convolutions and pooling."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from .emitter import attrs
from .registry import rule


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
    """x-gradient of a convolution as ConvTranspose, padded or cropped to x's size.

    Derivation (one spatial axis). The forward reads x[o*s + j*d - p_begin] into y[o], for kernel tap j. So
    dx[i] = sum over (o, j) with o*s + j*d - p_begin = i of dy[o] * W[j]: dy spread with stride s
    (zeros between its samples: the "input dilation" of JAX's transpose rule), then correlated with W
    flipped. That is exactly ConvTranspose(dy, W, strides=s, dilations=d, pads=pads), whose output length
    is (out - 1)*s + d*(k - 1) + 1 - p_begin - p_end. With stride > 1 the forward drops up to s - 1 trailing
    inputs that no window reads (floor division), so the natural length can fall short of x's by that many:
    output_padding adds them back as zeros (their gradient is 0). A ceil_mode pool's windows can run past
    the end instead, making the natural length longer: then the result is cropped."""
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
    # at stride 1, dx is a plain convolution of dy with W flipped and its channels swapped (see
    # _transpose_conv): dy[o] meets W[j] at i = o + j*d - p_begin, so dy is padded by d*(k - 1) - p_begin
    # in front (the taps that reach before x[0]) and d*(k - 1) - p_end behind
    back_pads = [d[i] * (k[i] - 1) - pads[i] for i in range(n)] + [d[i] * (k[i] - 1) - pads[i + n] for i in range(n)]
    # few input channels (an RGB first layer): ConvTranspose runs the same sum about twice as fast as a
    # convolution with 3 output channels, which the blocked (NCHWc) kernels cannot use
    if wv is not None and all(v == 1 for v in s) and all(p >= 0 for p in back_pads) and wv.shape[1] * group >= 16:
        o, ipg = wv.shape[0], wv.shape[1]
        if e.copy_weights:
            flipped = wv.reshape(group, o // group, ipg, *wv.shape[2:]).swapaxes(1, 2)
            flipped = flipped.reshape(group * ipg, o // group, *wv.shape[2:])[(...,) + (slice(None, None, -1),) * n]
            wf = e.const(np.ascontiguousarray(flipped))
        else:  # the same flip as graph nodes on the stored weight: ONNX Runtime folds them once per session
            grouped = e.op("Reshape", w, e.ints([group, o // group, ipg, *wv.shape[2:]]))
            swapped = e.op("Transpose", grouped, perm=[0, 2, 1] + list(range(3, 3 + n)))
            merged = e.op("Reshape", swapped, e.ints([group * ipg, o // group, *wv.shape[2:]]))
            wf = e.op("Slice", merged, e.ints([-1] * n), e.ints([-2 ** 63] * n), e.ints(list(range(2, 2 + n))),
                      e.ints([-1] * n))
        dx = e.op("Conv", dy[0], wf, pads=back_pads, dilations=d, group=group)
    else:
        out_shape = e.static_shape(node.output[0], f"Conv node {node.name!r}")
        dx = _transpose_conv(e, dy[0], w, xs, spatial, k, s, d, pads, group, out_shape)
    return [dx]


@rule("ConvTranspose")
def conv_transpose(e, node, dy, needs):
    """dx = conv(dy, W) with the same strides, pads, dilations and groups

    ConvTranspose is the adjoint (transpose) of the convolution with the same attributes, so its own
    adjoint is that convolution: <conv_transpose(x), dy> = <x, conv(dy)>. Output padding only appends
    outputs that no input reaches, which the convolution's floor division drops again."""
    a = attrs(node)
    n = len(e.static_shape(node.input[0], "ConvTranspose")) - 2
    keep = {k: a[k] for k in ("strides", "dilations", "pads", "group") if k in a}
    if "pads" not in keep:
        keep["pads"] = [0] * (2 * n)
    dx = e.op("Conv", dy[0], node.input[1], **keep)
    return [dx]


@rule("MaxPool")
def max_pool(e, node, dy, needs):
    """dx = dy scattered (added) to each window's argmax (ties: the first maximum, which ONNX MaxPool's Indices
    and torch's max_pool2d both choose)"""
    x = node.input[0]
    indices = e.extra_output(node, 1)
    a = attrs(node)
    k = a["kernel_shape"]
    strides = a.get("strides", [1] * len(k))
    if all(s >= kk for s, kk in zip(strides, k)) and all(v == 1 for v in a.get("dilations", [1] * len(k))) \
            and not a.get("ceil_mode", 0):
        # windows do not overlap: every input receives at most one value, which MaxUnpool places
        # without the atomic-add path of ScatterElements (ORT's MaxUnpool refuses ceil_mode's larger size)
        keep = {"kernel_shape": k, "strides": strides, "pads": a.get("pads", [0] * 2 * len(k))}
        return [e.op("MaxUnpool", dy[0], indices, e.op("Shape", x), **keep)]
    zeros = e.zeros_like(x)
    flat = e.op("Reshape", zeros, e.ints([-1]))
    scattered = e.op("ScatterElements", flat, e.op("Reshape", indices, e.ints([-1])),
                     e.op("Reshape", dy[0], e.ints([-1])), axis=0, reduction="add")
    return [e.op("Reshape", scattered, e.op("Shape", x))]


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
    """dx = dy at the first maximum of each channel (ties: the first, as MaxPool)"""
    x = node.input[0]
    shape = e.static_shape(x, "GlobalMaxPool")
    first = e.first_extreme(x, shape, list(range(2, len(shape))))
    return [e.mask(first, e.op("Expand", dy[0], e.op("Shape", x)))]
