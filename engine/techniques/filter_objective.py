"""The filter objective computed only for the chosen channel of each item.

A filter's mean activation depends on one output channel of the layer's convolution. When the layer is
`Conv -> parameter-free activations` (VGG's block3_conv1 is Conv -> Relu), each batch item's channel is
computed on its own: the chosen filters' weights are gathered and applied as a grouped convolution with
the batch folded into channels (group = batch). The forward pass skips the other C-1 channels of that
convolution and its backward pass is 1/C of the full one (for VGG16 block3_conv1 at 150 px: 13% of a
gradient step's work).

Where the pattern is not there (batch norm left unfolded, grouped convolutions, layers that are not
convolutions) `filter_objective` returns None and the techniques use the general objective.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..model.model import Model
from ..runtime.adapter import PIXELS
from ..runtime.objectives import OBJECTIVE, OBJECTIVE_ITEMS, OBJECTIVE_WEIGHTS, one_hot
from ..runtime.program import Extra, GradRequest, program
from .gradients import gradient_program, objective_source
from .targets import Target
from ..writer import GraphWriter

FILTER_INDEX = "filter_index"
# activations applied channel by channel with no per-channel parameters: they commute with the selection
_POINTWISE = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish",
              "Softplus", "Identity", "Gelu"}


def _constant(model: Model, name: str) -> bool:
    return name in model.weights or name in model.small_inits


def _conv_chain(model: Model, tensor: str):
    """(conv node, pointwise nodes conv->tensor in order) when `tensor` is a 2-D convolution followed only by
    pointwise activations (and, for NHWC layer tensors, the exposing Transpose); otherwise None."""
    producer = {o: n for n in model.nodes for o in n.output if o}
    node = producer.get(tensor)
    if node is not None and node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if perm != [0, 2, 3, 1]:
            return None
        node = producer.get(node.input[0])
    chain = []
    while node is not None and node.op_type in _POINTWISE:
        if any(i and not _constant(model, i) for i in node.input[1:]):
            return None
        chain.append(node)
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Conv" or node.input[1] not in model.weights:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("group", 1) != 1 or model.weights[node.input[1]].ndim != 4:
        return None
    if len(node.input) > 2 and node.input[2] and not _constant(model, node.input[2]):
        return None
    return node, chain[::-1]


def filter_objective(model: Model, tensor: str, shapes: dict, batch: int) -> Extra | None:
    """Objective nodes computing, for item i, the mean of channel filter_index[i] of `tensor` from the
    convolution's input, or None when the layer does not have that shape."""
    found = _conv_chain(model, tensor)
    if found is None:
        return None
    conv, chain = found
    x_shape = shapes.get(conv.input[0])
    y_shape = shapes.get(conv.output[0])
    if not x_shape or not y_shape or any(not isinstance(d, int) for d in list(x_shape[1:]) + list(y_shape[1:])):
        return None
    _, cin, h, w_in = x_shape
    ho, wo = y_shape[2], y_shape[3]
    w = GraphWriter(model.opset, scope="filter_sel")
    x = w.op("Reshape", conv.input[0], w.ints([1, batch * cin, h, w_in]), out="filter_sel_x")
    conv_inputs = [x, w.op("Gather", conv.input[1], FILTER_INDEX, out="filter_sel_w", axis=0)]
    if len(conv.input) > 2 and conv.input[2]:
        conv_inputs.append(w.op("Gather", conv.input[2], FILTER_INDEX, out="filter_sel_b", axis=0))
    grouped = w.op("Conv", *conv_inputs, out="filter_sel_conv", group=batch)
    w.nodes[-1].attribute.extend(a for a in conv.attribute if a.name != "group")
    current = w.op("Reshape", grouped, w.ints([batch, 1, ho, wo]), out="filter_sel_y0")
    for k, node in enumerate(chain):  # the activation (and the like) after the conv, on the one channel
        current = w.copy_of(node, [current, *node.input[1:]], f"filter_sel_y{k + 1}")
    w.op("ReduceSum", w.reduce("ReduceMean", current, [1, 2, 3], keepdims=0, out=OBJECTIVE_ITEMS), out=OBJECTIVE,
         keepdims=0)
    index = helper.make_tensor_value_info(FILTER_INDEX, TensorProto.INT64, [batch])
    return Extra(nodes=w.nodes, inits=w.new_inits, inputs=[index], key=("filter", tensor, batch))


class FilterStep:
    """One gradient evaluation for a batch of filters: step(pixels, filters) -> (pixel gradient, objective
    per item). Uses the one-channel objective where the layer allows it (`selected`), else the general one."""

    def __init__(self, model: Model, layer: str, size, spec, selected: bool = True):
        self.model, self.size, self.spec = model, tuple(size), spec
        self.target = Target(layer=layer)
        self.tensor, _, _, self.channels = objective_source(model, self.target, self.size, spec)
        self.shapes = model.shapes.static(self.size, spec)
        self.selected = selected and _conv_chain(model, self.tensor) is not None
        self._general = None

    def _program(self, batch: int):
        if self.selected:
            extra = filter_objective(self.model, self.tensor, self.shapes, batch)
            if extra is not None:
                return program(self.model, [OBJECTIVE_ITEMS], self.size, self.spec, extra,
                               GradRequest(OBJECTIVE, (PIXELS,)))
            self.selected = False
        if self._general is None:
            self._general, _ = gradient_program(self.model, self.target, self.size, wrt=(PIXELS,), spec=self.spec)
        return self._general

    def __call__(self, pixels: np.ndarray, filters) -> tuple[np.ndarray, np.ndarray]:
        prog = self._program(len(filters))
        if self.selected:
            out = prog.run(pixels, **{FILTER_INDEX: np.asarray(filters, np.int64)})
        else:
            out = prog.run(pixels, **{OBJECTIVE_WEIGHTS: one_hot(filters, self.channels)})
        return out[prog.grads[PIXELS]], out[OBJECTIVE_ITEMS]
