"""The one way the engine writes ONNX nodes: a GraphWriter collects nodes and constants under one naming scheme
and knows the opset's spelling of reductions (axes an attribute before opset 18, an input from 18; ReduceSum's
from 13). The objectives, the input adapter, the dense-scores head, the filter objective, the exported explainer
and every gradient rule (through the autodiff Emitter, which extends it) write through it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphWriter:
    """Nodes and constants for one piece of graph. Unnamed outputs are `<scope>_<tag><k>`; `out=` names one."""

    def __init__(self, opset: int = 17, scope: str = "w", tag: str = "n"):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: dict[str, onnx.TensorProto] = {}
        self.new_weights: dict[str, np.ndarray] = {}
        self._scope, self._tag, self._count = scope, tag, 0
        self._const_cache: dict = {}

    # --- naming -------------------------------------------------------------------------------
    def scope(self, name: str) -> None:
        self._scope, self._count = name, 0

    def fresh(self) -> str:
        self._count += 1
        return f"{self._scope}_{self._tag}{self._count}"

    # --- nodes --------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, out: str | None = None, domain: str | None = None, **attrs) -> str:
        """Append one node with one output and return the output's name."""
        name = out or self.fresh()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, domain=domain or None, **attrs))
        return name

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs) -> list[str]:
        outs = [self.fresh() for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs

    def copy_of(self, node: onnx.NodeProto, inputs: list[str], out: str) -> str:
        """The same op and attributes as `node`, on other inputs, with one output named `out`."""
        self.nodes.append(helper.make_node(node.op_type, inputs, [out], name=out, domain=node.domain or None))
        self.nodes[-1].attribute.extend(node.attribute)
        return out

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 1, out: str | None = None) -> str:
        """A reduction over constant axes, as an attribute or an input depending on the opset."""
        if op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18:
            return self.op(op_type, x, self.ints(axes), keepdims=keepdims, out=out)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims, out=out)

    # --- constants ----------------------------------------------------------------------------
    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        """A constant tensor (scalars and small arrays are shared; large ones become weights)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 and name is None else None
        if key is not None and key in self._const_cache:
            return self._const_cache[key]
        name = name or f"{self._scope}_{self._tag}c{self._count}_{len(self.new_inits) + len(self.new_weights)}"
        if arr.size > 1024 and arr.dtype == np.float32:
            self.new_weights[name] = np.ascontiguousarray(arr)
        else:
            self.new_inits[name] = numpy_helper.from_array(arr, name)
        if key is not None:
            self._const_cache[key] = name
        return name

    def ints(self, values, name: str | None = None) -> str:
        return self.const(np.asarray(values, np.int64), np.int64, name)
