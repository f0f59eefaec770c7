"""Reading images: any file OpenCV reads (8/16-bit, gray, RGBA) to RGB float32 pixels in 0..255."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConvlensError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(path: str | os.PathLike) -> np.ndarray:
    """RGB float32 (H, W, 3) in 0..255, upright: EXIF orientation applied, CMYK and palettes converted,
    16-bit rescaled, gray repeated, alpha composited on white. Anything else gets one sentence."""
    path = Path(path)
    if not path.exists():
        raise ConvlensError(f"Image file not found: {path}")
    if path.is_dir():
        raise ConvlensError(f"{path} is a folder; give image files, or the folder among several images.")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ConvlensError(f"Cannot read {path} as an image: the file is empty (0 bytes).")
    if _truncated(data):
        raise ConvlensError(f"Cannot read {path} as an image: the file is truncated (its end is missing).")
    # IMREAD_COLOR applies EXIF orientation and converts CMYK, palette and gray; ANYDEPTH keeps 16 bits
    color = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if color is None:
        raise ConvlensError(f"Cannot read {path} as an image: not a format OpenCV decodes, or a corrupt file.")
    if not _is_jpeg(data):  # JPEG has no alpha; other formats may: composite it from the unchanged decode
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4 and raw.shape[:2] == color.shape[:2]:
            color = np.concatenate([color, raw[..., 3:4].astype(color.dtype)], axis=2)
    return to_rgb(color, assume_bgr=True)


def _is_jpeg(data: np.ndarray) -> bool:
    return data.size >= 3 and bytes(data[:3]) == b"\xff\xd8\xff"


def _truncated(data: np.ndarray) -> bool:
    """A JPEG without its end-of-image marker or a PNG without its IEND chunk: decoders fill the missing rows
    with gray and report success, which would explain a picture that is not the user's."""
    head = bytes(data[:8])
    if _is_jpeg(data):
        tail = bytes(data[-1024:])
        return b"\xff\xd9" not in tail
    if head == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in bytes(data[-64:])
    return False


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


@dataclass(frozen=True)
class Placement:
    """Where the model's input lies on the photo: input pixel = photo pixel * scale + offset, per axis (y, x).
    `box` is the part of the input the photo covers (y0, x0, y1, x1): the whole input unless letterboxed."""

    scale: tuple[float, float]
    offset: tuple[float, float]
    box: tuple[int, int, int, int]


def fit_image(img: np.ndarray, size: tuple[int, int], policy: str = "stretch", crop_fraction: float = 0.875,
              pad_value: float = 0.0) -> tuple[np.ndarray, Placement]:
    """The photo at the input's (height, width), and where it lies there. stretch: both sides resized;
    center-crop: the short side resized to its target / crop_fraction (torchvision's Resize(256) then
    CenterCrop(224)), then the center cut out; letterbox: resized to fit inside, centred, padded with pad_value."""
    h, w = size
    H, W = img.shape[:2]
    if policy == "stretch":
        return resize(img, (h, w)), Placement((h / H, w / W), (0.0, 0.0), (0, 0, h, w))
    if policy == "center-crop":
        s = max(min(h, w) / crop_fraction / min(H, W), h / H, w / W)
        nh, nw = max(h, round(H * s)), max(w, round(W * s))
        top, left = (nh - h) // 2, (nw - w) // 2
        out = resize(img, (nh, nw))[top:top + h, left:left + w]
        return out, Placement((nh / H, nw / W), (-top, -left), (0, 0, h, w))
    if policy == "letterbox":
        s = min(h / H, w / W)
        nh, nw = min(h, max(1, round(H * s))), min(w, max(1, round(W * s)))
        top, left = (h - nh) // 2, (w - nw) // 2
        out = np.full((h, w, 3), pad_value, np.float32)
        out[top:top + nh, left:left + nw] = resize(img, (nh, nw))
        return out, Placement((nh / H, nw / W), (top, left), (top, left, top + nh, left + nw))
    raise ConvlensError(f"Unknown resize policy {policy!r}; use stretch, center-crop or letterbox.")


def to_photo(
    heat: np.ndarray, photo_shape: tuple[int, int], input_size: tuple[int, int], place: Placement
) -> np.ndarray:
    """A map over the model's input (at any grid resolution) drawn on the photo: bilinear, half-pixel centres.
    Photo pixels the input never saw (outside a center crop) get 0; letterbox padding is cut away."""
    H, W = photo_shape
    gh, gw = heat.shape[:2]
    h, w = input_size
    if place.offset == (0.0, 0.0) and place.box == (0, 0, h, w) and place.scale == (h / H, w / W):  # stretch
        return cv2.resize(heat.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    # photo pixel x (centre x + 0.5) -> input coordinate (x + 0.5) * s + t -> map coordinate (input * g / size) - 0.5
    ky, kx = gh / h, gw / w
    matrix = np.array([[place.scale[1] * kx, 0, (0.5 * place.scale[1] + place.offset[1]) * kx - 0.5],
                       [0, place.scale[0] * ky, (0.5 * place.scale[0] + place.offset[0]) * ky - 0.5]], np.float64)
    out = cv2.warpAffine(heat.astype(np.float32), matrix, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    ys = (np.arange(H) + 0.5) * place.scale[0] + place.offset[0]
    xs = (np.arange(W) + 0.5) * place.scale[1] + place.offset[1]
    seen = ((ys >= 0) & (ys <= h))[:, None] & ((xs >= 0) & (xs <= w))[None, :]
    return np.where(seen, out, 0.0).astype(np.float32)


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


SAMPLE_PATH = Path(__file__).parent.parent / "data" / "chelsea.png"


def sample_image() -> np.ndarray:
    """The bundled sample photo (scikit-image's 'chelsea', a cat; public domain per skimage's notes)."""
    return load_image(SAMPLE_PATH)
