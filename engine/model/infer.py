"""Metadata for foreign .onnx files: layers read from the graph, input spec from its shape or flags."""
from __future__ import annotations

import re

import onnx

from ..metadata import InputSpec, LayerInfo, ModelMeta
from .layouts import tensor_layouts, tensor_ranks

KIND_BY_OP = {
    "Conv": "conv", "ConvTranspose": "conv",
    "Relu": "activation", "LeakyRelu": "activation", "PRelu": "activation", "Clip": "activation",
    "Sigmoid": "activation", "HardSigmoid": "activation", "HardSwish": "activation", "Tanh": "activation",
    "Elu": "activation", "Gelu": "activation", "Softplus": "activation", "Selu": "activation",
    "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool",
    "Gemm": "dense", "Softmax": "activation", "LayerNormalization": "norm",
    "Add": "merge",  # residual sums: a ResNet's or ConvNeXt's block output is an Add (or the ReLU after it)
}


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one real input of the graph (initializers listed as inputs are skipped)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    return inputs[0]


def input_dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


def guess_layout(dims: list) -> str:
    if len(dims) == 4 and dims[-1] in (1, 3) and dims[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def infer_meta(model: onnx.ModelProto, preprocess: str | None = None, layout: str | None = None,
               ranks: dict[str, int] | None = None) -> ModelMeta:
    """Read layers (conv, activation, pool, dense outputs) and the input spec from a graph without metadata.
    The class scores are left to scores.choose_scores, which Model.load runs next; `ranks` (tensor_ranks)
    may be given when the caller has them already."""
    inp = graph_input(model)
    dims = input_dims(inp)
    layout = (layout or guess_layout(dims)).upper()
    hw = dims[1:3] if layout == "NHWC" else dims[2:4]
    size = tuple(hw) if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) else None
    channels = dims[3] if layout == "NHWC" and len(dims) == 4 else dims[1] if len(dims) == 4 else 3
    spec = InputSpec.from_preset(inp.name, preprocess or "raw", size, layout, 1 if channels == 1 else 3)
    spec.stated = preprocess is not None  # raw RGB is an assumption until someone states the input
    ranks = tensor_ranks(model) if ranks is None else ranks
    layouts = tensor_layouts(model.graph.node, inp.name, layout, ranks)
    layers, counts, seen = [], {}, set()
    made = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        kind = KIND_BY_OP.get(node.op_type) or ("activation" if _is_silu(node, made) else None)
        if kind is None or not node.output:
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        name = _clean(node.name) or f"{node.op_type.lower()}_{counts[node.op_type]}"
        if name in seen:
            name = f"{name}_{counts[node.op_type]}"
        seen.add(name)
        rank = ranks.get(node.output[0])
        tensor_layout = (layouts.get(node.output[0]) or "unknown") if rank == 4 else "tokens" if rank == 3 else "flat"
        layers.append(LayerInfo(name=name, tensor=node.output[0], kind=kind, layout=tensor_layout))
    return ModelMeta(source="onnx", source_name=model.graph.name or "model", input=spec, layers=layers,
                     logits=None, probabilities=None, labels=None, inferred=True)


def _is_silu(node, made: dict) -> bool:
    """x * sigmoid(x): SiLU (swish) as exporters write it, the activation of EfficientNet's and YOLO's convs."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return False
    for x, gate in (node.input, node.input[::-1]):
        g = made.get(gate)
        if g is not None and g.op_type == "Sigmoid" and g.input[0] == x:
            return True
    return False


def _clean(name: str) -> str:
    """A node name as a layer name: torch.onnx's scopes "/layer4/layer4.1/relu/Relu" become "layer4.1.relu.Relu"
    (each scope repeats its parent's path), tf2onnx's "model/block/Relu" become "model.block.Relu"."""
    parts: list[str] = []
    for part in name.strip("/").split("/"):
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        elif part:
            parts.append(part)
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", ".".join(parts))


# ops that only move or relabel values: a head's Softmax may sit behind them (onnx's version converter writes
# Flatten -> Softmax -> Reshape for an opset-12 Softmax; Keras heads end in Identity)
SHAPE_ONLY_OPS = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Cast"}


def find_head_activation(nodes, output: str) -> tuple[str, str] | None:
    """(the op, the logits) where `output` is a Softmax or Sigmoid seen through shape-only ops; the logits are the
    activation's input, or, for onnx's version converter's Flatten -> Softmax -> Reshape (an opset-12 softmax of
    a tensor of another rank), the tensor before that Flatten, at the output's own shape."""
    producer = {o: n for n in nodes for o in n.output}
    node, reshaped = producer.get(output), False
    for _ in range(len(producer)):
        if node is None or node.op_type not in SHAPE_ONLY_OPS:
            break
        reshaped |= node.op_type == "Reshape"
        node = producer.get(node.input[0])
    if node is None or node.op_type not in ("Softmax", "Sigmoid"):
        return None
    before = producer.get(node.input[0])
    if reshaped and before is not None and before.op_type == "Flatten":
        return node.op_type, before.input[0]
    return node.op_type, node.input[0]


def find_softmax_logits(model: onnx.ModelProto, output: str) -> str | None:
    """The tensor feeding the Softmax that produces `output` (through shape-only ops), if there is one."""
    found = find_head_activation(model.graph.node, output)
    return found[1] if found and found[0] == "Softmax" else None
