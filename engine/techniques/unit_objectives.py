"""Feature-visualization objectives beyond a channel's mean, as Lucid and Lucent define them, written behind the
model as ONNX nodes on the layer's (N, C, H, W) view, maximized by the filters' ascent loops:

- neuron: one position of a channel, act[i, c, y, x] (the centre by default: row H // 2, column W // 2);
- direction: the cosine similarity of each position's channel vector with a direction d, averaged over the grid
  (torch's CosineSimilarity: x . d / max(|x| |d|, 1e-8));
- deepdream: the mean of the squared activations (Lucid's deepdream);
- diversity, added to any of them for a batch of N images of one unit: minus the weight times the sum over pairs
  i != j of the dot products of the images' Gram matrices (C x C over the grid) normalized to unit Frobenius
  norm, over N: Lucent's diversity term, so `objective - weight * similarity` is what the ascent maximizes.
The channel objective itself stays in filter_objective.py (and runtime/objectives.py).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConvlensError
from ..model.model import Model
from ..runtime.adapter import PIXELS
from ..runtime.objectives import OBJECTIVE, OBJECTIVE_ITEMS, OBJECTIVE_WEIGHTS, one_hot
from ..runtime.program import Extra, GradRequest, program
from ..writer import GraphWriter
from .gradients import objective_source
from .targets import Target

OBJECTIVES = ("channel", "neuron", "direction", "deepdream")
DIVERSITY_WEIGHT = 100.0  # Lucid's and Lucent's examples: channel(...) - 1e2 * diversity(...)


def objective_graph(tensor: str, layout: str, shape: list, kind: str, opset: int, position=None, direction=None,
                    diversity_weight: float = 0.0) -> Extra:
    """OBJECTIVE_ITEMS (N,) per image and OBJECTIVE (their sum, plus the diversity term when weighted)."""
    w = GraphWriter(opset, scope="unit_objective")
    act = w.op("Transpose", tensor, perm=[0, 3, 1, 2]) if layout.upper() == "NHWC" else tensor
    channels, height, width = (shape[3], shape[1], shape[2]) if layout.upper() == "NHWC" else shape[1:4]
    inputs = []
    if kind == "channel":  # the channel's mean, for a batch with diversity (filter_objective.py otherwise)
        means = w.op("Mul", w.reduce("ReduceMean", act, [2, 3], keepdims=0), OBJECTIVE_WEIGHTS)
        w.reduce("ReduceSum", means, [1], keepdims=0, out=OBJECTIVE_ITEMS)
        inputs = [helper.make_tensor_value_info(OBJECTIVE_WEIGHTS, TensorProto.FLOAT, ["N", channels])]
    elif kind == "neuron":
        y, x = position if position is not None else (height // 2, width // 2)
        if not (0 <= y < height and 0 <= x < width):
            raise ConvlensError(f"--position {y},{x} is outside the layer's {height}x{width} grid.")
        at = w.op("Slice", act, w.ints([y, x]), w.ints([y + 1, x + 1]), w.ints([2, 3]))
        picked = w.op("Mul", w.op("Flatten", at, axis=1), OBJECTIVE_WEIGHTS)
        w.reduce("ReduceSum", picked, [1], keepdims=0, out=OBJECTIVE_ITEMS)
        inputs = [helper.make_tensor_value_info(OBJECTIVE_WEIGHTS, TensorProto.FLOAT, ["N", channels])]
    elif kind == "direction":
        d = np.asarray(direction, np.float32).reshape(-1)
        if d.size != channels:
            raise ConvlensError(f"The direction has {d.size} values; the layer has {channels} channels.")
        name = "unit_objective_direction"
        w.new_inits[name] = numpy_helper.from_array(d.reshape(1, -1, 1, 1), name)
        dot = w.reduce("ReduceSum", w.op("Mul", act, name), [1], keepdims=0)
        length = w.op("Sqrt", w.reduce("ReduceSum", w.op("Mul", act, act), [1], keepdims=0))
        cosine = w.op("Div", dot, w.op("Max", w.op("Mul", length, w.const(float(np.linalg.norm(d)))),
                                       w.const(1e-8)))
        w.reduce("ReduceMean", cosine, [1, 2], keepdims=0, out=OBJECTIVE_ITEMS)
    elif kind == "deepdream":
        w.reduce("ReduceMean", w.op("Mul", act, act), [1, 2, 3], keepdims=0, out=OBJECTIVE_ITEMS)
    else:
        raise ConvlensError(f"Unknown objective {kind!r}; choose from {', '.join(OBJECTIVES)}.")
    total = w.reduce("ReduceSum", OBJECTIVE_ITEMS, [0], keepdims=0)
    if diversity_weight:
        flat = w.op("Reshape", act, w.ints([0, channels, -1]))
        grams = w.op("MatMul", flat, w.op("Transpose", flat, perm=[0, 2, 1]))  # (N, C, C)
        norms = w.op("Sqrt", w.reduce("ReduceSum", w.op("Mul", grams, grams), [1, 2], keepdims=1))
        unit = w.op("Div", grams, w.op("Max", norms, w.const(1e-12)))
        summed = w.reduce("ReduceSum", unit, [0], keepdims=0)  # sum over i != j of <g_i, g_j> = |sum g|^2 - sum |g|^2
        pairs = w.op("Sub", w.reduce("ReduceSum", w.op("Mul", summed, summed), [0, 1], keepdims=0),
                     w.reduce("ReduceSum", w.op("Mul", unit, unit), [0, 1, 2], keepdims=0))
        batch = w.op("Cast", w.op("Shape", act, start=0, end=1), to=TensorProto.FLOAT)
        similarity = w.op("Div", pairs, w.op("Squeeze", batch, w.ints([0])))
        total = w.op("Sub", total, w.op("Mul", similarity, w.const(float(diversity_weight))))
    w.op("Identity", total, out=OBJECTIVE)
    return Extra(nodes=w.nodes, inits=w.new_inits, inputs=inputs,
                 key=("unit", tensor, kind, tuple(position or ()), diversity_weight,
                      None if direction is None else np.asarray(direction, np.float32).tobytes()))


class UnitStep:
    """One gradient evaluation of an objective of OBJECTIVES for a batch: step(pixels, units) -> (the pixels'
    gradient of the total, each image's objective), as filter_objective.FilterStep for the channel mean."""

    def __init__(self, model: Model, layer: str, size, spec, kind: str, position=None, direction=None,
                 diversity_weight: float = 0.0):
        self.model, self.size, self.spec, self.kind = model, tuple(size), spec, kind
        tensor, layout, shape, self.channels = objective_source(model, Target(layer=layer), self.size, spec)
        if len(shape) != 4:
            raise ConvlensError(f"The {kind} objective needs a layer with a channel grid; {layer!r} is {shape}.")
        self.extra = objective_graph(tensor, layout, shape, kind, model.opset, position, direction,
                                     diversity_weight)

    def __call__(self, pixels: np.ndarray, units) -> tuple[np.ndarray, np.ndarray]:
        prog = program(self.model, [OBJECTIVE_ITEMS, OBJECTIVE], self.size, self.spec, self.extra,
                       GradRequest(OBJECTIVE, (PIXELS,)))
        feeds = {OBJECTIVE_WEIGHTS: one_hot(units, self.channels)} if self.kind in ("channel", "neuron") else {}
        out = prog.run(pixels.astype(np.float32), **feeds)
        self.total = float(out[OBJECTIVE])
        return out[prog.grads[PIXELS]], out[OBJECTIVE_ITEMS]
