"""Where a unit looks: the receptive field of each position of a layer, from the graph's conv and pool geometry.

Per axis each tensor carries (size, jump, start): a position i of it sees input pixels centred on start + i * jump
over `size` pixels. A convolution or pooling with kernel k, stride s, dilation d and leading padding p gives
size + (k - 1) * d * jump, jump * s, start + ((k - 1) * d / 2 - p) * jump; ops that keep the grid pass it on, and
where inputs meet (a residual add, a concat) the largest field wins. Ops that change the grid otherwise (resizes,
transposed convs, reshapes) end the trace: such layers have no field here.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnx import numpy_helper

from ..model.model import Model

POOLS = ("MaxPool", "AveragePool", "LpPool")
CONVS = ("Conv", "ConvInteger", "QLinearConv")
KEEP_GRID = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
             "Gelu", "Erf", "Softplus", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Concat", "Identity",
             "Dropout", "BatchNormalization", "InstanceNormalization", "Cast", "Transpose", "Neg", "Abs", "Sqrt",
             "Pow", "Exp", "Where", "QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class Field:
    size: tuple[float, float]  # pixels, (height, width)
    jump: tuple[float, float]
    start: tuple[float, float]

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of position (y, x)'s field in the input, clipped to it."""
        cy, cx = self.start[0] + y * self.jump[0], self.start[1] + x * self.jump[1]
        y0, y1 = cy - (self.size[0] - 1) / 2, cy + (self.size[0] - 1) / 2 + 1
        x0, x1 = cx - (self.size[1] - 1) / 2, cx + (self.size[1] - 1) / 2 + 1
        return (max(0, int(y0)), max(0, int(x0)), min(height, int(round(y1 + 0.49))),
                min(width, int(round(x1 + 0.49))))


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else (a.i if a.type == a.INT else default)
    return default


def _constant(model: Model, name: str):
    t = model.small_inits.get(name)
    return [int(v) for v in numpy_helper.to_array(t).reshape(-1)] if t is not None else None


def _computed_pads(model: Model, size) -> dict:
    """Pads that the graph computes from shapes ('same' padding in TF-style exports such as EfficientNet's):
    the total per axis is read off the Pad's input and output shapes at `size`, and split as 'same' padding
    splits it (the smaller half first)."""
    wanted = [n for n in model.nodes if n.op_type == "Pad" and len(n.input) > 1 and n.input[1] not in model.small_inits]
    if not wanted:
        return {}
    shapes = model.shapes.complete(tuple(size))
    out = {}
    for node in wanted:
        a, b = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a and b and len(a) == 4 and len(b) == 4 and all(isinstance(d, int) for d in [*a[1:], *b[1:]]):
            total = [b[i] - a[i] for i in range(4)]
            out[node.input[1]] = [t // 2 for t in total] + [t - t // 2 for t in total]
    return out


def receptive_fields(model: Model, size) -> dict[str, Field]:
    """Tensor name -> its Field, for the tensors the trace reaches (see the module docstring); `size` is the
    input size at which pads the graph computes are read."""
    computed = _computed_pads(model, size)
    fields = {model.input_spec.name: Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))}
    for node in model.nodes:
        known = [fields[i] for i in node.input if i in fields]
        if not known or not node.output:
            continue
        if node.op_type in CONVS or node.op_type in POOLS:
            f = fields.get(node.input[0])
            if f is None:
                continue
            if node.op_type in CONVS:
                weight = model.weights.get(node.input[3 if node.op_type == "QLinearConv" else 1])
                kernel = _attr(node, "kernel_shape", None) or (list(weight.shape[2:]) if weight is not None else None)
            else:
                kernel = _attr(node, "kernel_shape", None)
            if not kernel or len(kernel) != 2 or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
                continue
            strides = _attr(node, "strides", None) or [1, 1]
            dilations = _attr(node, "dilations", None) or [1, 1]
            pads = _attr(node, "pads", None) or [0, 0, 0, 0]
            size = tuple(f.size[a] + (kernel[a] - 1) * dilations[a] * f.jump[a] for a in (0, 1))
            start = tuple(f.start[a] + ((kernel[a] - 1) * dilations[a] / 2 - pads[a]) * f.jump[a] for a in (0, 1))
            jump = tuple(f.jump[a] * strides[a] for a in (0, 1))
            fields[node.output[0]] = Field(size, jump, start)
        elif node.op_type == "Pad" and node.input[0] in fields:
            pads = (_constant(model, node.input[1]) or computed.get(node.input[1])) if len(node.input) > 1 \
                else _attr(node, "pads", None)
            if pads is not None and len(pads) == 8:  # NCHW: the padding's top and left rows shift the grid
                f = fields[node.input[0]]
                fields[node.output[0]] = Field(f.size, f.jump, (f.start[0] - pads[2] * f.jump[0],
                                                                f.start[1] - pads[3] * f.jump[1]))
        elif node.op_type in KEEP_GRID:
            widest = max(known, key=lambda f: f.size[0] * f.size[1])
            for out in node.output:
                fields[out] = widest
    return fields
