"""Which layer a class activation map is computed at: the user's, checked, or `auto` by one rule.

The rule, for every convnet: the last tensor on the path to the scores whose spatial grid is larger than
1x1, taken after the activation or residual add that follows the last convolution and before any pooling.
It gives the layers practitioners pick by hand: VGG16's block5_conv3 (features.29), a ResNet's last block
output after its add and ReLU (layer4), ConvNeXt's last stage output (features.7), EfficientNet's top
activation.

Class-token transformers (ViT, DeiT) follow another rule: the output of the last block's first norm, the
layer users are told to pick by hand for them (pytorch-grad-cam's advice). After the last block the patch
tokens no longer reach the class token (only the class token is read by the head), so their gradients are
zero there and the convnet rule would give an empty map. Windowed transformers (Swin, MaxViT) keep spatial
layers and follow the convnet rule; their grid shrinks after the patch embedding (Swin's patch merging), so
the walk from the last convolution goes on through grid changes and through window partitions (tensors
without a readable grid) and stops only at pooling, giving Swin's final norm and MaxViT's last block.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ConvlensError
from ..graph import needed_nodes
from ..metadata import LayerInfo
from ..model.attention import global_attention
from ..model.layouts import spatial_size, tensor_layouts
from ..model.model import Model
from ..model.tokens import token_grid
from .common import to_nchw

AUTO_RULE = ("auto: the last layer on the path to the scores with a spatial grid larger than 1x1, after the "
             "activation or residual add that follows the last convolution, before any pooling; on a class-token "
             "transformer, the output of the last block's first norm")
CLASS_MAP_RULE = ("auto, class-map head: the model's last convolution makes one channel per class and is pooled "
                  "straight into the scores (or is the dense map explained: its map would be the prediction itself), "
                  "so the layer is the last one before that convolution, by the convnet rule")
CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
DENSE_OPS = ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum")


def check_cam_layer(model: Model, name: str, shapes: dict) -> LayerInfo:
    """The user's layer, refused in one sentence when a map there could not be a picture of the image."""
    info = model.layer(name)
    shape = shapes.get(info.tensor)
    if shape is not None and len(shape) == 3:
        tokens = token_grid(model, info.tensor, shapes)
        if tokens is None:
            raise ConvlensError(f"Layer {name!r} is a sequence {tuple(shape)} whose length is not the patch grid "
                                "plus a few class or register tokens; CAM needs a token layer of the image's patches.")
        return info
    if shape is None or len(shape) != 4:
        raise ConvlensError(f"Layer {name!r} has no spatial output (shape {shape}); CAM needs a 4-D layer or a "
                            "token layer.")
    grid = spatial_size(shape, info.layout)
    if grid is None:
        raise ConvlensError(f"Layer {name!r} is 4-D {tuple(shape)} but the graph does not say which axes are "
                            "height and width (it comes out of a reshape); pick a layer after a convolution.")
    if grid[0] * grid[1] <= 1:
        raise ConvlensError(f"Layer {name!r} has a {grid[0]}x{grid[1]} grid, so its map is one constant value; "
                            "pick a layer before the global pooling.")
    return info


def grid_view(model: Model, info: LayerInfo, shapes: dict) -> Callable[[np.ndarray], np.ndarray]:
    """How the layer's output becomes (N, C, h, w): a token layer through its patch grid, a 4-D one by layout."""
    tokens = token_grid(model, info.tensor, shapes)
    if tokens is not None:
        return tokens.to_nchw
    return lambda arr: to_nchw(arr, info.layout)


def auto_cam_layer(model: Model, shapes: dict) -> LayerInfo:
    """The layer the rule in this module's docstring picks."""
    return auto_layer_and_rule(model, shapes)[0]


def auto_layer_and_rule(model: Model, shapes: dict) -> tuple[LayerInfo, str]:
    """(the layer `auto` picks, the rule that picked it: AUTO_RULE or CLASS_MAP_RULE)."""
    chosen = _class_token_layer(model, shapes)
    if chosen is not None:
        return chosen, AUTO_RULE
    path = needed_nodes(model.nodes, [model.scores_tensor()])
    layer_of = {l.tensor: l for l in model.layers}
    ranks = {name: len(shape) for name, shape in shapes.items() if shape is not None}
    layout_of = tensor_layouts(model.nodes, model.input_spec.name, model.input_spec.layout, ranks)
    layout_of.update({l.tensor: l.layout for l in model.layers})

    height, width = model.input_spec.size or (None, None)

    def grid(tensor):
        g = spatial_size(shapes.get(tensor), layout_of.get(tensor))
        if g is None or height is None:
            return g
        # a layout guessed for a 4-D tensor that is not an image (MaxViT's (N, windows, tokens, C) partitions)
        # can give a "grid" no image could have: larger than the input. Its aspect ratio is no test: text
        # recognizers stride height 24x and width 2x
        return g if g[0] <= height and g[1] <= width else None

    return _walk_from_last_conv(model, path, grid, layer_of, shapes)


def _walk_from_last_conv(model: Model, path: list, grid, layer_of: dict, shapes: dict) -> tuple[LayerInfo, str]:
    """The convnet rule on `path` (nodes in graph order ending at the scores), `grid(tensor)` reading grids."""
    last_conv = None
    for k, node in enumerate(path):
        g = grid(node.output[0]) if node.op_type in CONV_OPS else None
        if g is not None and g[0] * g[1] > 1:
            last_conv = k
    if last_conv is None:
        raise ConvlensError("The model has no convolution with a spatial grid larger than 1x1 on the path to its "
                            "scores; name a layer with --layer.")
    if _makes_class_maps(model, path, last_conv, shapes) and any(n.op_type in CONV_OPS for n in path[:last_conv]):
        # step back: explain the features the class maps are made of
        return _walk_from_last_conv(model, path[:last_conv], grid, layer_of, shapes)[0], CLASS_MAP_RULE
    # a layer may expose a layout transpose of a tensor on the path rather than the tensor itself: tf2onnx
    # pools a Keras model's NCHW activation directly, leaving the NHWC layer output as a side branch
    beside = {
        n.input[0]: layer_of[n.output[0]]
        for n in model.nodes
        if n.op_type == "Transpose" and n.output[0] in layer_of and layer_of[n.output[0]].layout in ("NCHW", "NHWC")
    }
    conv_out = path[last_conv].output[0]
    chosen = layer_of.get(conv_out) or beside.get(conv_out)
    reached = {conv_out}
    for node in path[last_conv + 1:]:
        if not any(i in reached for i in node.input):
            continue
        out = node.output[0]
        g = grid(out)
        if "Pool" in node.op_type or (g is not None and g[0] * g[1] <= 1):
            continue  # pooling: the walk stops along this branch
        # a tensor without a readable grid (a window partition's reshape, as in MaxViT) passes the walk on:
        # the grid it comes back to is checked when it does; so does a new grid (Swin's patch merging)
        reached.add(out)
        if g is not None and out in layer_of and layer_of[out].layout in ("NCHW", "NHWC"):
            chosen = layer_of[out]
        elif out in beside and grid(beside[out].tensor) == g:
            chosen = beside[out]
    if chosen is None:
        raise ConvlensError("No exposed layer follows the model's last convolution before its pooling; "
                            "name a layer with --layer.")
    return chosen, AUTO_RULE


def _makes_class_maps(model: Model, path: list, last_conv: int, shapes: dict) -> bool:
    """Whether the last convolution makes one map per class that reaches the scores with no dense layer
    between (SqueezeNet's classifier, fully convolutional heads). A Conv's output is NCHW by definition."""
    shape = shapes.get(path[last_conv].output[0])
    channels = shape[1] if shape and len(shape) == 4 else None
    dense_map = model.target is not None and model.target.kind == "dense"  # a segmenter's or detector's map
    return bool(model.classes and (model.classes > 1 or dense_map) and channels == model.classes
                and not any(n.op_type in DENSE_OPS + CONV_OPS for n in path[last_conv + 1:]))


def _class_token_layer(model: Model, shapes: dict) -> LayerInfo | None:
    """The last block's first norm of a class-token transformer: the exposed norm layer nearest upstream of
    its last global attention map (the norm feeds the queries and keys); None for other models."""
    maps, tokens = global_attention(model, shapes)
    if not maps or tokens.prefix < 1:
        return None
    producer = {o: n for n in model.nodes for o in n.output}
    layer_of = {l.tensor: l for l in model.layers}
    frontier, seen = [maps[-1].tensor], set()
    while frontier:  # breadth first: the nearest norm wins
        nxt = []
        for tensor in frontier:
            info = layer_of.get(tensor)
            if info is not None and info.kind == "norm" and token_grid(model, tensor, shapes) == tokens:
                return info
            node = producer.get(tensor)
            for i in (node.input if node is not None else ()):
                if i and i not in seen:
                    seen.add(i)
                    nxt.append(i)
        frontier = nxt
    raise ConvlensError("The model is a class-token transformer but no exposed norm layer feeds its last attention "
                        "block; name a token layer with --layer.")
