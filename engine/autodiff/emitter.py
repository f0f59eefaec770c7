"""The Emitter: what a gradient rule may use to write backward nodes.

Rules never invent names: every node gets `<forward value>_bw<k>` names, and constants derived from
weights at build time (flipped kernels, transposed matrices) become new weights, folded once.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ConvlensError
from ..writer import GraphWriter
from .fold import fold_value


class Emitter(GraphWriter):
    """A GraphWriter over a forward graph: its shapes, weights and small constants, and (for values computed from
    shapes) its producers. `copy_weights`: rules may fold a weight into a transformed copy (a flipped kernel, a
    transposed matrix) for speed; a graph that must store each weight once (an exported explainer) transforms
    them in the graph instead."""

    def __init__(self, shapes: dict, weights: dict, inits: dict, opset: int = 17, producers: dict | None = None,
                 copy_weights: bool = True):
        super().__init__(opset, scope="bw", tag="bw")
        self.shapes = shapes
        self.weights = weights  # big constants, numpy
        self.inits = inits  # small constants, TensorProto
        self.producers = producers or {}  # forward tensor -> (position, node), for values computed from shapes
        self.copy_weights = copy_weights
        self.replaced: dict[int, onnx.NodeProto] = {}  # id(forward node) -> copy with extra outputs
        self._folded: dict = {}

    def value(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor: an initializer, or computed from constants and static shapes."""
        known = self._constant(name)
        if known is not None or not self.producers:
            return known
        if name not in self._folded:
            self._folded[name] = fold_value(name, self.producers, self._constant, self.shapes, self.opset)
        return self._folded[name]

    def _constant(self, name: str) -> np.ndarray | None:
        if name in self.weights:
            return self.weights[name]
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.new_inits:
            return numpy_helper.to_array(self.new_inits[name])
        return self.new_weights.get(name)

    def shape(self, name: str) -> list | None:
        if name in self.weights:
            return list(self.weights[name].shape)
        if name in self.inits:
            return list(self.inits[name].dims)
        if name in self.new_weights:
            return list(self.new_weights[name].shape)
        if name in self.new_inits:
            return list(self.new_inits[name].dims)
        return self.shapes.get(name)

    def static_shape(self, name: str, what: str) -> list[int]:
        """A shape with every dimension except the batch known; raises when shape inference failed."""
        shape = self.shape(name)
        if shape is None or any(not isinstance(d, int) for d in shape[1:]):
            raise ConvlensError(
                f"The gradient of {what} needs the static shape of {name!r}, which shape inference could not find."
            )
        return shape

    # --- the vocabulary rules share ------------------------------------------------------------
    def zero(self) -> str:
        """The scalar 0.0 (broadcasts against anything)."""
        return self.const(0.0)

    def zeros_like(self, x: str) -> str:
        """A zero tensor shaped like x, at run time (x's shape may be symbolic)."""
        return self.op("ConstantOfShape", self.op("Shape", x),
                       value=helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0]))

    def mask(self, cond: str, dy: str) -> str:
        """dy where cond holds, 0 elsewhere: dy * float(cond), which ONNX Runtime runs several times faster
        than Where with a broadcast zero (measured 5.8 ms against 44 ms on an 8x64x150x150 tensor, 2 threads)."""
        return self.op("Mul", dy, self.op("Cast", cond, to=onnx.TensorProto.FLOAT))

    def unbroadcast(self, g: str, in_shape, out_shape) -> str:
        """Sum g (shaped like the output) down to in_shape: leading axes, then axes where the input has 1."""
        if in_shape is None or out_shape is None:
            return g
        lead = len(out_shape) - len(in_shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(in_shape) if d == 1 and out_shape[lead + i] != 1]
        if not axes:
            return g
        g = self.op("ReduceSum", g, self.ints(axes), keepdims=1)
        return self.op("Squeeze", g, self.ints(list(range(lead)))) if lead else g

    def first_extreme(self, x: str, shape: list, axes: list, largest: bool = True) -> str:
        """A boolean tensor shaped like x, true at the first max (or min) of each group over `axes`, in
        row-major order: the axes are moved last and flattened, so one ArgMax/ArgMin picks the first."""
        kept = [a for a in range(len(shape)) if a not in axes]
        perm = kept + list(axes)
        group = int(np.prod([shape[a] for a in axes])) if axes else 1
        flat = self.op("Reshape", self.op("Transpose", x, perm=perm), self.ints([shape[a] for a in kept] + [group]))
        first = self.op("ArgMax" if largest else "ArgMin", flat, axis=-1, keepdims=1, select_last_index=0)
        hit = self.op("Equal", self.ints(list(range(group))), first)
        back = self.op("Reshape", hit, self.ints([shape[a] for a in perm]))
        return self.op("Transpose", back, perm=[perm.index(a) for a in range(len(shape))])

    def extra_output(self, node: onnx.NodeProto, index: int) -> str:
        """Make the forward node produce its optional output `index` (e.g. MaxPool indices)."""
        copy = self.replaced.get(id(node))
        if copy is None:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            self.replaced[id(node)] = copy
        while len(copy.output) <= index:
            copy.output.append("")
        if not copy.output[index]:
            copy.output[index] = f"{node.output[0]}_out{index}"
        return copy.output[index]


def attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out
