"""Gradients of a class score or a channel's mean activation, w.r.t. pixels or a layer's output."""
from __future__ import annotations

import numpy as np

from ..autodiff.walker import on_path_source as walker_source
from ..metadata import InputSpec
from ..model.model import Model
from ..model.tokens import token_grid
from ..runtime.adapter import PIXELS
from ..runtime.objectives import (
    OBJECTIVE,
    OBJECTIVE_ITEMS,
    OBJECTIVE_WEIGHTS,
    channel_objective,
)
from ..runtime.program import GradRequest, program
from .targets import Target


def gradient_program(
    model: Model,
    target: Target,
    size,
    wrt: tuple[str, ...] = (PIXELS,),
    fetch=(),
    spec: InputSpec | None = None,
    overrides: tuple[str, ...] = (),
    start: tuple = (),
    top: bool = False,
    params: tuple = (),
    conditions: tuple = (),
):
    """The compiled program computing the objective, its gradient w.r.t. `wrt`, and `fetch` tensors
    (beginning at the `start` tensors, fed at run time, when given: see program()). With `top` the
    objective is each item's largest channel (its top class), chosen in the graph: no weights to feed."""
    spec = spec or model.input_spec
    tensor, layout, shape, channels = objective_source(model, target, size, spec)
    to_probability = (target.layer is None and target.score == "prob" and tensor == model.meta.logits
                      and model.meta.activation != "identity")  # an output target's score has no probability
    activation = ("Sigmoid" if model.meta.activation == "sigmoid" else "Softmax") if to_probability else None
    tokens = token_grid(model, tensor, model.shapes.static(size, spec)) if len(shape) == 3 else None
    extra = channel_objective(
        tensor,
        layout,
        len(shape),
        int(channels),
        activation=activation,
        opset=model.opset,
        top=top,
        token_prefix=None if tokens is None else tokens.prefix,
    )
    grad = GradRequest(OBJECTIVE, tuple(wrt), tuple(overrides), tuple(params), tuple(conditions))
    return program(model, [OBJECTIVE_ITEMS, *fetch], size, spec, extra, grad, start), int(channels)


def on_path_source(model: Model, tensor: str, objective: str) -> str:
    """The tensor through which `tensor`'s values reach `objective`: itself, or for a layer exposed as a
    relayout beside the main path (tf2onnx's NHWC layer outputs) the main-path tensor it is a view of."""

    return walker_source(tensor, model.nodes, objective, {})


def objective_source(model: Model, target: Target, size, spec: InputSpec) -> tuple[str, str, list, int]:
    """(tensor, layout, batch-1 shape, channel count) of the tensor the objective reads."""
    tensor, layout = target.tensor(model)
    shape = model.shapes.of(tensor, size, spec)  # probed where static inference gave up (dynamic reshapes)
    # channels: NCHW's axis 1, NHWC's axis 3, a token layer's (N, T, C) last axis
    channels = shape[3] if (len(shape) == 4 and layout.upper() == "NHWC") else shape[2] if len(shape) == 3 else shape[1]
    return tensor, layout, shape, int(channels)


def run_gradient(prog, pixels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    return prog.run(pixels, **{OBJECTIVE_WEIGHTS: weights.astype(np.float32)})
