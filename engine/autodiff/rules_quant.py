"""Rules for quantize/dequantize pairs (QDQ models): straight-through inside the quantization range.

Together the two rules make d DequantizeLinear(QuantizeLinear(x)) / dx = 1 where x is representable and 0
where it saturates, which is the gradient torch's FakeQuantize uses for quantization-aware training.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..errors import ConvlensError
from .registry import rule
from .rules_conv import conv
from .rules_linear import matmul


def _per_tensor(e, node) -> None:
    shape = e.shapes.get(node.input[1])
    if shape is not None and len(shape) > 0 and any(d != 1 for d in shape):
        raise ConvlensError(f"{node.op_type} node {node.name!r} quantizes per axis on the path to the input; convlens "
                            "differentiates per-tensor activation quantization only (quantize weights per axis, "
                            "activations per tensor).")


@rule("DequantizeLinear")
def dequantize(e, node, dy, needs):
    """y = (q - zero_point) * scale:  dq = dy * scale (q is treated as real-valued)"""
    _per_tensor(e, node)
    return [e.op("Mul", dy[0], node.input[1])]


@rule("QuantizeLinear")
def quantize(e, node, dy, needs):
    """q = saturate(round(x / scale) + zero_point):  dx = dq / scale where x is within half a step of
    dequantize(q) (not saturated), else 0"""
    _per_tensor(e, node)
    x, scale, q = node.input[0], node.input[1], node.output[0]
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    back = e.op("DequantizeLinear", q, scale, *([zp] if zp else []))
    error = e.op("Abs", e.op("Sub", back, x))
    inside = e.op("LessOrEqual", error, e.op("Mul", e.op("Abs", scale), e.const(0.5001)))
    mask = e.op("Cast", inside, to=TensorProto.FLOAT)
    return [e.op("Mul", e.op("Div", dy[0], scale), mask)]


# Dynamic int8 files (onnxruntime.quantization.quantize_dynamic): activations are quantized at run time by
# DynamicQuantizeLinear and multiplied in integers by ConvInteger / MatMulInteger against int8 weights. The
# same straight-through reading: the quantized activation is x / scale + zero_point as a real number, the scale
# a constant, so the gradient is the float model's with the dequantized weights.
@rule("DynamicQuantizeLinear")
def dynamic_quantize(e, node, dy, needs):
    """y = saturate(round(x / y_scale) + y_zero_point), y_scale from x's own range:  dx = dy / y_scale (straight
    through; the scale and zero point carry no gradient)"""
    return [e.op("Div", dy[0], node.output[1]) if dy[0] is not None else None]


def _real_weights(e, node, index: int, zero_index: int, per_output_axis: int):
    """The integer weights minus their zero point, as a float constant (per-channel zero points broadcast along
    `per_output_axis`)."""
    w = e.value(node.input[index])
    if w is None:
        raise ConvlensError(f"{node.op_type} node {node.name!r} multiplies two run-time tensors; convlens "
                            "differentiates integer ops whose weights are constants only.")
    zero = e.value(node.input[zero_index]) if len(node.input) > zero_index and node.input[zero_index] else None
    real = w.astype(np.float32)
    if zero is not None:
        zero = zero.astype(np.float32)
        if zero.ndim == 1 and zero.size > 1:
            shape = [1] * real.ndim
            shape[per_output_axis] = zero.size
            zero = zero.reshape(shape)
        real = real - zero
    return e.const(real)


@rule("ConvInteger")
def conv_integer(e, node, dy, needs):
    """y = conv(x - x_zero_point, w - w_zero_point) in integers:  dx = the Conv rule's, with w - w_zero_point"""
    weights = _real_weights(e, node, 1, 3, 0)
    real = helper.make_node("Conv", [node.input[0], weights], list(node.output), name=node.name,
                            **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    return conv(e, real, dy, [needs[0], False])[:1]


@rule("MatMulInteger")
def matmul_integer(e, node, dy, needs):
    """y = (a - a_zero_point) @ (b - b_zero_point) in integers:  da = dy @ (b - b_zero_point)^T"""
    weights = _real_weights(e, node, 1, 3, -1)
    real = helper.make_node("MatMul", [node.input[0], weights], list(node.output), name=node.name)
    return matmul(e, real, dy, [needs[0], False])[:1]
