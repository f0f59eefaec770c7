"""The per-image metrics that need no model run of their own, and the names of all metrics.

- deletion / insertion AUC: the trapezoid rule over the curve's fractions (perturb.py makes the inputs).
- pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"): a hit when the
  map's maximum (the first in row-major order) lies within 15 pixels of a box of the explained class.
- energy-based pointing game (Wang et al. 2020, "Score-CAM"): the share of the map's total inside the union
  of the explained class's boxes.
  Both read the map upsampled bilinearly to the original image; a box (x0, y0, x1, y1) covers the pixels
  x0 <= x < x1, y0 <= y < y1 of the original image.
- average drop and increase in confidence (Chattopadhay et al. 2018, "Grad-CAM++"): with Y the explained
  class's probability on the image and O on the network input multiplied by the map, max(0, Y - O) / Y and
  1 if O > Y else 0 per image; their means over images (x 100) are the papers' percentages.
"""
from __future__ import annotations

import numpy as np

POINTING_TOLERANCE = 15  # pixels

# --metrics name -> the result columns it fills
METRICS = {
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
    "road": ("road_morf", "road_lerf", "road_combined"),
    "pointing": ("pointing_hit",),
    "energy-pointing": ("energy_pointing",),
    "confidence": ("average_drop", "increase_in_confidence"),
}
COLUMNS = tuple(c for cols in METRICS.values() for c in cols)
# the direction in which a column is better (for the report's reading aid)
HIGHER_IS_BETTER = {"deletion_auc": False, "insertion_auc": True, "road_morf": False, "road_lerf": True,
                    "road_combined": True, "pointing_hit": True, "energy_pointing": True, "average_drop": False,
                    "increase_in_confidence": True}


def auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule."""
    f, v = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    return float(np.sum((f[1:] - f[:-1]) * (v[1:] + v[:-1]) / 2))


def pointing_hit(heat: np.ndarray, boxes) -> float:
    """1.0 when the map's maximum is within POINTING_TOLERANCE pixels of a box, else 0.0; nan without boxes."""
    if not boxes:
        return float("nan")
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    for x0, y0, x1, y1 in boxes:
        dx = max(x0 - x, 0, x - (x1 - 1))
        dy = max(y0 - y, 0, y - (y1 - 1))
        if dx * dx + dy * dy <= POINTING_TOLERANCE ** 2:
            return 1.0
    return 0.0


def energy_pointing(heat: np.ndarray, boxes) -> float:
    """The share of the (non-negative) map inside the union of the boxes; nan without boxes or map."""
    total = float(np.sum(heat, dtype=np.float64))
    if not boxes or total <= 0:
        return float("nan")
    inside = np.zeros(heat.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)] = True
    return float(np.sum(heat[inside], dtype=np.float64) / total)


def confidence_change(clean: float, masked: float) -> tuple[float, float]:
    """(average drop, increase in confidence) of one image: max(0, Y - O) / Y and [O > Y]."""
    drop = max(0.0, clean - masked) / clean if clean > 0 else float("nan")
    return drop, float(masked > clean)
