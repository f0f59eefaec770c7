"""A small labelled image set with boxes, built from the photos scikit-image ships (no download).

Four photos whose ImageNet class is certain (a cat, an espresso, a tripod, a motorbike), each with a box
drawn by hand around the object in the original pixels; then each object cut out by its box and pasted,
at two sizes and places, onto three of scikit-image's textures (grass, gravel, brick), where the box is
known exactly. 4 photos + 24 composites = 28 images, written as PNG with images.csv (path,label) and
boxes.csv (path,class,x0,y0,x1,y1).

    python -m convlens.engine.evaluation.sample_set OUT/
    convlens evaluate lite0.onnx OUT/images.csv --boxes OUT/boxes.csv --metrics ... -o run/
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConvlensError
from ..model.onnx_file import output_folder

# name: (scikit-image loader, ImageNet class index, its label, the object's box x0, y0, x1, y1)
PHOTOS = {
    "cat": ("chelsea", 285, "Egyptian cat", (0, 0, 410, 300)),
    "espresso": ("coffee", 967, "espresso", (75, 15, 480, 390)),
    "tripod": ("camera", 872, "tripod", (228, 140, 410, 505)),
    "motorbike": ("stereo_motorcycle", 665, "moped", (95, 95, 690, 450)),
}
TEXTURES = ("grass", "gravel", "brick")
CANVAS = 448
# (object's longer side as a share of the canvas, top-left corner as shares of the free space)
PLACEMENTS = ((0.6, (0.1, 0.2)), (0.45, (0.9, 0.75)))


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ConvlensError("The sample set is built from scikit-image's photos: pip install scikit-image.") from None
    img = getattr(data, name)()
    if isinstance(img, tuple):  # stereo pairs: the left view
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def build(folder) -> tuple[Path, Path]:
    """Write the set into `folder`; returns (images.csv, boxes.csv)."""
    folder = output_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, boxes = [], []

    def save(name, img, cls, label, box):
        cv2.imwrite(str(folder / name), img[..., ::-1])
        images.append((name, cls))
        boxes.append((name, cls) + tuple(int(v) for v in box))

    for key, (loader, cls, label, box) in PHOTOS.items():
        photo = _photo(loader)
        save(f"{key}.png", photo, cls, label, box)
        x0, y0, x1, y1 = box
        cut = photo[y0:y1, x0:x1]
        for texture in TEXTURES:
            background = cv2.resize(_photo(texture), (CANVAS, CANVAS), interpolation=cv2.INTER_AREA)
            for p, (share, (fx, fy)) in enumerate(PLACEMENTS):
                scale = share * CANVAS / max(cut.shape[:2])
                w, h = round(cut.shape[1] * scale), round(cut.shape[0] * scale)
                left, top = round(fx * (CANVAS - w)), round(fy * (CANVAS - h))
                canvas = background.copy()
                canvas[top:top + h, left:left + w] = cv2.resize(cut, (w, h), interpolation=cv2.INTER_AREA)
                save(f"{key}_on_{texture}_{p}.png", canvas, cls, label, (left, top, left + w, top + h))
    with open(folder / "images.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + images)
    with open(folder / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "class", "x0", "y0", "x1", "y1")] + boxes)
    return folder / "images.csv", folder / "boxes.csv"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m convlens.engine.evaluation.sample_set OUT_FOLDER")
    try:
        listing, box_file = build(sys.argv[1])
    except ConvlensError as exc:  # one sentence, as the convlens commands say it
        sys.exit(f"error: {exc}")
    print(f"wrote {listing} and {box_file}")
