"""Reading images: any file OpenCV reads (8/16-bit, gray, RGBA) to RGB float32 pixels in 0..255."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ConvlensError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(path: str | os.PathLike) -> np.ndarray:
    """RGB float32 (H, W, 3) in 0..255; 16-bit is rescaled, gray is repeated, alpha is composited on white."""
    path = Path(path)
    if not path.exists():
        raise ConvlensError(f"Image file not found: {path}")
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if raw is None:
        raise ConvlensError(f"Cannot read {path} as an image (unsupported or corrupt file).")
    return to_rgb(raw, assume_bgr=True)


def to_rgb(raw: np.ndarray, assume_bgr: bool = False) -> np.ndarray:
    """Normalize an array from OpenCV or a user to RGB float32 in 0..255."""
    img = np.asarray(raw)
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 257.0
    elif img.dtype == np.uint8:
        img = img.astype(np.float32)
    else:
        img = img.astype(np.float32)
        if img.size and img.max() <= 1.0:
            img = img * 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ConvlensError(f"An image must be H x W with 1, 3 or 4 channels, not shape {tuple(raw.shape)}.")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[..., 3:4] / 255.0
        img = img[..., :3] * alpha + 255.0 * (1 - alpha)
    if assume_bgr:
        img = img[..., ::-1]
    return np.ascontiguousarray(img, dtype=np.float32)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width); area averaging when shrinking, bilinear when growing."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def image_paths(items: list[str]) -> list[Path]:
    """Files given directly, and the image files inside any folder given."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConvlensError(f"Folder {p} holds no image files.")
            out.extend(found)
        else:
            out.append(p)
    return out


SAMPLE_PATH = Path(__file__).parent / "data" / "chelsea.png"


def sample_image() -> np.ndarray:
    """The bundled sample photo (scikit-image's 'chelsea', a cat; public domain per skimage's notes)."""
    return load_image(SAMPLE_PATH)
