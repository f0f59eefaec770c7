"""`--layers auto` for an atlas: one layer per stage of the network, as the lesson picks VGG16's block1_conv1 to
block5_conv1: the first convolution at each new grid size, in graph order. A transformer keeps one grid after its
patch embedding: there the stages are its blocks, and up to four of them, spread over the depth (the last
included), give their MLP's activation (the units transformer studies call neurons)."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..model.tokens import token_grid
from ..techniques.cam_layer import spatial_size
from ..techniques.common import model_size

TOKEN_STAGES = 4


def stage_layers(model: Model) -> list[str]:
    """The first conv layer at each grid size the network reaches (a grid seen before is not a new stage), then a
    transformer's block activations."""
    shapes = model.shapes.complete(model_size(model))
    chosen, seen = [], set()
    for layer in model.layers:
        if layer.kind != "conv" or layer.layout not in ("NCHW", "NHWC"):
            continue
        grid = spatial_size(shapes.get(layer.tensor), layer.layout)
        if grid is None or grid[0] * grid[1] <= 1 or grid in seen:
            continue
        seen.add(grid)
        chosen.append(layer.name)
    neurons = [l.name for l in model.layers if l.kind == "activation" and l.layout == "tokens"
               and token_grid(model, l.tensor, shapes) is not None]
    if neurons:
        picks = np.unique(np.linspace(len(neurons) - 1, 0, TOKEN_STAGES).round().astype(int))
        chosen += [neurons[i] for i in picks]
    if not chosen:
        raise ConvlensError("The model has no convolution with a spatial grid; name the layers with --layers.")
    return chosen
