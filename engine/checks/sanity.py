"""Cascading model-parameter randomization (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

Weights are re-initialized from the top layer down, the map is recomputed after each step, and its
Spearman rank correlation with the original map is reported. A method that explains the model
should decorrelate; one that mostly reflects the image (the paper finds guided backprop does) stays similar.
"""
from __future__ import annotations

import copy

import numpy as np
from onnx import numpy_helper

from ..errors import ConvlensError
from ..model.model import Model
from ..render.progress import Progress
from ..techniques.activations import predictions
from ..techniques.cam import gradcam
from ..techniques.cam_methods import CAM_METHODS
from ..techniques.common import prepare
from ..techniques.saliency import saliency
from .tables import cell, markdown_table

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (ties get their mean rank)."""
    def ranks(x):
        x = x.ravel()
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def weighted_layers(model: Model) -> list[tuple[str, str]]:
    """(node name, weight tensor) of each layer with weights, in forward order."""
    out = []
    for node in model.nodes:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            w = node.input[1]
            if w in model.weights or w in model.small_inits:
                out.append((node.name or node.output[0], w))
    return out


def _randomized(model: Model, tensors: list[str], rng) -> Model:
    clone = copy.copy(model)
    clone.weights = dict(model.weights)
    clone.small_inits = dict(model.small_inits)
    clone.programs = {}
    for name in tensors:
        if name in clone.weights:
            w = clone.weights[name]
            clone.weights[name] = rng.normal(0, float(w.std()) or 0.01, w.shape).astype(w.dtype)
        else:
            w = numpy_helper.to_array(clone.small_inits[name])
            clone.small_inits[name] = numpy_helper.from_array(
                rng.normal(0, float(w.std()) or 0.01, w.shape).astype(w.dtype), name)
    return clone


def _map(model: Model, pixels, method: str, cls: int) -> np.ndarray:
    if method in CAM_METHODS:
        return gradcam(model, pixels, cls, "auto", method)[0][0].heatmap
    return saliency(model, pixels, cls, method, samples=8)[0].saliency


def cascading_randomization(model: Model, image, method: str = "gradcam", steps: int = 6, seed: int = 0,
                            quiet: bool = True) -> list[dict]:
    """Rows (layers randomized so far, correlation with the original map), starting from the original."""
    if steps < 1:
        raise ConvlensError(f"--steps must be 1 or more, not {steps}.")
    pixels = prepare(model, image)
    # the maps take these pixels as they are (placed(): no second center crop), the clones too
    cls = predictions(model.placed(), pixels)[0][0][0]
    original = _map(model.placed(), pixels, method, cls)
    layers = weighted_layers(model)[::-1]
    cuts = sorted(set(np.linspace(1, len(layers), min(steps, len(layers))).round().astype(int)))
    rng = np.random.default_rng(seed)
    rows = [{"randomized": 0, "top_layer": None, "spearman": 1.0}]
    with Progress(len(cuts), "randomization steps", quiet) as progress:
        for k in cuts:
            clone = _randomized(model, [w for _, w in layers[:k]], rng)
            rows.append({"randomized": int(k), "top_layer": layers[k - 1][0],
                         "spearman": spearman(original, _map(clone.placed(), pixels, method, cls))})
            progress.advance()
    return rows


def markdown(rows: list[dict]) -> str:
    return markdown_table(["layers randomized (top down)", "down to", "Spearman vs original"],
                          [[str(r["randomized"]), cell(r["top_layer"]), f"{r['spearman']:.3f}"] for r in rows])
