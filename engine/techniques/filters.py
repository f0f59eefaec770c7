"""Filter patterns by gradient ascent in input space (lesson technique 2), many filters per batch.

`chollet` is the lesson's loop exactly; `lucid` adds the parameterization and robustness that make
feature visualizations readable (Olah et al., "Feature Visualization", Distill 2017).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConvlensError, ConvlensWarning
from ..model.model import Model
from ..render.progress import Progress
from ..runtime.program import program
from .common import parse_channels
from .filter_objective import FilterStep
from .unit_objectives import DIVERSITY_WEIGHT, OBJECTIVES, UnitStep
from .lucid import lucid_ascent


@dataclass
class FilterResult:
    images: np.ndarray  # (N, H, W, 3) uint8, de-processed for display
    raw: np.ndarray  # (N, H, W, 3) float32, the optimized input
    objectives: np.ndarray  # (N,) final mean activation of each filter
    filters: list[int]
    dead: list[int]  # filters whose gradient was zero: their images are flat


def deprocess(x: np.ndarray) -> np.ndarray:
    """The lesson's display mapping: standardize, x0.1, +0.5, clip to [0, 1], x255."""
    x = x.astype(np.float64)
    x = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def parse_filters(text: str, channels: int) -> list[int]:
    """'all', '0-63', '0,5,9' or a mix, checked against the layer's channel count."""
    return parse_channels(text, channels, "--filters", "Filter")


def batch_size_for(model: Model, layer_tensor: str, size, budget_bytes: float = 2e9) -> int:
    """Items per batch so that forward + backward activations stay within the budget."""
    shapes = model.shapes.static(size)
    total = 0
    for name, shape in shapes.items():
        if shape and all(isinstance(d, int) for d in shape) and len(shape) == 4:
            total += int(np.prod(shape[1:])) * 4
        if name == layer_tensor:
            break
    per_item = max(total * 3, 1)  # forward values, gradients, workspace
    return int(max(1, min(64, budget_bytes // per_item)))




def own_size(model: Model) -> tuple[tuple[int, int], str] | None:
    """(the input size a transformer must run at, why: its position embeddings are learned for one patch grid);
    None for models that take other sizes."""
    if model.input_spec.size and any(l.layout == "tokens" for l in model.layers):
        return tuple(model.input_spec.size), "a transformer's position embeddings are learned for one patch grid"
    return None


def fixed_size_needed(model: Model, tensor: str, hw: tuple[int, int]) -> tuple[tuple[int, int], str] | None:
    """(the size a foreign graph declares, why) when the layer cannot be computed at `hw` (a reshape holds the
    declared size); None when it can, or the graph declares none. One forward run of the cut graph decides."""
    if model.fixed_size is None or tuple(hw) == model.fixed_size:
        return None
    try:
        program(model, [tensor], tuple(hw)).run(np.zeros((1, *hw, 3), np.float32))
    except ConvlensError:
        return model.fixed_size, f"the graph holds its input size: it does not run at {hw[0]}x{hw[1]}"
    return None


def visualize_filters(model: Model, layer: str, filters="0-7", recipe: str = "chollet", steps: int | None = None,
                      size: int | None = None, seed: int = 0, init: np.ndarray | None = None, step_size: float = 1.0,
                      batch: int | None = None, quiet: bool = True, selected: bool = True, objective: str = "channel",
                      position=None, direction=None, diversity: int = 1,
                      diversity_weight: float = DIVERSITY_WEIGHT) -> FilterResult:
    """Images that maximize the mean activation of each chosen filter of `layer`; or another objective of
    unit_objectives.py (neuron at `position`, direction, deepdream: the last two make one image, not one per
    filter), and with `diversity` N, N images per filter pushed apart by Lucid's diversity term.

    `selected=False` computes every channel of the layer instead of only the chosen one (same results to
    float rounding, slower; kept for checking the one-channel objective)."""
    if objective not in OBJECTIVES:
        raise ConvlensError(f"Unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}.")
    if diversity < 1:
        raise ConvlensError(f"--diversity must be 1 or more, not {diversity}.")
    if objective == "direction" and direction is None:
        raise ConvlensError("The direction objective needs a vector: give --direction FILE.npy.")
    info = model.layer(layer)
    if recipe not in ("chollet", "lucid"):
        raise ConvlensError(f"Unknown recipe {recipe!r}; use chollet or lucid.")
    if steps is not None and steps < 1:
        raise ConvlensError(f"--steps must be 1 or more, not {steps}.")
    if size is not None and size < 8:
        raise ConvlensError(f"--size must be 8 pixels or more, not {size}.")
    px = size or (150 if recipe == "chollet" else 224)
    hw = (px, px) if init is None else init.shape[:2]
    own = own_size(model) or (fixed_size_needed(model, info.tensor, hw) if init is None else None)
    if own is not None and (init is None or tuple(init.shape[:2]) != own[0]):
        (h, w), why = own
        if init is not None:
            raise ConvlensError(f"--init is {init.shape[0]}x{init.shape[1]}, but this model runs at {h}x{w} only "
                                f"({why}); give an image of that size.")
        if size is not None and (size, size) != (h, w):
            raise ConvlensError(f"--size {size} does not apply: this model runs at its own input size {h}x{w} "
                                f"({why}); leave --size out.")
        hw = (h, w)
    spec = model.input_spec.with_preset("raw") if recipe == "chollet" else model.input_spec
    if objective == "channel" and diversity == 1:
        step = FilterStep(model, info.name, hw, spec, selected=selected)
    else:  # diversity couples the images of one batch: then a batch is one filter's N images
        step = UnitStep(model, info.name, hw, spec, objective, position, direction,
                        diversity_weight if diversity > 1 else 0.0)
    channels = step.channels
    if objective in ("direction", "deepdream"):  # one objective for the whole layer, not one per filter
        chosen = [0]
    else:
        chosen = parse_filters(filters, channels) if not isinstance(filters, list) else filters
        if isinstance(filters, list):
            parse_filters(",".join(map(str, filters)), channels)
    if diversity > 1:
        groups = [[f] * diversity for f in chosen]
    else:
        batch = 1 if model.single_image else (batch or batch_size_for(model, info.tensor, hw))
        groups = [chosen[s:s + batch] for s in range(0, len(chosen), batch)]
    rng = np.random.default_rng(seed)
    raws, objs, alive = [], [], []
    with Progress(len(chosen), "filters", quiet) as progress:
        for part in groups:
            if recipe == "chollet":
                raw, obj, live = _chollet(step, part, hw, 40 if steps is None else steps, step_size, rng, init)
            else:
                raw, obj, live = lucid_ascent(step, part, hw, 512 if steps is None else steps, rng)
            raws.append(raw)
            alive.append(live)
            objs.append(obj)
            progress.advance(len(set(part)))
    labels = [f for part in groups for f in part]  # with diversity, each filter N times
    raw = np.concatenate(raws)
    obj = np.concatenate(objs)
    live = np.concatenate(alive)
    dead = [f for f, ok in zip(labels, live) if not ok]
    if recipe == "lucid":  # already a picture in 0..255
        images = np.clip(raw, 0, 255).astype(np.uint8)
    else:
        images = np.stack([deprocess(r) for r in raw])
    for k, ok in enumerate(live):  # a dead filter's image is flat gray, never NaN
        if not ok:
            images[k] = 128
    if dead:
        import warnings

        warnings.warn(
            f"{len(dead)} filter(s) of {info.name} had a zero gradient (dead): {dead[:10]}; their images are flat.",
            ConvlensWarning,
            stacklevel=2,
        )
    return FilterResult(images, raw, obj, labels, dead)


def _chollet(step, filters, hw, steps, step_size, rng, init):
    """The lesson's loop: start at gray + noise, 40 steps of RMS-normalized gradient ascent."""
    n = len(filters)
    if init is None:
        x = (rng.random((n, hw[0], hw[1], 3)) * 20 + 128).astype(np.float32)
    else:
        x = np.repeat(init[None].astype(np.float32), n, axis=0)
    obj = np.zeros(n, np.float32)
    live = np.zeros(n, bool)
    for _ in range(steps):
        g, obj = step(x, filters)
        rms = np.sqrt(np.mean(np.square(g, dtype=np.float32), axis=(1, 2, 3), keepdims=True))
        live |= rms.reshape(-1) > 0
        x = x + g / (rms + 1e-5) * step_size
    final = step(x, filters)[1]
    return x, (final if steps else obj), live
