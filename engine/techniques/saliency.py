"""Gradient attributions in pixel space: vanilla, SmoothGrad, Integrated Gradients, guided backprop."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..adapter import PIXELS
from ..errors import ConvlensError
from ..model import Model
from ..objectives import TOP_CLASS, one_hot
from ..program import program
from .cam import _softmax, class_targets, gradcam, single_class
from .common import prepare
from .gradients import Target, gradient_program, run_gradient

METHODS = ("vanilla", "smoothgrad", "integrated-gradients", "guided-backprop", "guided-gradcam")


@dataclass
class Attribution:
    attribution: np.ndarray  # (H, W, 3) per-pixel, per-color attribution
    saliency: np.ndarray  # (H, W) in [0, 1]: max over colors of |attribution|, normalized
    class_index: int
    label: str
    method: str
    completeness_error: float | None = None  # Integrated Gradients: |sum(attr) - (F(x) - F(baseline))| / |F(x) - F(b)|


def pixel_gradients(model: Model, pixels: np.ndarray, classes, score="logit", overrides=(), batch=16) -> np.ndarray:
    """d score[class_i] / d pixels for each item, in batches."""
    prog, channels = gradient_program(model, Target(score=score), pixels.shape[1:3], wrt=(PIXELS,), overrides=tuple(overrides))
    out = np.empty(pixels.shape, np.float32)
    classes = np.asarray(classes)
    for s in range(0, len(pixels), batch):
        res = run_gradient(prog, pixels[s:s + batch], one_hot(classes[s:s + batch], channels))
        out[s:s + batch] = res[prog.grads[PIXELS]]
    return out


def top_class_gradients(model: Model, pixels: np.ndarray, score="logit", overrides=(), batch=16):
    """(each item's top class, d score[top] / d pixels): one run per batch, the class picked in the graph."""
    prog, _ = gradient_program(model, Target(score=score), pixels.shape[1:3], wrt=(PIXELS,), fetch=(TOP_CLASS,),
                               overrides=tuple(overrides), top=True)
    grads = np.empty(pixels.shape, np.float32)
    classes = np.empty(len(pixels), np.int64)
    for s in range(0, len(pixels), batch):
        res = prog.run(pixels[s:s + batch])
        grads[s:s + batch] = res[prog.grads[PIXELS]]
        classes[s:s + batch] = res[TOP_CLASS]
    return classes, grads


def class_scores(model: Model, pixels: np.ndarray, score="logit") -> np.ndarray:
    tensor, _ = Target(score=score).tensor(model)
    y = program(model, [tensor], pixels.shape[1:3]).run(pixels)[tensor].reshape(len(pixels), -1)
    return _softmax(y) if (score == "prob" and tensor == model.meta.logits) else y


def saliency(model: Model, images, target="top", method="vanilla", score="logit", samples: int = 25,
             noise: float = 0.15, steps: int = 32, baseline: float = 0.0, seed: int = 0) -> list[Attribution]:
    """One attribution per image for its target class (the top class by default)."""
    if method not in METHODS:
        raise ConvlensError(f"Unknown saliency method {method!r}; choose from {', '.join(METHODS)}.")
    pixels = prepare(model, images)
    direct = method in ("vanilla", "guided-backprop") and single_class(model, target) == "top"
    if direct:  # the top class and its gradient in one run, no forward pass beforehand
        classes, direct_grads = top_class_gradients(model, pixels, score, ("guided",) if method == "guided-backprop" else ())
    else:
        classes = [c[0] for c in class_targets(model, class_scores(model, pixels, score), target)]
    rng = np.random.default_rng(seed)
    results = []
    for i, x in enumerate(pixels):
        c = classes[i]
        err = None
        if direct:
            attr = direct_grads[i]
        elif method in ("vanilla",):
            attr = pixel_gradients(model, x[None], [c], score)[0]
        elif method == "guided-backprop":
            attr = pixel_gradients(model, x[None], [c], score, overrides=("guided",))[0]
        elif method == "guided-gradcam":
            guided = pixel_gradients(model, x[None], [c], score, overrides=("guided",))[0]
            cam = gradcam(model, x[None], c, score=score)[0][0].heatmap
            attr = guided * cam[..., None]
        elif method == "smoothgrad":  # Smilkov et al. 2017: average gradients of noisy copies
            sigma = noise * (x.max() - x.min())
            noisy = x[None] + rng.normal(0, sigma, (samples,) + x.shape).astype(np.float32)
            attr = pixel_gradients(model, noisy, [c] * samples, score).mean(axis=0)
        else:  # Integrated Gradients (Sundararajan et al. 2017), midpoint Riemann sum from the baseline
            base = np.full_like(x, baseline)
            alphas = (np.arange(steps) + 0.5) / steps
            path = base[None] + alphas[:, None, None, None] * (x - base)[None]
            grads = pixel_gradients(model, path.astype(np.float32), [c] * steps, score)
            attr = (x - base) * grads.mean(axis=0)
            ends = class_scores(model, np.stack([x, base]).astype(np.float32), score)[:, c]
            delta = float(ends[0] - ends[1])
            err = abs(float(attr.sum()) - delta) / max(abs(delta), 1e-12)
        mag = np.abs(attr).max(axis=2)
        peak = mag.max()
        sal = (mag / peak).astype(np.float32) if peak > 0 else np.zeros_like(mag, np.float32)
        results.append(Attribution(attr.astype(np.float32), sal, int(c), model.label(int(c)), method, err))
    return results


def saliency_image(sal: np.ndarray) -> np.ndarray:
    """A saliency map as an RGB picture (inferno colormap)."""
    return cv2.applyColorMap(np.uint8(np.clip(sal, 0, 1) * 255), cv2.COLORMAP_INFERNO)[..., ::-1]
