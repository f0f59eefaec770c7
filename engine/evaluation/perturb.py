"""Deletion and insertion (Petsiuk et al. 2018, RISE): the perturbed network inputs of one image.

Pixels are ranked by the heatmap at the network's input size, most relevant first, ties by pixel index.
Step k of `steps` removes (deletion) or puts back (insertion) the first round(k / steps * H * W) of them.
Deletion sets removed pixels to 0 in the network's input (after preprocessing); insertion starts from the
network input blurred with a Gaussian (kernel 11 x 11, sigma 5, borders reflected without repeating the edge
pixel) and puts the original values back.
"""
from __future__ import annotations

import cv2
import numpy as np

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


def blurred(x: np.ndarray) -> np.ndarray:
    """The insertion curve's start: `x` (H, W, C) blurred per channel."""
    return cv2.GaussianBlur(x, (BLUR_KERNEL, BLUR_KERNEL), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def pixel_ranks(heat: np.ndarray) -> np.ndarray:
    """Each pixel's rank (0 = most relevant) by the map, ties broken by pixel index; shape (H, W)."""
    order = np.argsort(-heat.astype(np.float64).ravel(), kind="stable")
    ranks = np.empty(order.size, np.int64)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(heat.shape)


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """Pixels changed at each of the steps + 1 points: round(k * pixels / steps), halves rounded up."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * pixels + steps) // (2 * steps)


def curve_inputs(x: np.ndarray, ranks: np.ndarray, counts, start: np.ndarray | None) -> np.ndarray:
    """The inputs at the given counts: x with the first `count` ranked pixels taken from `start`
    (deletion: start None, pixels set to 0) or x itself put back into `start` (insertion)."""
    out = np.empty((len(counts),) + x.shape, x.dtype)
    for i, count in enumerate(counts):
        changed = (ranks < count)[..., None]
        out[i] = np.where(changed, x, start) if start is not None else np.where(changed, 0, x)
    return out
