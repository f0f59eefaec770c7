"""The layer table: name, kind, output shape (for one image at the model's size) and layout."""
from __future__ import annotations

from ..model.attention import attention_maps
from ..model.model import Model
from .common import model_size


def layer_table(model: Model) -> list[dict]:
    """Exposed layers, then a transformer's attention maps (read by `convlens attention --block K`), found in
    the graph: kind "attention", named attention.K."""

    shapes = model.shapes.static(model_size(model))
    rows = [
        {"name": l.name, "kind": l.kind, "shape": shapes.get(l.tensor) or [], "layout": l.layout, "tensor": l.tensor}
        for l in model.layers
    ]
    try:
        found = attention_maps(model, model.shapes.complete(model_size(model)))
    except Exception:  # a graph whose shapes cannot be completed still lists its layers
        found = []
    rows += [{"name": f"attention.{a.block}", "kind": "attention", "layout": "heads x T x T", "tensor": a.tensor,
              "shape": [1, a.heads, a.tokens, a.tokens]} for a in found]
    return rows
