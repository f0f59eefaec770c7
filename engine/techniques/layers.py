"""The layer table: name, kind, output shape (for one image at the model's size) and layout."""
from __future__ import annotations

from ..adapter import PIXELS
from ..graph import float_info, infer_shapes
from ..model import Model
from .common import model_size


def layer_shapes(model: Model, size: tuple[int, int] | None = None, spec=None) -> dict[str, list]:
    """Static shapes of every tensor for a batch of one image, from the adapter-fronted graph (`spec`: the
    input adapter to put in front, the model's own by default)."""
    from onnx import helper

    from ..adapter import adapter_nodes

    size = size or model_size(model)
    nodes, inits = adapter_nodes(spec or model.input_spec)
    weight_infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                    for n, a in model.weights.items()]
    return infer_shapes(nodes + model.nodes, {**model.small_inits, **inits},
                        [float_info(PIXELS, [1, size[0], size[1], 3])] + weight_infos, model.opset_imports)


def with_probed_shapes(model: Model, size: tuple[int, int], shapes: dict) -> dict:
    """`shapes` completed where static inference could not follow the sizes (a Pad whose pads are computed,
    as in ports of TensorFlow's "same" padding), by one forward run of the model at batch 1."""
    from ..adapter import adapter_nodes
    from ..program import probe_shapes, unknown_shapes

    unknown = unknown_shapes(model.nodes, shapes)
    if not unknown:
        return shapes
    nodes, inits = adapter_nodes(model.input_spec)
    probed = probe_shapes(nodes + model.nodes, {**model.small_inits, **inits}, model.weights, tuple(size), [],
                          model.opset_imports, unknown)
    return {**shapes, **{name: [1, *shape[1:]] for name, shape in probed.items()}}


def layer_table(model: Model) -> list[dict]:
    """Exposed layers, then a transformer's attention maps (read by `convlens attention --block K`), found in
    the graph: kind "attention", named attention.K."""
    from ..attention import attention_maps
    from .cam import grid_shapes

    shapes = layer_shapes(model)
    rows = [{"name": l.name, "kind": l.kind, "shape": shapes.get(l.tensor) or [], "layout": l.layout, "tensor": l.tensor}
            for l in model.layers]
    try:
        found = attention_maps(model, grid_shapes(model, model_size(model)))
    except Exception:  # a graph whose shapes cannot be completed still lists its layers
        found = []
    rows += [{"name": f"attention.{a.block}", "kind": "attention", "layout": "heads x T x T", "tensor": a.tensor,
              "shape": [1, a.heads, a.tokens, a.tokens]} for a in found]
    return rows
