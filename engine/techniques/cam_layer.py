"""Which layer a class activation map is computed at: the user's, checked, or `auto` by one rule.

The rule, for every convnet: the last tensor on the path to the scores whose spatial grid is larger than
1x1, taken after the activation or residual add that follows the last convolution and before any pooling.
It gives the layers practitioners pick by hand: VGG16's block5_conv3 (features.29), a ResNet's last block
output after its add and ReLU (layer4), ConvNeXt's last stage output (features.7), EfficientNet's top
activation.
"""
from __future__ import annotations

from ..errors import ConvlensError
from ..graph import needed_nodes
from ..layouts import spatial_size, tensor_layouts
from ..metadata import LayerInfo
from ..model import Model

AUTO_RULE = ("auto: the last layer on the path to the scores with a spatial grid larger than 1x1, after the "
             "activation or residual add that follows the last convolution, before any pooling")
CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")


def check_cam_layer(model: Model, name: str, shapes: dict) -> LayerInfo:
    """The user's layer, refused in one sentence when a map there could not be a picture of the image."""
    info = model.layer(name)
    shape = shapes.get(info.tensor)
    if shape is None or len(shape) != 4:
        raise ConvlensError(f"Layer {name!r} has no spatial output (shape {shape}); CAM needs a 4-D layer.")
    grid = spatial_size(shape, info.layout)
    if grid is None:
        raise ConvlensError(f"Layer {name!r} is 4-D {tuple(shape)} but the graph does not say which axes are "
                            "height and width (it comes out of a reshape); pick a layer after a convolution.")
    if grid[0] * grid[1] <= 1:
        raise ConvlensError(f"Layer {name!r} has a {grid[0]}x{grid[1]} grid, so its map is one constant value; "
                            "pick a layer before the global pooling.")
    return info


def auto_cam_layer(model: Model, shapes: dict) -> LayerInfo:
    """The layer the rule in this module's docstring picks."""
    scores = model.meta.logits or model.meta.probabilities or model.graph_outputs[0]
    path = needed_nodes(model.nodes, [scores])
    layer_of = {l.tensor: l for l in model.layers}
    ranks = {name: len(shape) for name, shape in shapes.items() if shape is not None}
    layout_of = tensor_layouts(model.nodes, model.input_spec.name, model.input_spec.layout, ranks)
    layout_of.update({l.tensor: l.layout for l in model.layers})

    def grid(tensor):
        return spatial_size(shapes.get(tensor), layout_of.get(tensor))

    last_conv = None
    for k, node in enumerate(path):
        g = grid(node.output[0]) if node.op_type in CONV_OPS else None
        if g is not None and g[0] * g[1] > 1:
            last_conv = k
    if last_conv is None:
        raise ConvlensError("The model has no convolution with a spatial grid larger than 1x1 on the path to its "
                            "scores; name a layer with --layer.")
    conv_out = path[last_conv].output[0]
    target_grid = grid(conv_out)
    chosen = layer_of.get(conv_out)
    reached = {conv_out}
    for node in path[last_conv + 1:]:
        if not any(i in reached for i in node.input):
            continue
        out = node.output[0]
        if "Pool" in node.op_type or grid(out) != target_grid:
            continue  # pooling, flattening or a new grid: the walk stops along this branch
        reached.add(out)
        if out in layer_of and layer_of[out].layout in ("NCHW", "NHWC"):
            chosen = layer_of[out]
    if chosen is None:
        raise ConvlensError("No exposed layer follows the model's last convolution before its pooling; "
                            "name a layer with --layer.")
    return chosen
