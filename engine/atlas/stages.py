"""`--layers auto` for an atlas: one layer per stage of the network, as the lesson picks VGG16's block1_conv1 to
block5_conv1: the first convolution at each new grid size, in graph order."""
from __future__ import annotations

from ..errors import ConvlensError
from ..model.model import Model
from ..techniques.cam_layer import spatial_size
from ..techniques.common import model_size


def stage_layers(model: Model) -> list[str]:
    """The first conv layer at each grid size the network reaches (a grid seen before is not a new stage)."""
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
    if not chosen:
        raise ConvlensError("The model has no convolution with a spatial grid; name the layers with --layers.")
    return chosen
