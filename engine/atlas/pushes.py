"""Which classes each unit pushes up: for unit u of a layer and class c, the derivative of c's logit with respect
to a uniform shift of the unit's whole map (every position moved by the same amount, so the unit's mean moves by
it): the sum over positions of d logit_c / d A_u(p), averaged over a sample of the set's images (a transformer's
token layer: over its patch tokens, the class token left out as the atlas's maxima leave it out).

One backward run gives that for every unit of every chosen layer, but for one class; the classes are therefore
the ones the sampled images predict (each image's top `per_image`), not all of a 1000-class head: a unit's list
says which of the classes present in the set it pushes up most. Each image runs once per class in one batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.model import Model
from ..runtime.objectives import one_hot
from ..runtime.program import program
from ..techniques.cam_layer import grid_view
from ..techniques.common import prepare
from ..techniques.gradients import gradient_program, run_gradient
from ..techniques.targets import Target


@dataclass
class ClassPushes:
    classes: list[int]  # the classes measured (the sampled images' top predictions), ascending
    push: dict  # layer -> (units, classes) float64: the mean derivative described in the module docstring
    images: int  # how many images the mean is over


def class_pushes(model: Model, paths: list[str], units: dict, size, sample: int = 16,
                 per_image: int = 3) -> ClassPushes | None:
    """The pushes of `units` ({layer: unit indices}) over up to `sample` images spread evenly over `paths`; None
    for a model without class scores (a detector, a segmenter: nothing for a unit to push)."""
    if model.scores_refusal is not None or not (model.meta.logits or model.meta.probabilities):
        return None
    picked = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round().astype(int))]
    scores_tensor, _ = Target(score="logit").tensor(model)
    scores = program(model, [scores_tensor], size)
    pixels = [prepare(model, [p], size) for p in picked]
    tops = [np.argsort(-scores.run(x)[scores_tensor].reshape(-1))[:per_image] for x in pixels]
    classes = sorted({int(c) for row in tops for c in row})
    infos = [model.layer(name) for name in units]
    prog, channels = gradient_program(model, Target(score="logit"), size, wrt=tuple(i.tensor for i in infos))
    weights = one_hot(classes, channels)
    total = {info.name: np.zeros((len(units[info.name]), len(classes))) for info in infos}
    shapes = model.shapes.complete(size)
    views = {info.name: grid_view(model, info, shapes) for info in infos}  # token layers: their patch tokens
    for x in pixels:
        out = run_gradient(prog, np.repeat(x, len(classes), axis=0), weights)
        for info in infos:
            grad = views[info.name](out[prog.grads[info.tensor]])[:, units[info.name]]  # (classes, units, h, w)
            total[info.name] += grad.sum(axis=(2, 3)).T.astype(np.float64)
    return ClassPushes(classes, {name: t / len(pixels) for name, t in total.items()}, len(pixels))
