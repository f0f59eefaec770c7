"""Pictures from arrays: channel grids, colormaps, overlays, PNG files."""
from __future__ import annotations

import math
import os

import cv2
import numpy as np

from ..model.onnx_file import write_atomic


def standardize_channel(channel: np.ndarray) -> np.ndarray:
    """The lesson's display mapping: standardize, x64, +128, clip to 0..255."""
    c = channel.astype(np.float64)
    c = (c - c.mean()) / (c.std() + 1e-5)
    return np.clip(c * 64 + 128, 0, 255).astype(np.uint8)


def channel_grid(chw: np.ndarray, per_row: int = 16, gap: int = 1) -> np.ndarray:
    """All channels of one (C, H, W) activation as one gray grid, `per_row` channels a row."""
    if chw.ndim == 1:  # dense layer: one row of values as a strip
        chw = chw[:, None, None]
    c, h, w = chw.shape
    rows = math.ceil(c / per_row)
    cols = min(c, per_row)
    grid = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap), np.uint8)
    for i in range(c):
        r, k = divmod(i, per_row)
        grid[r * (h + gap): r * (h + gap) + h, k * (w + gap): k * (w + gap) + w] = standardize_channel(chw[i])
    return grid


def colorize(gray: np.ndarray, colormap: int = cv2.COLORMAP_VIRIDIS) -> np.ndarray:
    """A uint8 gray image through an OpenCV colormap, returned as RGB."""
    return cv2.applyColorMap(gray, colormap)[..., ::-1]


def upscale(img: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour enlargement so that small grids stay visible."""
    factor = max(1, min_side // max(1, min(img.shape[:2])))
    if factor == 1:
        return img
    return cv2.resize(img, (img.shape[1] * factor, img.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


OVERLAY_STYLES = ("blend", "additive")
BLEND_ALPHA = 0.5  # blend: the colored map's share of each pixel (exported explainers draw with it too)
ADDITIVE_ALPHA = 0.4  # additive (the lesson's recipe): the colored map's weight added onto the image


def jet_colors(image_rgb: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heatmap (0..1) resized to the image (bilinear) through the JET colormap, as float RGB."""
    h, w = image_rgb.shape[:2]
    hm = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return colorize(np.uint8(np.clip(hm, 0, 1) * 255), cv2.COLORMAP_JET).astype(np.float32)


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray, style: str = "blend") -> np.ndarray:
    """The map over the photo. `blend` mixes colors and image half and half, so the map shows on any
    background (a white page included); `additive` is the lesson's recipe (map x 0.4 + image, clipped), which
    saturates bright backgrounds to white."""
    colored = jet_colors(image_rgb, heatmap)
    image = image_rgb.astype(np.float32)
    if style == "additive":
        return np.clip(colored * ADDITIVE_ALPHA + image, 0, 255).astype(np.uint8)
    if style != "blend":
        raise ValueError(f"overlay style must be one of {OVERLAY_STYLES}, not {style!r}")
    return np.clip(colored * BLEND_ALPHA + image * (1 - BLEND_ALPHA), 0, 255).astype(np.uint8)


def draw_box(image_rgb: np.ndarray, box, label: str) -> np.ndarray:
    """A detection's box (x1, y1, x2, y2 in the picture's pixels) and its label, drawn on a copy."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
    y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
    thick = max(1, round(max(h, w) / 300))
    cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), thick + 2)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 0), thick)
    _outlined_text(out, label, (x1 + 2, max(y1 - 4, 12)), max(0.35, max(h, w) / 1000), thick)
    return out


def _outlined_text(img: np.ndarray, text: str, origin, scale: float, thick: int) -> None:
    """Black text with a white outline, readable on any picture (drawn in place)."""
    cv2.putText(img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 2)
    cv2.putText(img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick)


def labelled_tiles(pictures: list[np.ndarray], labels: list[str], per_row: int = 4, side: int = 224,
                   gap: int = 4) -> np.ndarray:
    """Pictures of one shape as a grid of tiles (longer side `side`), each with its label in the corner."""
    h, w = pictures[0].shape[:2]
    scale = side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    rows, cols = math.ceil(len(pictures) / per_row), min(len(pictures), per_row)
    grid = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 255, np.uint8)
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        r, k = divmod(i, per_row)
        tile = cv2.resize(np.ascontiguousarray(picture, np.uint8), (tw, th), interpolation=cv2.INTER_AREA)
        _outlined_text(tile, label, (4, 16), 0.5, 1)
        grid[r * (th + gap): r * (th + gap) + th, k * (tw + gap): k * (tw + gap) + tw] = tile
    return grid


def encode_png(img: np.ndarray) -> bytes:
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike, img: np.ndarray, force: bool = False):
    return write_atomic(path, encode_png(img), force)


def write_npy(path: str | os.PathLike, arr: np.ndarray, force: bool = False):
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return write_atomic(path, buf.getvalue(), force)


def filter_grid(images: np.ndarray, per_row: int = 8, margin: int = 5) -> np.ndarray:
    """Filter images (N, H, W, 3) in a grid with black margins, as in the lesson."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / per_row)
    cols = min(n, per_row)
    grid = np.zeros((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, per_row)
        grid[r * (h + margin): r * (h + margin) + h, c * (w + margin): c * (w + margin) + w] = img
    return grid


def line_plot(values, labels=None, title: str = "", y_label: str = "", width: int = 640,
              height: int = 360) -> np.ndarray:
    """Values in [-1, 1] against their index on a white picture with axes: y ticks at -1, -0.5, 0, 0.5, 1 and
    `y_label`, the x ticks named by `labels` (written downwards), `title` on top."""
    font, gray, ink = cv2.FONT_HERSHEY_SIMPLEX, (150, 150, 150), (40, 40, 40)
    longest = max((len(t) for t in labels or []), default=0)
    left, right, top, bottom = 70, 20, 34, 16 + min(longest, 28) * 6
    img = np.full((height + bottom, width, 3), 255, np.uint8)
    n = max(len(values) - 1, 1)

    def point(i, v):
        return (left + int((width - left - right) * i / n),
                top + int((height - top - 10) * (1 - (np.clip(v, -1, 1) + 1) / 2)))

    for tick in (-1, -0.5, 0, 0.5, 1):
        y = point(0, tick)[1]
        cv2.line(img, (left, y), (width - right, y), (225, 225, 225) if tick else gray, 1)
        cv2.putText(img, f"{tick:g}", (left - 34, y + 4), font, 0.4, ink, 1)
    cv2.line(img, (left, top), (left, point(0, -1)[1]), gray, 1)
    for i in range(1, len(values)):
        cv2.line(img, point(i - 1, values[i - 1]), point(i, values[i]), (30, 90, 200), 2)
    for i, v in enumerate(values):
        cv2.circle(img, point(i, v), 4, (200, 60, 30), -1)
    if title:
        cv2.putText(img, title, (left, 20), font, 0.5, ink, 1)
    if y_label:  # written upwards beside the axis
        strip = np.full((20, height), 255, np.uint8)
        cv2.putText(strip, y_label[:60], (top, 14), font, 0.4, 40, 1)
        img[:height, 2:22] = np.rot90(strip)[:, :, None]
    for i, text in enumerate(labels or []):
        x = point(i, 0)[0]
        strip = np.full((14, bottom - 6), 255, np.uint8)
        cv2.putText(strip, text[:28], (2, 11), font, 0.35, 40, 1)
        column = np.rot90(strip, -1)  # read downwards from the axis
        x0 = min(max(x - 7, 0), width - 14)
        rows = slice(height - 4, height - 4 + column.shape[0])
        img[rows, x0:x0 + 14] = np.minimum(img[rows, x0:x0 + 14], column[:, :, None])
    return img


# attribution maps are dominated by a few pixels: as Captum's visualization does, the brightest 2 % saturate
DISPLAY_PERCENTILE = 98.0


def saliency_image(sal: np.ndarray) -> np.ndarray:
    """A saliency map as an RGB picture (inferno colormap), scaled so its 98th percentile is full brightness
    (scaled by the max, a map is nearly black); the arrays stay raw."""
    top = float(np.percentile(sal, DISPLAY_PERCENTILE)) if sal.size else 0.0
    scaled = sal / top if top > 0 else sal
    return cv2.applyColorMap(np.uint8(np.clip(scaled, 0, 1) * 255), cv2.COLORMAP_INFERNO)[..., ::-1]
