"""Rules for reductions and for ops that move data around (reshape, slice, gather, resize...)."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from .emitter import attrs
from .registry import rule


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
    return [_expand_back(e, node, dy[0], axes, keep)]


@rule("ReduceMean")
def reduce_mean(e, node, dy, needs):
    """dx = expand(dy) / count"""
    axes, keep = _reduce_axes(e, node)
    xs = e.static_shape(node.input[0], "ReduceMean")
    count = float(np.prod([xs[a] for a in axes])) if axes else 1.0
    g = e.op("Mul", dy[0], e.const(1.0 / count))
    return [_expand_back(e, node, g, axes, keep)]


@rule("ReduceL2")
def reduce_l2(e, node, dy, needs):
    """dx = expand(dy) * x / expand(y) (0 where the norm is 0, as torch's norm backward gives)"""
    # y = sqrt(sum x^2): dy/dx = x / y. Where y = 0 every x in the group is 0, so x / max(y, tiny) is that 0.
    axes, keep = _reduce_axes(e, node)
    g = _expand_back(e, node, dy[0], axes, keep)
    y = _expand_back(e, node, node.output[0], axes, keep)
    safe = e.op("Max", y, e.const(np.finfo(np.float32).tiny))
    return [e.op("Mul", g, e.op("Div", node.input[0], safe))]


@rule("ReduceMax", "ReduceMin")
def reduce_max(e, node, dy, needs):
    """dx = expand(dy) at the first extreme element of each reduced group (ties: the first in row-major
    order takes the whole gradient, as ONNX MaxPool's Indices and torch's max(dim) choose)"""
    axes, keep = _reduce_axes(e, node)
    g = _expand_back(e, node, dy[0], axes, keep)
    shape = e.static_shape(node.input[0], node.op_type)
    return [e.mask(e.first_extreme(node.input[0], shape, axes, largest=node.op_type == "ReduceMax"), g)]


# --- shape and data movement ---------------------------------------------------------------------
@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(e, node, dy, needs):
    """dx = reshape(dy, shape(x))"""
    return [e.op("Reshape", dy[0], e.op("Shape", node.input[0]))]


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
            parts.append(e.zeros_like(y))
    return [e.op("Concat", *parts, axis=axis)]


@rule("Slice")
def slice_(e, node, dy, needs):
    """dx = dy placed back at the sliced positions (zeros elsewhere)"""
    xs = e.static_shape(node.input[0], f"Slice node {node.name!r}")
    rank = len(xs)
    starts, ends = e.value(node.input[1]), e.value(node.input[2])
    axes = e.value(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = e.value(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    if starts is None or ends is None or axes is None or steps is None:
        raise ConvlensError(
            f"Slice node {node.name!r}: starts, ends, axes and steps must be constant to differentiate it."
        )
    if np.any(steps != 1):
        return [_slice_scatter(e, node, dy[0], xs, starts, ends, axes, steps)]
    pads = [0] * (2 * rank)
    for st, en, ax in zip(starts, ends, axes):
        ax = int(ax) % rank
        dim = xs[ax]
        if not isinstance(dim, int):  # the symbolic batch axis: only a whole-axis slice (tf2onnx writes them)
            if st == 0 and en >= 2 ** 31 - 1:
                continue
            raise ConvlensError(f"Slice node {node.name!r} slices the batch axis; it has no gradient rule.")
        st = int(np.clip(st + dim if st < 0 else st, 0, dim))
        en = int(np.clip(en + dim if en < 0 else en, 0, dim))
        pads[ax], pads[ax + rank] = st, dim - en
    return [e.op("Pad", dy[0], e.ints(pads))]


# the padding modes whose border copies input values: numpy.pad's modes of the same meaning
COPYING_PADS = {"edge": "edge", "reflect": "reflect", "wrap": "wrap"}


def _copying_pad_grad(e, node, g: str, mode: str, pads) -> str:
    """Per padded axis, out[i] = x[source[i]]: the gradient is sum_i g[i] * onehot(source[i]), one Einsum with an
    (out, in) 0/1 matrix per axis (the modes pad each axis independently, so the axes compose)."""
    what = f"Pad node {node.name!r}"
    if pads is None or (len(node.input) > 3 and node.input[3]):
        raise ConvlensError(
            f"{what}: {mode!r} padding with pads or axes computed at run time cannot be differentiated."
        )
    xs = e.static_shape(node.input[0], what)
    rank, pads = len(xs), [int(p) for p in pads]
    letters = "abcdefghij"[:rank]
    for axis in range(rank):
        begin, end = pads[axis], pads[axis + rank]
        if not (begin or end):
            continue
        n = int(xs[axis])
        source = np.pad(np.arange(n), (max(begin, 0), max(end, 0)), mode=COPYING_PADS[mode])
        source = source[max(-begin, 0):len(source) - max(-end, 0)]  # negative pads crop
        onehot = np.zeros((len(source), n), np.float32)
        onehot[np.arange(len(source)), source] = 1.0
        out = letters.replace(letters[axis], "z")
        g = e.op("Einsum", g, e.const(onehot), equation=f"{letters},{letters[axis]}z->{out}")
    return g


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
    zeros = e.zeros_like(node.input[0])
    flat = e.op("Reshape", zeros, e.ints([0, -1]))
    n_idx = e.op("Expand", e.const(kept.reshape(1, -1), np.int64), e.op("Shape", e.op("Reshape", g, e.ints([0, -1]))))
    scattered = e.op("ScatterElements", flat, n_idx, e.op("Reshape", g, e.ints([0, -1])), axis=1)
    return e.op("Reshape", scattered, e.op("Shape", node.input[0]))


@rule("Pad")
def pad(e, node, dy, needs):
    """dx = dy with the padding sliced off (constant); edge/reflect/wrap add each copied border back onto its source"""
    a = attrs(node)
    mode = a.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    pads = a.get("pads")
    if pads is None:
        pads = e.value(node.input[1])
    if mode in COPYING_PADS:
        return [_copying_pad_grad(e, node, dy[0], mode, pads)]
    if mode != "constant":
        raise ConvlensError(f"Pad node {node.name!r}: padding mode {mode!r} cannot be differentiated.")
    if pads is None:  # pads computed at run time (exporters' "same" padding): slice with runtime bounds
        if len(node.input) > 3 and node.input[3]:
            raise ConvlensError(f"Pad node {node.name!r}: runtime pads with an axes input cannot be differentiated.")
        rank = len(e.static_shape(node.input[0], f"Pad node {node.name!r}"))
        starts = e.op("Slice", node.input[1], e.ints([0]), e.ints([rank]))
        ends = e.op("Add", starts, e.op("Shape", node.input[0]))
        return [e.op("Slice", dy[0], starts, ends, e.ints(list(range(rank))))]
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
        return [dy[0]]
    return [e.op("Slice", dy[0], e.ints([starts[i] for i in keep]), e.ints([ends[i] for i in keep]),
                 e.ints([axes[i] for i in keep]))]


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
    if (idx < 0).any():
        if not isinstance(xs[axis], int):
            raise ConvlensError(f"Gather node {node.name!r}: negative indices on an axis of unknown size.")
        idx = np.where(idx < 0, idx + xs[axis], idx)
    g = dy[0]
    if idx.ndim == 0:
        g = e.op("Unsqueeze", g, e.ints([axis]))
        idx = idx.reshape(1)
    elif idx.ndim > 1:  # the index dims of dy become one axis (exporters write as_strided this way)
        trailing = xs[axis + 1:]
        if not all(isinstance(d, int) for d in trailing):
            raise ConvlensError(f"Gather node {node.name!r}: multi-dimensional indices need the trailing axes' sizes.")
        g = e.op("Reshape", g, e.ints([0] * axis + [idx.size] + list(trailing)))
        idx = idx.reshape(-1)
    if axis != 0 and sorted(idx.tolist()) == list(range(xs[axis])):  # a permutation: gather back
        return [e.op("Gather", g, e.ints(np.argsort(idx)), axis=axis), None]
    shape = [1] * len(xs)
    shape[axis] = len(idx)
    full = e.op("Expand", e.const(idx.reshape(shape), np.int64), e.op("Shape", g))
    zeros = e.zeros_like(x)
    return [e.op("ScatterElements", zeros, full, g, axis=axis, reduction="add"), None]


@rule("GatherND")
def gather_nd(e, node, dy, needs):
    """dx = zeros with dy added back at the gathered index tuples"""
    if attrs(node).get("batch_dims", 0):
        raise ConvlensError(f"GatherND node {node.name!r}: batch_dims > 0 cannot be differentiated yet.")
    if e.opset < 16:
        raise ConvlensError(
            f"GatherND node {node.name!r}: its gradient (ScatterND with reduction) needs opset 16 or later."
        )
    x, ind = node.input
    zeros = e.zeros_like(x)
    return [e.op("ScatterND", zeros, ind, dy[0], reduction="add"), None]


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
        raise ConvlensError(
            f"{node.op_type} node {node.name!r}: only spatial resizing of 4-D tensors can be differentiated."
        )
    scales = e.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "Upsample":
        scales = e.value(node.input[1])
    mh = _interp_matrix(node, xs[2], ys[2], 2, scales)
    mw = _interp_matrix(node, xs[3], ys[3], 3, scales)
    g = e.op("MatMul", dy[0], e.const(np.ascontiguousarray(mw)))  # (..., Ho, Wo) @ (Wo, Wi)
    g = e.op("MatMul", e.const(np.ascontiguousarray(mh.T)), g)  # (Hi, Ho) @ (..., Ho, Wi)
    return [g]


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
    out = ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])).run(
        None, {"x": basis, **feed}
    )[0]
    return out.reshape(n_in, n_out).T
