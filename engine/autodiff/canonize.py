"""Canonizers: graph passes run before relevance rules are written (Zennit's canonizers, on ONNX nodes).

The LRP rules modify a layer's weights (their positive part, their square...), so a batch norm after a
convolution must be folded into it first, as Zennit's SequentialMergeBatchNorm does: otherwise the rules see
the convolution alone and the batch norm passes relevance unchanged. Folded here: BatchNormalization after a
Conv or Gemm, and a Mul then Add by per-channel constants after a Conv (how some exporters write a batch norm),
also behind a Transpose to channels-last (how tf2onnx writes a Keras Conv2D + BatchNormalization whose layer
outputs are exposed). The folded layer computes the same values (to float rounding) and keeps the batch norm's
output name.
A MatMul by a constant matrix followed by the Add of a constant bias (how tf2onnx writes a Keras Dense layer)
becomes one Gemm first, so that the rules see the bias inside the layer as they do in torch's Linear.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .emitter import attrs


def canonize(nodes: list, weights: dict, inits: dict, shapes: dict) -> tuple[list, dict, dict]:
    """(nodes with dense layers made whole and normalizations folded into the layer before them, new weights,
    {old output name: new name} for the layers whose output now carries the folded node's name)."""
    return fold_batch_norms(dense_layers(nodes, weights, inits, shapes), weights, inits)


def dense_layers(nodes: list, weights: dict, inits: dict, shapes: dict) -> list:
    """MatMul(x, W) then Add(., b), x a matrix, W and b constants, the product used only by the Add: one Gemm."""
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def constant(name):
        return weights.get(name) if name in weights else (numpy_helper.to_array(inits[name]) if name in inits
                                                          else None)

    out, dropped = [], set()
    for n in nodes:
        if id(n) in dropped:
            continue
        users = consumers.get(n.output[0], []) if n.op_type == "MatMul" else []
        w = constant(n.input[1]) if n.op_type == "MatMul" else None
        x_shape = shapes.get(n.input[0]) if n.op_type == "MatMul" else None
        if w is None or w.ndim != 2 or not x_shape or len(x_shape) != 2 or len(users) != 1 or \
                users[0].op_type != "Add":
            out.append(n)
            continue
        add = users[0]
        bias_name = add.input[1] if add.input[0] == n.output[0] else add.input[0]
        b = constant(bias_name)
        if b is None or b.size != w.shape[1] or b.ndim > 2:
            out.append(n)
            continue
        out.append(helper.make_node("Gemm", [n.input[0], n.input[1], bias_name], [add.output[0]],
                                    name=f"{add.output[0]}_dense"))
        dropped.add(id(add))
    return out


def fold_batch_norms(nodes: list, weights: dict, inits: dict) -> tuple[list, dict, dict]:
    """(nodes with each foldable normalization merged into the layer before it, the new weights by name, the
    renamed layer outputs)."""
    nodes = list(nodes)
    new: dict[str, np.ndarray] = {}
    renamed: dict[str, str] = {}

    def value(name):
        if name in new:
            return new[name]
        if name in weights:
            return weights[name]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return None

    changed = True
    while changed:
        changed = False
        consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for k, layer in enumerate(nodes):
            if layer.op_type not in ("Conv", "Gemm") or len(consumers.get(layer.output[0], [])) != 1:
                continue
            after = consumers[layer.output[0]][0]
            # tf2onnx writes a Keras conv as NCHW Conv, Transpose back to NHWC, then the batch norm's Mul/Add
            relayout = after if layer.op_type == "Conv" and _to_channels_last(after) else None
            if relayout is not None:
                if len(consumers.get(relayout.output[0], [])) != 1:
                    continue
                after = consumers[relayout.output[0]][0]
            w = value(layer.input[1])
            if w is None or (layer.op_type == "Gemm" and _gemm_transposed(layer)):
                continue
            b = value(layer.input[2]) if len(layer.input) > 2 and layer.input[2] else np.zeros(w.shape[0], w.dtype)
            if b is None:
                continue
            scale_shift = _per_channel(after, value, w.shape[0], layer.op_type, channels_last=relayout is not None)
            if scale_shift is None:
                continue
            scale, shift = scale_shift
            base = after.output[0]
            w2 = (w * scale.reshape([-1] + [1] * (w.ndim - 1))).astype(np.float32)
            b2 = (b * scale + shift).astype(np.float32)
            new[f"{base}_folded_w"], new[f"{base}_folded_b"] = w2, b2
            # behind a relayout the merged layer keeps its own output name (and known shape), now normalized
            layer_out = base if relayout is None else layer.output[0]
            merged = helper.make_node(layer.op_type, [layer.input[0], f"{base}_folded_w", f"{base}_folded_b"],
                                      [layer_out], name=f"{base}_folded")
            merged.attribute.extend(layer.attribute)
            nodes[k] = merged
            if relayout is not None:  # the relayout now carries the normalized values, under the norm's name
                moved = helper.make_node("Transpose", [layer_out], [base], name=f"{base}_relayout")
                moved.attribute.extend(relayout.attribute)
                nodes[nodes.index(relayout)] = moved
                renamed[relayout.output[0]] = base
            nodes = [n for n in nodes if n is not after]
            if relayout is None:
                renamed[layer.output[0]] = base
            changed = True
            break
    return nodes, new, renamed


def _gemm_transposed(node) -> bool:
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    return a.get("transA", 0) != 0 or a.get("transB", 0) != 1 or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0


def _to_channels_last(node: onnx.NodeProto) -> bool:
    """A Transpose that moves the channel axis (1) of a convolution's output last: [0, 2, ..., 1]."""
    if node.op_type != "Transpose":
        return False
    perm = list(attrs(node).get("perm", []))
    return len(perm) >= 3 and perm == [0, *range(2, len(perm)), 1]


def _per_channel(node: onnx.NodeProto, value, channels: int, layer_op: str, channels_last: bool = False):
    """(scale, shift) per output channel when `node` is y = x * scale + shift along the channel axis (last for a
    convolution behind a channels-last relayout), else None."""
    if node.op_type == "BatchNormalization":
        if channels_last:
            return None
        gamma, beta, mean, var = (value(i) for i in node.input[1:5])
        if any(v is None for v in (gamma, beta, mean, var)):
            return None
        eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale
    if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
        return None
    c = value(node.input[1])
    if c is None:
        return None
    # the constant must vary along the channel axis only: (C, 1, 1) or (1, C, 1, 1) after a Conv, (C,) after a Gemm
    flat = np.asarray(c, np.float64)
    squeezed = [d for d in flat.shape if d != 1]
    along_channels = (flat.ndim >= 3 and flat.shape[-3] == channels) if layer_op == "Conv" and not channels_last \
        else (flat.ndim >= 1 and flat.shape[-1] == channels)
    if flat.size == 1:
        per = np.full(channels, float(flat.reshape(-1)[0]))
    elif squeezed == [channels] and along_channels:
        per = flat.reshape(-1)
    else:
        return None
    return (per, np.zeros(channels)) if node.op_type == "Mul" else (np.ones(channels), per)
