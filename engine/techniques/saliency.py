"""Gradient attributions in pixel space: vanilla, SmoothGrad, Integrated Gradients, guided backprop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..autodiff.composites import COMPOSITES
from ..render.images import image_paths
from ..runtime.adapter import GRAY, PIXELS, per_channel_std_mean
from ..runtime.objectives import TOP_CLASS, one_hot
from ..runtime.program import program
from .cam import gradcam
from .common import channel_axis, parse_channels, prepare
from .gradients import gradient_program, run_gradient
from .targets import Target, class_targets, score_values, single_class


@dataclass
class Attribution:
    attribution: np.ndarray  # (H, W, 3) per-pixel, per-color attribution
    saliency: np.ndarray  # (H, W) in [0, 1]: max over colors of |attribution|, normalized
    class_index: int
    label: str
    method: str
    completeness_error: float | None = None  # Integrated Gradients: |sum(attr) - (F(x) - F(baseline))| / |F(x) - F(b)|;
    # relevance methods: |sum(attr) - score| / |score| (LRP without biases conserves the explained score exactly)
    relevance_sum: float | None = None  # relevance methods: the sum of the input relevance ...
    explained_score: float | None = None  # ... against the score it started from (Captum's convergence delta)
    # with a condition LAYER:CHANNELS: every channel's share of the layer's (unconditioned) relevance, largest
    # |share| first, as zennit-crp's ChannelConcept.attribute (sum over positions, over the sum of |sums|)
    concept_shares: list[tuple[int, float]] | None = None


def pixel_gradients(model: Model, pixels: np.ndarray, classes, score="logit", overrides=(), batch=16) -> np.ndarray:
    """d score[class_i] / d pixels for each item, in batches."""
    prog, channels = gradient_program(
        model, Target(score=score), pixels.shape[1:3], wrt=(PIXELS,), overrides=tuple(overrides)
    )
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


def input_relevance(model: Model, pixels: np.ndarray, classes, start, score="logit", overrides=(), params=(),
                    times_input=False, conditions=(), layers=()) -> np.ndarray | tuple[np.ndarray, dict]:
    """The relevance (or gradient) at the model's own input tensor, propagated from `start[i]` at class
    classes[i] through the rules `overrides` selects; with `times_input`, multiplied by that input (input x
    gradient); `conditions`: (tensor, channels, axis) where only those channels pass relevance on. Returned on
    the pixel grid (N, H, W, 3): see pixel_grid; with `layers` (tensors), also their relevance by tensor."""
    spec = model.input_spec
    prog, channels = gradient_program(model, Target(score=score), pixels.shape[1:3], wrt=(spec.name, *layers),
                                      fetch=(spec.name,) if times_input else (), overrides=tuple(overrides),
                                      params=tuple(params), conditions=tuple(conditions))
    weights = one_hot(classes, channels) * np.asarray(start, np.float32).reshape(-1, 1)
    res = run_gradient(prog, pixels, weights)
    r = res[prog.grads[spec.name]]
    if times_input:
        r = r * res[spec.name]
    if layers:
        return pixel_grid(r, spec), {t: res[prog.grads[t]] for t in layers}
    return pixel_grid(r, spec)


def pixel_grid(r: np.ndarray, spec) -> np.ndarray:
    """A per-element map of the model's input (its layout, color order, channels) on the RGB pixel grid
    (N, H, W, 3), sum kept: a gray model's map is shared among R, G, B by their luma weights."""
    if spec.layout.upper() == "NCHW":
        r = r.transpose(0, 2, 3, 1)
    if spec.channels == 1:
        return r * GRAY.reshape(1, 1, 1, 3)
    return r[..., ::-1] if spec.color.upper() == "BGR" else r


def zbox_bounds(spec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model input's per-channel range: pixels 0 and 255 through the preprocessing (ZBox's low and high)."""
    std, mean = per_channel_std_mean(spec)
    low, high = (0 * spec.scale - mean) / std, (255 * spec.scale - mean) / std
    return tuple(float(v) for v in low), tuple(float(v) for v in high)


def class_scores(model: Model, pixels: np.ndarray, score="logit") -> np.ndarray:
    tensor, _ = Target(score=score).tensor(model)
    return score_values(model, program(model, [tensor], pixels.shape[1:3]).run(pixels)[tensor], tensor, score)


@dataclass(frozen=True)
class _Context:
    model: Model
    score: str
    samples: int
    noise: float
    steps: int
    baseline: float
    rng: np.random.Generator
    epsilon: float = 1e-6
    gamma: float = 0.25
    condition: tuple | None = None  # (layer tensor, channels, channel axis)
    reference: object = "black"  # DeepLIFT's baseline: black, blur, mean, an image file or pixels (H, W, 3)
    references: object = 8  # DeepLIFT-SHAP's and GradientSHAP's baselines: N, a folder, or pixels (K, H, W, 3)
    seed: int = 0
    stdevs: float = 0.0  # GradientSHAP's input noise, in the model input's units (Captum's stdevs)


def _vanilla(ctx: _Context, x, c):
    return pixel_gradients(ctx.model, x[None], [c], ctx.score)[0], None


def _guided(ctx: _Context, x, c):
    return pixel_gradients(ctx.model, x[None], [c], ctx.score, overrides=("guided",))[0], None


def _guided_gradcam(ctx: _Context, x, c):
    cam = gradcam(ctx.model.placed(), x[None], c, score=ctx.score)[0][0].heatmap  # x is fitted already: no 2nd crop
    return _guided(ctx, x, c)[0] * cam[..., None], None


def _smoothgrad(ctx: _Context, x, c):
    sigma = ctx.noise * (x.max() - x.min())
    noisy = x[None] + ctx.rng.normal(0, sigma, (ctx.samples,) + x.shape).astype(np.float32)
    return pixel_gradients(ctx.model, noisy, [c] * ctx.samples, ctx.score).mean(axis=0), None


def _integrated_gradients(ctx: _Context, x, c):
    base = np.full_like(x, ctx.baseline)
    alphas = (np.arange(ctx.steps) + 0.5) / ctx.steps  # midpoint Riemann sum from the baseline
    path = base[None] + alphas[:, None, None, None] * (x - base)[None]
    grads = pixel_gradients(ctx.model, path.astype(np.float32), [c] * ctx.steps, ctx.score)
    attr = (x - base) * grads.mean(axis=0)
    ends = class_scores(ctx.model, np.stack([x, base]).astype(np.float32), ctx.score)[:, c]
    delta = float(ends[0] - ends[1])
    return attr, abs(float(attr.sum()) - delta) / max(abs(delta), 1e-12)


def _deconvnet(ctx: _Context, x, c):
    return pixel_gradients(ctx.model, x[None], [c], ctx.score, overrides=("deconvnet",))[0], None


def _conserved(ctx: _Context, x, c, overrides=(), times_input=False):
    """Relevance from the explained score down to the input; returns it with its sum and that score."""
    start = float(class_scores(ctx.model, x[None], ctx.score)[0, c])
    params = ()
    if overrides:
        low, high = zbox_bounds(ctx.model.input_spec)
        params = (("eps", ctx.epsilon), ("gamma", ctx.gamma), ("low", low), ("high", high))
    initial = [1.0 if times_input else start]
    shares = None
    if ctx.condition is not None:
        tensor, channels, axis = ctx.condition
        _, at_layer = input_relevance(ctx.model, x[None], [c], initial, ctx.score, overrides, params, times_input,
                                      layers=(tensor,))
        shares = concept_shares(at_layer[tensor][0], axis)
        r = input_relevance(ctx.model, x[None], [c], initial, ctx.score, overrides, params, times_input,
                            conditions=(ctx.condition,))[0]
    else:
        r = input_relevance(ctx.model, x[None], [c], initial, ctx.score, overrides, params, times_input)[0]
    return r, (float(r.sum()), start, shares)


def concept_shares(relevance: np.ndarray, axis: int) -> list[tuple[int, float]]:
    """Each channel's relevance summed over positions, over the sum of |those sums|; largest |share| first."""
    per_channel = np.moveaxis(relevance, axis - 1, 0).reshape(relevance.shape[axis - 1], -1).sum(axis=1)
    shares = per_channel / (np.abs(per_channel).sum() + 1e-10)
    order = np.argsort(-np.abs(shares), kind="stable")
    return [(int(k), float(shares[k])) for k in order]


def _input_x_gradient(ctx: _Context, x, c):
    return _conserved(ctx, x, c, times_input=True)


def _lrp(name: str):
    return lambda ctx, x, c: _conserved(ctx, x, c, (name,))


def reference_pixels(model: Model, x: np.ndarray, baseline) -> np.ndarray:
    """One baseline image at x's size: `black` (pixels 0), `mean` (the pixels the preprocessing maps to 0: the
    training set's mean color, Captum's default of zeros on the model's input), `blur` (x blurred, sigma a tenth
    of its side), an image file, or pixels."""
    h, w = x.shape[:2]
    if isinstance(baseline, np.ndarray):
        ref = baseline.astype(np.float32)
    elif baseline == "black":
        ref = np.zeros_like(x)
    elif baseline == "mean":
        spec = model.input_spec
        color = np.asarray(spec.mean, np.float64) / spec.scale
        color = color[::-1] if spec.color.upper() == "BGR" else color
        ref = np.broadcast_to(color.astype(np.float32), x.shape).copy()
    elif baseline == "blur":
        ref = cv2.GaussianBlur(x, (0, 0), max(h, w) / 10)
    else:
        ref = prepare(model, [baseline], (h, w))[0]
    if ref.shape != x.shape:
        raise ConvlensError(f"The baseline is {ref.shape[1]}x{ref.shape[0]} pixels, the image {w}x{h}; give one "
                            "of the image's size.")
    return ref


def reference_set(model: Model, x: np.ndarray, baselines, seed: int) -> np.ndarray:
    """Baselines (K, H, W, 3): N uniform-noise images drawn from the seed, the images of a folder, or pixels."""
    if isinstance(baselines, np.ndarray):
        refs = baselines.astype(np.float32).reshape((-1,) + x.shape)
    elif isinstance(baselines, (int, np.integer)) or str(baselines).isdigit():
        count = int(baselines)
        if count < 1:
            raise ConvlensError(f"--baselines must be a folder or a count of 1 or more, not {baselines}.")
        refs = np.random.default_rng(seed).uniform(0, 255, (count,) + x.shape).astype(np.float32)
    else:
        refs = prepare(model, [str(p) for p in image_paths([str(baselines)])], x.shape[:2])
    return refs


def _deeplift_multipliers(ctx: _Context, x, refs, c) -> np.ndarray:
    """The rescale rule's multipliers of each (x, reference) pair, in one run on the batch [x ... ; refs]."""
    if ctx.model.single_image:
        raise ConvlensError("DeepLIFT runs each image beside its baseline in one batch, but this file was exported "
                            "with a batch of 1 baked in; export the model with a dynamic batch axis.")
    pairs = np.concatenate([np.repeat(x[None], len(refs), axis=0), refs]).astype(np.float32)
    prog, channels = gradient_program(ctx.model, Target(score=ctx.score), x.shape[:2], wrt=(PIXELS,),
                                      overrides=("deeplift",))
    return run_gradient(prog, pairs, one_hot([c] * len(pairs), channels))[prog.grads[PIXELS]][:len(refs)]


def _difference_from(ctx: _Context, x, refs, c) -> float:
    scores = class_scores(ctx.model, np.concatenate([x[None], refs]).astype(np.float32), ctx.score)[:, c]
    return float(scores[0] - scores[1:].mean())


def _deeplift(ctx: _Context, x, c):
    refs = reference_pixels(ctx.model, x, ctx.reference)[None]
    attr = ((x - refs) * _deeplift_multipliers(ctx, x, refs, c)).mean(axis=0)
    return attr, (float(attr.sum()), _difference_from(ctx, x, refs, c), None)


def _deeplift_shap(ctx: _Context, x, c):
    refs = reference_set(ctx.model, x, ctx.references, ctx.seed)
    attr = ((x - refs) * _deeplift_multipliers(ctx, x, refs, c)).mean(axis=0)
    return attr, (float(attr.sum()), _difference_from(ctx, x, refs, c), None)


def gradient_shap_draws(model: Model, refs: np.ndarray, samples: int, seed: int, stdevs: float = 0.0):
    """GradientSHAP's draws: each sample's baseline (an index into refs), its point's place on the way to the image
    (alpha), and the image's noise in pixel units (None without stdevs). From numpy's RandomState(seed), baselines
    then points as Captum draws them from numpy's global state, so a run seeded alike matches Captum without
    noise; the noise (Captum draws it from torch's generator) comes last, sigma = stdevs in the model input's
    units, so stdev * std / scale per pixel channel."""
    rng = np.random.RandomState(seed)
    chosen = rng.choice(len(refs), samples)
    alphas = rng.uniform(0.0, 1.0, samples).astype(np.float32)
    if not stdevs:
        return chosen, alphas, None
    spec = model.input_spec
    std, _ = per_channel_std_mean(spec)
    sigma = np.broadcast_to(np.asarray(std, np.float64) / spec.scale, (spec.channels,)) * stdevs
    if spec.channels == 3 and spec.color.upper() == "BGR":
        sigma = sigma[::-1]
    draws = rng.standard_normal((samples, *refs.shape[1:3], spec.channels)) * sigma
    return chosen, alphas, np.broadcast_to(draws, (samples, *refs.shape[1:])).astype(np.float32)


def _gradient_shap(ctx: _Context, x, c):
    """Captum's GradientShap: per sample a baseline drawn from the set, the image with Gaussian noise (stdevs,
    none by default) and a point drawn uniformly on the segment from the baseline to it; the mean of (noisy image
    - baseline) times the gradient there."""
    refs = reference_set(ctx.model, x, ctx.references, ctx.seed)
    which, alphas, noise = gradient_shap_draws(ctx.model, refs, ctx.samples, ctx.seed, ctx.stdevs)
    chosen, noisy = refs[which], x[None] if noise is None else x[None] + noise
    points = (chosen + alphas.reshape(-1, 1, 1, 1) * (noisy - chosen)).astype(np.float32)
    attr = ((noisy - chosen) * pixel_gradients(ctx.model, points, [c] * ctx.samples, ctx.score)).mean(axis=0)
    return attr, (float(attr.sum()), _difference_from(ctx, x, chosen, c), None)


@dataclass(frozen=True)
class SaliencyMethod:
    name: str
    formula: str
    attribute: Callable  # (context, image, class) -> (attribution (H, W, 3), completeness error or None)
    plain_gradient: tuple[str, ...] | None = None  # rule overrides when the attribution is one gradient
    relevance: bool = False  # attributions that sum to (about) the explained score: the sum is reported
    conditional: bool = False  # --condition applies (relevance propagated through the rules, LRP and input x grad)


# the saliency family as one table: the CLI's choices, sanity and the docs read it; a method is one row
SALIENCY_METHODS: dict[str, SaliencyMethod] = {m.name: m for m in [
    SaliencyMethod("vanilla", "d score / d pixels (Simonyan et al. 2014)", _vanilla, ()),
    SaliencyMethod("smoothgrad", "mean of the gradients of noisy copies (Smilkov et al. 2017)", _smoothgrad),
    SaliencyMethod("integrated-gradients", "(x - baseline) * mean of the gradients along the straight path "
                   "(Sundararajan et al. 2017)", _integrated_gradients),
    SaliencyMethod("guided-backprop", "the gradient with ReLUs passing only positive gradients of positive inputs "
                   "(Springenberg et al. 2015)", _guided, ("guided",)),
    SaliencyMethod("guided-gradcam", "guided backprop times the Grad-CAM heatmap (Selvaraju et al. 2017)",
                   _guided_gradcam),
    SaliencyMethod("deconvnet", "the gradient with ReLUs passing the positive part of the signal going back "
                   "(Zeiler and Fergus 2014)", _deconvnet, ("deconvnet",)),
    SaliencyMethod("input-x-gradient", "the model's input times its gradient (Shrikumar et al. 2016)",
                   _input_x_gradient, relevance=True, conditional=True),
    SaliencyMethod("deeplift", "(x - baseline) times multipliers (y - y_ref) / (x - x_ref) through the "
                   "nonlinearities, the rescale rule (Shrikumar et al. 2017), as Captum's DeepLift",
                   _deeplift, relevance=True),
    SaliencyMethod("deeplift-shap", "DeepLIFT averaged over a set of baselines (Lundberg and Lee 2017), as "
                   "Captum's DeepLiftShap", _deeplift_shap, relevance=True),
    SaliencyMethod("gradient-shap", "(x - baseline) times the gradient at a random point between them, averaged "
                   "over random baselines of a set (Lundberg and Lee 2017), as Captum's GradientShap",
                   _gradient_shap, relevance=True),
]} | {name: SaliencyMethod(name, f"layer-wise relevance propagation, {c.reference}'s rules (Bach et al. 2015, "
                                 "Montavon et al. 2019)", _lrp(name), relevance=True, conditional=True)
      for name, c in COMPOSITES.items()}
METHODS = tuple(SALIENCY_METHODS)


def saliency(model: Model, images, target="top", method="vanilla", score="logit", samples: int = 25,
             noise: float = 0.15, steps: int = 32, baseline: float = 0.0, seed: int = 0, epsilon: float = 1e-6,
             gamma: float = 0.25, condition: str | None = None, reference="black",
             references=8, stdevs: float = 0.0) -> list[Attribution]:
    """One attribution per image for its target class (the top class by default); with 'topK', K per image, in
    image order and within an image by rank."""
    row = SALIENCY_METHODS.get(method)
    if row is None:
        raise ConvlensError(f"Unknown saliency method {method!r}; choose from {', '.join(METHODS)}.")
    if condition is not None and not row.conditional:
        relevance_methods = ", ".join(m for m, r in SALIENCY_METHODS.items() if r.conditional)
        raise ConvlensError(f"--condition applies to the relevance methods ({relevance_methods}), not to {method}.")
    pixels = prepare(model, images)
    conditioned = None if condition is None else parse_condition(model, condition, pixels.shape[1:3])
    direct = row.plain_gradient is not None and single_class(model, target) == "top"
    if direct:  # the top class and its gradient in one run, no forward pass beforehand
        top, direct_grads = top_class_gradients(model, pixels, score, row.plain_gradient)
        classes = [[c] for c in top]
    else:
        classes = class_targets(model, class_scores(model, pixels, score), target)
    ctx = _Context(model, score, samples, noise, steps, baseline, np.random.default_rng(seed), epsilon, gamma,
                   conditioned, reference, references, seed, stdevs)
    results = []
    for i, x in enumerate(pixels):
        for c in classes[i]:
            attr, err = (direct_grads[i], None) if direct else row.attribute(ctx, x, c)
            total = explained = shares = None
            if row.relevance:
                total, explained, shares = err
                err = abs(total - explained) / max(abs(explained), 1e-12)
            mag = np.abs(attr).max(axis=2)
            peak = mag.max()
            sal = (mag / peak).astype(np.float32) if peak > 0 else np.zeros_like(mag, np.float32)
            results.append(Attribution(attr.astype(np.float32), sal, int(c), model.label(int(c)), method, err, total,
                                       explained, shares))
    return results


def parse_condition(model: Model, text: str, size) -> tuple[str, tuple[int, ...], int]:
    """'LAYER:CHANNELS' (channels as --filters takes them) -> (the layer's tensor, channels, its channel axis)."""
    layer, sep, channels = str(text).rpartition(":")
    if not sep or not layer:
        raise ConvlensError(f"--condition must look like LAYER:CHANNELS (features.28:5,10), not {text!r}.")
    info = model.layer(layer)
    shape = model.shapes.of(info.tensor, size)
    axis = channel_axis(info.layout, len(shape)) if len(shape) == 4 else len(shape) - 1
    chosen = parse_channels(channels, int(shape[axis]), "--condition's channels")
    return info.tensor, tuple(chosen), axis
