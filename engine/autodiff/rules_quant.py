"""Rules for quantize/dequantize pairs (QDQ models): straight-through inside the quantization range.

Together the two rules make d DequantizeLinear(QuantizeLinear(x)) / dx = 1 where x is representable and 0
where it saturates, which is the gradient torch's FakeQuantize uses for quantization-aware training.
"""
from __future__ import annotations

from onnx import TensorProto

from ..errors import ConvlensError
from .registry import rule


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
