"""Which layer of one model corresponds to which layer of another, for cross-framework comparison."""
from __future__ import annotations

from .metadata import LayerInfo
from .model import Model

# Keras VGG16 layer -> torchvision vgg16 module with the same output (Keras convs include their ReLU)
_VGG16_CONVS = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2",
                "block3_conv3", "block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2",
                "block5_conv3"]
_VGG16_TORCH = [1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29]
VGG16_PAIRS = ([(k, f"features.{i}") for k, i in zip(_VGG16_CONVS, _VGG16_TORCH)]
               + [(f"block{b}_pool", f"features.{i}") for b, i in zip(range(1, 6), [4, 9, 16, 23, 30])]
               + [("fc1", "classifier.1"), ("fc2", "classifier.4")])


def _is_vgg16(model: Model) -> bool:
    return model.meta.source_name.lower().replace("torchvision.", "") == "vgg16"


def align(a: Model, b: Model, shapes_a: dict | None = None, shapes_b: dict | None = None) -> list[tuple[str, str]]:
    """(layer of a, layer of b) pairs in forward order: the VGG16 table, equal names, the graphs' structure
    (with the models' tensor shapes), or pools by order."""
    if _is_vgg16(a) and _is_vgg16(b) and a.meta.source != b.meta.source:
        table = VGG16_PAIRS if a.meta.source == "keras" else [(t, k) for k, t in VGG16_PAIRS]
        names_a, names_b = {l.name for l in a.layers}, {l.name for l in b.layers}
        return [(x, y) for x, y in table if x in names_a and y in names_b]
    names_b = {l.name for l in b.layers}
    same = [(l.name, l.name) for l in a.layers if l.name in names_b]
    if same:
        return same
    if shapes_a is not None and shapes_b is not None:
        pairs = structural_pairs(a, b, shapes_a, shapes_b)
        if pairs:
            return pairs
    pools_a = [l.name for l in a.layers if l.kind == "pool"]
    pools_b = [l.name for l in b.layers if l.kind == "pool"]
    return list(zip(pools_a, pools_b))


_CONVS = ("Conv", "ConvTranspose")
_PASS_THROUGH = ("Identity", "Transpose")  # exposures and relayouts: the value is the op's before them


def _stage_ends(model: Model, shapes: dict) -> dict[int, tuple[LayerInfo, str]]:
    """For each depth (convolutions and pools on the longest path from the input), the last exposed 4-D
    layer at that depth and the op that computes its value. Exporters differ in names, in folded batch norms
    and in which intermediate tensors they keep, but a block's output after its activation sits at the same
    depth, made by the same op, in any export of the same network."""
    depth: dict[str, int] = {}
    op_of: dict[str, str] = {}
    order: dict[str, int] = {}
    for k, node in enumerate(model.nodes):
        d = max([depth.get(i, 0) for i in node.input if i] or [0]) + (node.op_type in _CONVS or "Pool" in node.op_type)
        source_op = op_of.get(node.input[0], node.op_type) if node.op_type in _PASS_THROUGH and node.input else node.op_type
        for o in node.output:
            depth[o], op_of[o], order[o] = d, source_op, k
    ends: dict[int, tuple[int, LayerInfo, str]] = {}
    for layer in model.layers:
        t = layer.tensor
        if t in depth and len(shapes.get(t) or []) == 4 and layer.layout in ("NCHW", "NHWC"):
            if depth[t] not in ends or order[t] >= ends[depth[t]][0]:
                ends[depth[t]] = (order[t], layer, op_of[t])
    return {d: (layer, op) for d, (_, layer, op) in ends.items()}


def _nchw_shape(shape, layout: str) -> tuple:
    return tuple(shape) if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])


def structural_pairs(a: Model, b: Model, shapes_a: dict, shapes_b: dict) -> list[tuple[str, str]]:
    """Layers at the same depth, made by the same op, with the same shape (see _stage_ends)."""
    ends_a, ends_b = _stage_ends(a, shapes_a), _stage_ends(b, shapes_b)
    pairs = []
    for d in sorted(set(ends_a) & set(ends_b)):
        (la, op_a), (lb, op_b) = ends_a[d], ends_b[d]
        same_shape = _nchw_shape(shapes_a[la.tensor], la.layout) == _nchw_shape(shapes_b[lb.tensor], lb.layout)
        if op_a == op_b and same_shape:
            pairs.append((la.name, lb.name))
    return pairs
