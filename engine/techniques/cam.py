"""Class activation maps: Grad-CAM and its family, on any layer with a spatial output.

With one class per image (its top class or a named one), a gradient method is a single run: scores,
the layer's output A and d score / d A together, the top class picked inside the graph. With several
classes (topK), one forward pass gives the scores, A and the tensor the head starts from, and each class
then runs only the head (A -> class scores) forward and backward.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..runtime.objectives import OBJECTIVE_WEIGHTS, TOP_CLASS, one_hot
from ..runtime.program import program
from .activations import rank_predictions
from .attention_maps import attention_run
from .cam_layer import auto_cam_layer, auto_layer_and_rule, check_cam_layer, grid_view
from .cam_methods import CAM_METHODS
from .common import class_probabilities, prepare
from .filters import batch_size_for
from .gradients import gradient_program, on_path_source
from .targets import Target, class_targets, score_values, single_class


def _static(shape) -> bool:
    return bool(shape) and all(isinstance(d, int) for d in shape[1:])

METHODS = tuple(CAM_METHODS)


@dataclass
class CamResult:
    cam: np.ndarray  # (h, w) at the layer's resolution, in [0, 1]
    heatmap: np.ndarray  # (H, W) at the image's resolution, in [0, 1]
    class_index: int
    label: str
    score: float  # the class score the map explains (logit or probability)
    layer: str
    method: str
    zero: bool  # True when the map is zero everywhere (nothing to show, never divided by zero)
    layer_rule: str = "given by --layer"  # how the layer was chosen (cam_layer.py's rules)


def resolve_layer(model: Model, layer: str | None, size) -> str:
    """The user's layer (checked: a readable grid larger than 1x1), or the one `auto` picks (cam_layer.py)."""
    return resolve_layer_and_rule(model, layer, size)[0]


def resolve_layer_and_rule(model: Model, layer: str | None, size) -> tuple[str, str]:
    """(resolve_layer's layer, the rule that chose it)."""
    if layer in (None, "auto"):
        info, rule = auto_layer_and_rule(model, model.shapes.complete(size))
        return info.name, rule
    return check_cam_layer(model, layer, model.shapes.complete(size)).name, "given by --layer"


def auto_layer(model: Model, size):
    """The layer `--layer auto` picks at this image size (cam_layer.py)."""
    return auto_cam_layer(model, model.shapes.complete(size))


def cam_maps(acts: np.ndarray, grads: np.ndarray | None, method: str) -> np.ndarray:
    """Raw maps (N, h, w), before ReLU and normalization, from NCHW activations and gradients."""
    row = CAM_METHODS.get(method)
    if row is None or row.raw_map is None:
        raise ConvlensError(f"Unknown CAM method {method!r}; choose from {', '.join(METHODS)}.")
    return row.raw_map(acts.astype(np.float64), None if grads is None else grads.astype(np.float64))


def normalize(raw: np.ndarray) -> tuple[np.ndarray, bool]:
    """ReLU, then divide by the max; an all-zero map stays zero and is flagged."""
    m = np.maximum(raw, 0)
    peak = m.max()
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros_like(m, dtype=np.float32), True
    return (m / peak).astype(np.float32), False


def gradcam(model: Model, images, target="top", layer: str | None = "auto", method: str = "gradcam",
            score: str = "logit", **attention_options) -> list[list[CamResult]]:
    """CAM maps per image and per requested class; `images` is a path, an array or a list of them."""
    return gradcam_with_predictions(model, images, target, layer, method, score, top=0, **attention_options)[0]


def gradcam_with_predictions(model: Model, images, target="top", layer: str | None = "auto", method: str = "gradcam",
                             score: str = "logit", top: int = 5, head_fusion: str = "mean", discard: float = 0.0):
    """(gradcam()'s maps, each image's top-`top` (index, label, probability)), from the same runs: the
    prediction tensor is fetched beside the maps' tensors instead of costing a forward pass of its own.
    `head_fusion` and `discard` apply to rollout."""
    if method not in METHODS:
        raise ConvlensError(f"Unknown CAM method {method!r}; choose from {', '.join(METHODS)}.")
    pixels = prepare(model, images)
    size = pixels.shape[1:3]
    ranked = model.meta.logits or model.meta.probabilities
    extra = (ranked,) if (top and ranked) else ()
    run = CamRun(model, pixels, target, method, Target(score=score), extra, head_fusion, discard)
    scores, classes, maps, fetched, name, rule = CAM_KINDS[CAM_METHODS[method].kind].maps(run, layer)
    results: list[list[CamResult]] = [[] for _ in pixels]
    for i, (row, raws) in enumerate(zip(classes, maps)):
        for idx, raw in zip(row, raws):
            cam, zero = normalize(raw)
            heat = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            results[i].append(CamResult(cam, np.clip(heat, 0, 1), int(idx), model.label(int(idx)),
                                        float(scores[i, idx]), name, method, zero, rule))
    preds = rank_predictions(model, ranked, fetched[ranked], top) if extra else []
    return results, preds


@dataclass(frozen=True)
class CamRun:
    """One request: what every kind's map function reads."""
    model: Model
    pixels: np.ndarray
    target: object
    method: str
    tgt: Target
    extra: tuple  # tensors fetched beside the maps (the ranked scores, for top-5)
    head_fusion: str = "mean"
    discard: float = 0.0


@dataclass(frozen=True)
class CamKind:
    """How one kind of CAM method (cam_methods.py's `kind`) runs: `maps(run, layer)` gives (scores, classes per
    image, raw maps per image, fetched tensors, the layer's name, the rule that chose it)."""
    maps: object


def _gradient_maps(run: CamRun, layer):
    """One class per image: a single run (scores, A and dA together); several: per_class with the head's
    backward pass per class."""
    name, rule = resolve_layer_and_rule(run.model, layer, run.pixels.shape[1:3])
    info = run.model.layer(name)
    one = single_class(run.model, run.target)
    if one is not None:
        return (*_one_class_maps(run.model, run.pixels, info, run.tgt, one, run.method, run.extra), name, rule)
    return (*_per_class_maps(run, info, _head_gradient_maps), name, rule)


def _per_class_kind(class_maps):
    """A kind whose maps are formed class by class from the layer's activations (score, activation)."""
    def maps(run: CamRun, layer):
        name, rule = resolve_layer_and_rule(run.model, layer, run.pixels.shape[1:3])
        return (*_per_class_maps(run, run.model.layer(name), class_maps), name, rule)
    return maps


def _attention_maps(run: CamRun, layer):
    """Attention methods read every block of a transformer with a class token, one class per image."""
    if layer not in (None, "auto"):
        raise ConvlensError(f"--layer does not apply to {run.method}: it reads every attention block.")
    if single_class(run.model, run.target) is None:
        raise ConvlensError(f"{run.method} explains one class per image; use --class top, an index or a label.")
    scores, classes, raw, fetched = attention_run(
        run.model,
        run.pixels,
        run.model.shapes.complete(run.pixels.shape[1:3]),
        run.method,
        run.target,
        run.tgt.score,
        run.head_fusion,
        run.discard,
        run.extra,
    )
    return scores, classes[:, None], raw[:, None], fetched, "attention blocks", "every attention block"


def _one_class_maps(model: Model, pixels, info, tgt: Target, one, method: str, extra=()):
    """One class per image (its top class, or a named one): a single run gives the scores, the layer's
    activations and their gradient; the top class is picked inside the graph."""
    size = pixels.shape[1:3]
    score_tensor, _ = tgt.tensor(model)
    top = one == "top"
    fetch = tuple(dict.fromkeys((score_tensor, info.tensor, *extra) + ((TOP_CLASS,) if top else ())))
    prog, channels = gradient_program(model, tgt, size, wrt=(info.tensor,), fetch=fetch, top=top)
    if not top and not 0 <= one < channels:
        raise ConvlensError(f"Class {one} is out of range; the model has {channels} classes.")
    feeds = {} if top else {OBJECTIVE_WEIGHTS: one_hot([one] * len(pixels), channels)}
    out = prog.run(pixels, **feeds)
    classes = out[TOP_CLASS].astype(np.int64) if top else np.full(len(pixels), one)
    view = grid_view(model, info, model.shapes.complete(size))
    raw = cam_maps(view(out[info.tensor]), view(out[prog.grads[info.tensor]]), method)
    scores = score_values(model, out[score_tensor], score_tensor, tgt.score)
    return scores, classes[:, None], raw[:, None], out


@dataclass(frozen=True)
class _Forward:
    """What the per-class loop hands a kind's class_maps: the forward run and where the head starts."""
    run: CamRun
    info: object  # the layer's LayerInfo
    values: dict  # the forward run's tensors
    source: str  # the tensor the head (layer -> scores) starts from
    source_shape: list | None
    view: object  # the layer's values as NCHW grids


def _per_class_maps(run: CamRun, info, class_maps):
    """Any number of classes per image: one forward pass gives the scores (to pick classes), the layer's
    activations and the tensor the head starts from; then `class_maps(forward, items, classes, acts)` forms
    one rank of classes' maps (for a gradient method: the head's backward pass alone)."""
    model, pixels, size = run.model, run.pixels, run.pixels.shape[1:3]
    score_tensor, _ = run.tgt.tensor(model)
    source = on_path_source(model, info.tensor, score_tensor)
    fetch = list(dict.fromkeys([score_tensor, info.tensor, source, *run.extra]))
    values = program(model, fetch, size).run(pixels)
    scores = score_values(model, values[score_tensor], score_tensor, run.tgt.score)
    classes = class_targets(model, scores, run.target)
    forward = _Forward(run, info, values, source, model.shapes.static(size).get(source),
                       grid_view(model, info, model.shapes.complete(size)))
    maps: list[list[np.ndarray]] = [[] for _ in pixels]
    for k in range(max(len(c) for c in classes)):
        items = [i for i, c in enumerate(classes) if k < len(c)]
        idx = [classes[i][k] for i in items]
        raw = class_maps(forward, items, idx, forward.view(values[info.tensor][items]))
        for j, i in enumerate(items):
            maps[i].append(raw[j])
    return scores, classes, maps, values


def _head_gradient_maps(f: _Forward, items, idx, acts):
    """Gradient methods: the head's forward and backward from the source tensor (the whole model where the
    source's shape is not static), one class per image."""
    run, size = f.run, f.run.pixels.shape[1:3]
    start = ((f.source, f.source_shape),) if _static(f.source_shape) else ()
    prog, channels = gradient_program(run.model, run.tgt, size, wrt=(f.info.tensor,), fetch=(f.info.tensor,),
                                      start=start)
    feeds = {f.source: f.values[f.source][items]} if start else {}
    out = prog.run(run.pixels[items], **feeds, **{OBJECTIVE_WEIGHTS: one_hot(idx, channels)})
    return cam_maps(acts, f.view(out[prog.grads[f.info.tensor]]), run.method)


def _score_maps(f: _Forward, items, idx, acts):
    return score_cam(f.run.model, f.run.pixels[items], acts, idx, f.run.tgt.score)


def _activation_maps(f: _Forward, _items, _idx, acts):
    return cam_maps(acts, None, f.run.method)


# every kind of cam_methods.py is a row: a new kind is one row here, a new method one row there
CAM_KINDS = {"gradient": CamKind(_gradient_maps), "score": CamKind(_per_class_kind(_score_maps)),
             "activation": CamKind(_per_class_kind(_activation_maps)), "attention": CamKind(_attention_maps)}


def score_cam(
    model: Model, pixels: np.ndarray, acts: np.ndarray, idx, score: str, batch: int | None = None
) -> np.ndarray:
    """Score-CAM (Wang et al. 2020): weight each channel by the class probability of the image masked by it.

    Masked images run in batches sized from the model's activation memory."""

    size = pixels.shape[1:3]
    tensor = model.meta.logits or model.meta.probabilities
    batch = batch or batch_size_for(model, tensor, size)
    prog = program(model, [tensor], size)
    out = np.zeros(acts.shape[:1] + acts.shape[2:], np.float64)
    for n in range(len(pixels)):
        masks = np.stack([cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for a in acts[n]])
        lo = masks.reshape(len(masks), -1).min(axis=1)[:, None, None]
        hi = masks.reshape(len(masks), -1).max(axis=1)[:, None, None]
        masks = np.where(hi > lo, (masks - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
        base = prog.run(np.zeros_like(pixels[n:n + 1]))[tensor].reshape(1, -1)
        base_p = (class_probabilities(model, base) if tensor == model.meta.logits else base)[0, idx[n]]
        weights = np.empty(len(masks))
        for s in range(0, len(masks), batch):
            masked = pixels[n][None] * masks[s:s + batch, :, :, None]
            y = prog.run(masked.astype(np.float32))[tensor].reshape(len(masked), -1)
            p = class_probabilities(model, y) if tensor == model.meta.logits else y
            weights[s:s + batch] = p[:, idx[n]] - base_p
        out[n] = np.tensordot(weights, acts[n].astype(np.float64), axes=1)
    return out
