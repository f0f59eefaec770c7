"""The filter figures in docs/: block1_conv1, block2_conv1 and block3_conv1 of VGG16, and three depths of
EfficientNet-Lite0.

    python benchmarks/filter_figures.py [-o docs]

No ImageNet VGG16 weights can be downloaded here, so the VGG16 figure uses seeded random weights (what it
shows is the recipe and the layout, not learned features); EfficientNet-Lite0 has its real ImageNet weights
(shipped by a package), so its figure shows learned features.
"""
import argparse
from pathlib import Path

import numpy as np


def labelled_rows(rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Stack grids under each other with a caption band above each."""
    import cv2

    width = max(g.shape[1] for _, g in rows)
    parts = []
    for caption, grid in rows:
        band = np.full((28, width, 3), 255, np.uint8)
        cv2.putText(band, caption, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        pad = np.full((grid.shape[0], width - grid.shape[1], 3), 255, np.uint8)
        parts += [band, np.concatenate([grid, pad], axis=1)]
    return np.concatenate(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default="docs")
    args = ap.parse_args()
    import keras
    import torch
    from common import scratch_dir

    import convlens.converters  # noqa: F401  (frameworks imported in a safe order)
    from convlens.converters.keras_converter import convert_keras_model
    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.render.pictures import filter_grid, write_png
    from convlens.engine.techniques.filters import visualize_filters

    out = Path(args.out)
    tmp = scratch_dir()
    keras.utils.set_random_seed(0)
    net = keras.applications.VGG16(weights=None, include_top=False)
    vgg = load(save_onnx(convert_keras_model(net, name="VGG16", preprocess="caffe"), tmp / "vgg16.onnx"))
    rows = []
    for layer in ("block1_conv1", "block2_conv1", "block3_conv1"):
        res = visualize_filters(vgg, layer, "0-7", "chollet", steps=40, seed=0)
        rows.append((f"VGG16 (random weights) {layer}, chollet, 40 steps", filter_grid(res.images)))
    write_png(out / "filters_vgg16_random.png", labelled_rows(rows), force=True)

    lite = load(save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), preprocess="tf"),
                          tmp / "lite0.onnx"))
    rows = []
    for layer in ("_blocks.1._depthwise_conv", "_blocks.5._expand_conv", "_blocks.12._expand_conv"):
        res = visualize_filters(lite, layer, "0-7", "lucid", steps=256, size=128, seed=0)
        rows.append((f"EfficientNet-Lite0 (ImageNet) {layer}, lucid, 256 steps", filter_grid(res.images)))
    write_png(out / "filters_lite0_depths.png", labelled_rows(rows), force=True)


if __name__ == "__main__":
    main()
