"""The layout of every image-shaped tensor in a graph, read from what its ops do.

An ONNX Conv (and pool, batch norm, ...) is NCHW by definition, whatever the graph's input is: a Keras
model exported by tf2onnx takes NHWC pixels, transposes them, and runs every convolution in NCHW. So a
tensor's layout comes from the op that makes it: NCHW ops make NCHW, a Transpose permutes its input's
layout, layout-preserving ops (elementwise, concat, resize, a MatMul over the last axis) pass it on, and
anything that reshapes makes it unknown (None). Only the graph input's layout comes from outside.
"""
from __future__ import annotations

import onnx

from ..graph import infer_shapes

# ops whose image inputs and outputs are NCHW by the ONNX specification
NCHW_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
            "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization",
            "LRN", "MaxUnpool", "DepthToSpace", "SpaceToDepth", "MaxRoiPool", "DeformConv", "Col2Im"}

# ops whose output has the layout of their first image-shaped input
PRESERVING_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Gelu", "Softplus", "Softsign", "Mish", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Pow",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Where", "Cast", "Identity", "Dropout",
    "Concat", "Split", "Slice", "Pad", "Resize", "Upsample", "Tile", "Expand", "LayerNormalization",
    "QuantizeLinear", "DequantizeLinear", "Floor", "Ceil", "Round", "Sign", "Not", "Equal", "Greater", "Less",
    "ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin", "ReduceL2",  # only with keepdims (checked by rank)
    "MatMul",  # over the last axis: (N, H, W, C) @ (C, D) stays NHWC
    "Softmax", "LogSoftmax",
}

LAYOUTS = ("NCHW", "NHWC")


def tensor_layouts(nodes, input_name: str, input_layout: str, ranks: dict[str, int]) -> dict[str, str | None]:
    """{tensor: "NCHW" | "NHWC" | None} for every 4-D tensor the nodes make; `ranks` gives tensor ranks."""
    layouts: dict[str, str | None] = {input_name: input_layout.upper()}
    for node in nodes:
        for out in node.output:
            if out and ranks.get(out) == 4:
                layouts[out] = _output_layout(node, layouts, ranks)
    return layouts


def _output_layout(node: onnx.NodeProto, layouts: dict, ranks: dict) -> str | None:
    if node.op_type in NCHW_OPS:
        return "NCHW"
    image_inputs = [i for i in node.input if i and ranks.get(i) == 4]
    if node.op_type == "Transpose" and image_inputs:
        source = layouts.get(image_inputs[0])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
        if source is None:
            return None
        permuted = "".join(source[p] for p in perm)
        return permuted if permuted in LAYOUTS else None
    if node.op_type in PRESERVING_OPS and image_inputs:
        known = [layouts.get(i) for i in image_inputs if layouts.get(i)]
        if not known or any(k != known[0] for k in known):  # disagreeing inputs: a broadcast we cannot read
            return None
        return known[0]
    return None  # Reshape, Flatten, Squeeze/Unsqueeze, Einsum...: the axes mean something new


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """The static shape of every tensor, by ONNX shape inference (weights are not copied); {} where it fails."""
    inits = {t.name: t for t in model.graph.initializer}
    try:
        shapes = infer_shapes(model.graph.node, inits,
                              [i for i in model.graph.input if i.name not in inits], model.opset_import)
    except Exception:  # an op without a shape function (a custom domain): layers keep unknown layouts
        return {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name not in shapes and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                               for d in vi.type.tensor_type.shape.dim]
    return shapes


def tensor_ranks(model: onnx.ModelProto, shapes: dict | None = None) -> dict[str, int]:
    """The rank of every tensor (from tensor_shapes, or the `shapes` given)."""
    shapes = tensor_shapes(model) if shapes is None else shapes
    return {name: len(shape) for name, shape in shapes.items() if shape is not None}


def spatial_size(shape, layout: str | None) -> tuple | None:
    """(H, W) of a 4-D shape in a known layout with static sizes, else None."""
    if shape is None or len(shape) != 4 or layout not in LAYOUTS:
        return None
    grid = tuple(shape[2:4]) if layout == "NCHW" else tuple(shape[1:3])
    return grid if all(isinstance(d, int) for d in grid) else None  # symbolic sizes: no grid to read


def graph_layouts(model: onnx.ModelProto, input_name: str, input_layout: str) -> dict[str, str | None]:
    """tensor_layouts for a whole ModelProto."""
    return tensor_layouts(model.graph.node, input_name, input_layout, tensor_ranks(model))
