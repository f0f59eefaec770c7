"""summary.json: per method and metric the mean over images, a 95 % bootstrap interval, and n."""
from __future__ import annotations

import numpy as np

from .metrics import METRICS

BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean over resamples of the images (with replacement)."""
    if len(values) < 2:
        v = float(values[0]) if len(values) else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP_RESAMPLES, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def summarize(rows: list[dict], metrics, methods) -> dict:
    """{method: {column: {"mean", "ci95", "n"}}} over the rows' non-missing values."""
    out: dict = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry = {}
        for metric in metrics:
            for column in METRICS[metric]:
                values = np.array([r[column] for r in mine if r[column] is not None and np.isfinite(r[column])],
                                  np.float64)
                lo, hi = bootstrap_interval(values)
                entry[column] = {"mean": float(values.mean()) if len(values) else None,
                                 "ci95": [lo, hi] if len(values) else None, "n": int(len(values))}
        out[method] = entry
    return out


def mean_curves(curves) -> dict:
    """{metric: {method: (fractions, mean probabilities)}} over images, from the curves table (pyarrow)."""
    grouped = curves.group_by(["metric", "method", "fraction"]).aggregate([("probability", "mean")]).to_pylist()
    acc: dict = {}
    for r in sorted(grouped, key=lambda r: r["fraction"]):
        fractions, means = acc.setdefault(r["metric"], {}).setdefault(r["method"], ([], []))
        fractions.append(r["fraction"])
        means.append(r["probability_mean"])
    return acc
