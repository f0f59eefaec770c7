"""Attention probabilities in a transformer's graph, found without model surgery.

In an ONNX graph attention is ordinary tensors: each block's scores Q K^T / sqrt(d) go through a Softmax
over the keys (the last axis), giving probabilities of shape (N, heads, T, T), or (N * heads, T, T) where
an exporter folds the heads into the batch. A Softmax on the path to the class scores whose last two axes
are equal is an attention map. It is global when T is the model's whole token sequence (ViT, DeiT); Swin's
and MaxViT's windows attend within 7x7 windows, so their T is the window's size and not the sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

from onnx import helper

from .tokens import TokenGrid, patch_grid, scores_path


@dataclass(frozen=True)
class Attention:
    tensor: str  # the Softmax output
    block: int  # 0-based, in graph order
    heads: int
    tokens: int  # T, the side of the T x T map
    folded: bool  # heads folded into the batch axis: (N * heads, T, T)


def attention_maps(model, shapes: dict) -> list[Attention]:
    """Every attention Softmax on the path to the scores, in block order."""
    found = []
    for node in scores_path(model):
        if node.op_type != "Softmax":
            continue
        shape = shapes.get(node.output[0])
        if not shape or len(shape) not in (3, 4) or not all(isinstance(d, int) for d in shape[-2:]):
            continue
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"),
                    -1 if model.opset >= 13 else 1)
        if axis % len(shape) != len(shape) - 1 or shape[-1] != shape[-2]:
            continue
        folded = len(shape) == 3
        heads = shape[0] if folded else shape[1]
        if not isinstance(heads, int):
            continue
        found.append(Attention(node.output[0], len(found), int(heads), int(shape[-1]), folded))
    return found


def global_attention(model, shapes: dict) -> tuple[list[Attention], TokenGrid | None]:
    """The attention maps over the whole token sequence and its TokenGrid; ([], None) when there are none
    (convnets, windowed transformers)."""
    grid = patch_grid(model, shapes)
    if grid is None:
        return [], None
    maps = [a for a in attention_maps(model, shapes) if 0 <= a.tokens - grid[0] * grid[1] < grid[0] * grid[1]]
    if not maps or len({a.tokens for a in maps}) != 1:
        return [], None
    return maps, TokenGrid(maps[0].tokens - grid[0] * grid[1], *grid)
