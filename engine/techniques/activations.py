"""Intermediate activations: every channel of chosen layers for one image (lesson technique 1)."""
from __future__ import annotations

import numpy as np

from ..model.model import Model
from ..runtime.program import program
from .cam_layer import grid_view
from .common import class_probabilities, model_size, prepare, to_nchw


def activations(model: Model, image, layers: list[str]) -> dict[str, np.ndarray]:
    """Layer name -> its output for the image(s), in the layer's own layout (N first)."""
    infos = [model.layer(name) for name in layers]
    pixels = prepare(model, image)
    prog = program(model, [l.tensor for l in infos], pixels.shape[1:3])
    values = prog.run(pixels)
    return {l.name: values[l.tensor] for l in infos}


def as_channels(model: Model, info, arr: np.ndarray) -> np.ndarray:
    """A layer's output as (N, C, h, w) for channel grids: 4-D by its layout, a token layer through its patch
    grid (transformers run at their own input size)."""

    if arr.ndim == 3:
        return grid_view(model, info, model.shapes.complete(model_size(model)))(arr)
    return to_nchw(arr, info.layout)


def predictions(model: Model, image, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-k (index, label, probability) per image, from the logits or the probabilities."""
    tensor = model.scores_tensor()
    pixels = prepare(model, image)
    return rank_predictions(model, tensor, program(model, [tensor], pixels.shape[1:3]).run(pixels)[tensor], top)


def rank_predictions(model: Model, tensor: str, values: np.ndarray, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-k (index, label, probability) per row of the model's logits (made probabilities here) or probabilities."""
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    if tensor == model.meta.logits:
        values = class_probabilities(model, values)
    out = []
    for row in values:
        idx = np.argsort(-row)[:top]
        out.append([(int(i), model.label(int(i)), float(row[i])) for i in idx])
    return out


__all__ = ["activations", "predictions", "model_size"]
