"""`convlens example-files DIR`: the files the README's Commands block names, made without a download, so that
every line there runs as written in an empty folder.

- cat.jpg (the bundled photo), more_images/ (the cat mirrored, and its face cropped), images.csv (the three);
- with torch: vgg16.pth, torchvision VGG16's seeded random weights (the ones `convert torch:vgg16 --weights none`
  builds, 528 MB), which `convert keras:VGG16 --weights vgg16.pth` transfers, so that `compare` and `verify`
  have a pair with the same weights; resnet.onnx, a plain torch.onnx export of a seeded ResNet-18 (a file
  another tool wrote, with no convlens metadata);
- with TensorFlow: model.keras, a small seeded Keras CNN saved by Keras.
What cannot be made (no torch, no TensorFlow) is listed, with the extra that makes it.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from convlens.engine.errors import ConvlensError
from convlens.engine.model.onnx_file import check_writable, write_atomic
from convlens.engine.render.images import sample_image

from .frameworks import keras_modules, seeded_torch
from .quiet import quiet_frameworks


def write_example_files(folder: str | os.PathLike, force: bool = False) -> tuple[list[Path], list[str]]:
    """(the files written, a sentence per file that could not be made and why)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConvlensError(f"{folder} is a file; give a folder for the example files.")
    cat = sample_image().astype(np.uint8)
    h, w = cat.shape[:2]
    photos = {"cat.jpg": cat, "more_images/cat_mirrored.jpg": cat[:, ::-1],
              "more_images/cat_face.jpg": cat[int(h * 0.15):int(h * 0.75), int(w * 0.3):int(w * 0.8)]}
    targets = [folder / name for name in [*photos, "images.csv", "vgg16.pth", "resnet.onnx", "model.keras"]]
    for path in targets:  # refuse before writing anything
        check_writable(path, force)
    written = []
    for name, picture in photos.items():
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(picture[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        written.append(write_atomic(folder / name, data.tobytes(), force))
    rows = "".join(f"{name},\n" for name in photos)
    written.append(write_atomic(folder / "images.csv", f"path,label\n{rows}".encode(), force))
    missing = []
    try:
        import torch  # noqa: F401
    except ImportError:
        missing.append("vgg16.pth and resnet.onnx need torch: pip install 'convlens[torch]'.")
    else:
        written += [_vgg16_weights(folder / "vgg16.pth"), _plain_resnet(folder / "resnet.onnx")]
    try:
        keras = keras_modules()[0]
    except ConvlensError:
        missing.append("model.keras needs TensorFlow: pip install 'convlens[keras]'.")
    else:
        written.append(_small_keras(keras, folder / "model.keras"))
    return written, missing


def _vgg16_weights(path: Path) -> Path:
    import torch

    from .torch_converter import torchvision_model

    torch.save(torchvision_model("vgg16", "none").state_dict(), path)  # seeded: --weights none's weights
    return path


def _plain_resnet(path: Path) -> Path:
    import torch
    import torchvision

    net = seeded_torch(lambda: torchvision.models.resnet18(weights=None)).eval()
    with quiet_frameworks(False):
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    return path


def _small_keras(keras, path: Path) -> Path:
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
                            keras.layers.MaxPooling2D(name="pool1"),
                            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
                            keras.layers.GlobalAveragePooling2D(name="pool"),
                            keras.layers.Dense(5, activation="softmax", name="predictions")])
    net.save(path)
    return path
