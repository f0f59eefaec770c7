"""Which layer of one model corresponds to which layer of another, for cross-framework comparison."""
from __future__ import annotations

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


def align(a: Model, b: Model) -> list[tuple[str, str]]:
    """(layer of a, layer of b) pairs in forward order: the VGG16 table, equal names, or pools by order."""
    if _is_vgg16(a) and _is_vgg16(b) and a.meta.source != b.meta.source:
        table = VGG16_PAIRS if a.meta.source == "keras" else [(t, k) for k, t in VGG16_PAIRS]
        names_a, names_b = {l.name for l in a.layers}, {l.name for l in b.layers}
        return [(x, y) for x, y in table if x in names_a and y in names_b]
    names_b = {l.name for l in b.layers}
    same = [(l.name, l.name) for l in a.layers if l.name in names_b]
    if same:
        return same
    pools_a = [l.name for l in a.layers if l.kind == "pool"]
    pools_b = [l.name for l in b.layers if l.kind == "pool"]
    return list(zip(pools_a, pools_b))
