"""Which layer of one model corresponds to which layer of another, for cross-framework comparison."""
from __future__ import annotations

from ..metadata import LayerInfo
from ..model.model import Model


def align(a: Model, b: Model, shapes_a: dict | None = None, shapes_b: dict | None = None) -> list[tuple[str, str]]:
    """(layer of a, layer of b) pairs in forward order: equal framework-neutral names, equal names, the graphs'
    structure (with the models' tensor shapes), or pools by order."""
    canonical_b = {l.canonical: l.name for l in b.layers if l.canonical}
    by_canonical = [(l.name, canonical_b[l.canonical]) for l in a.layers if l.canonical in canonical_b]
    if by_canonical:  # the converters named the layers of a known architecture (VGG16) alike
        return by_canonical
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
        source_op = (
            op_of.get(node.input[0], node.op_type) if node.op_type in _PASS_THROUGH and node.input else node.op_type
        )
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
