"""The one place that knows tensor shapes: static inference, completed by a forward run where static inference
cannot follow the sizes (computed pads, dynamic reshapes). Each model owns a ShapeService (`model.shapes`) that
caches per image size and input adapter; the program builders use the graph-level functions below."""
from __future__ import annotations

import weakref

import numpy as np
from onnx import TensorProto, helper

from ..graph import elem_types, float_info, infer_shapes
from .adapter import PIXELS, adapter_nodes
from .session import external_placeholder


class ShapeService:
    """Batch-1 shapes of every tensor of one model, fronted by an input adapter, for a given image size.
    `static` is shape inference alone; `complete` fills in what it missed by one forward run."""

    def __init__(self, model):
        # a weak reference: the model owns this service, and a cycle would keep every model's weights alive
        # until Python's cyclic garbage collector happens to run
        self._model = weakref.ref(model)
        self._cache: dict = {}

    @property
    def model(self):
        return self._model()

    def static(self, size, spec=None) -> dict:
        spec = spec or self.model.input_spec
        key = ("static", tuple(size), spec.layout, spec.channels)
        if key not in self._cache:
            self._cache[key] = self._infer(tuple(size), spec)
        return self._cache[key]

    def complete(self, size, spec=None) -> dict:
        spec = spec or self.model.input_spec
        key = ("complete", tuple(size), spec.layout, spec.channels)
        if key not in self._cache:
            shapes = self.static(size, spec)
            unknown = unknown_shapes(self.model.nodes, shapes)
            self._cache[key] = {**shapes, **self._probe(tuple(size), spec, unknown)} if unknown else shapes
        return self._cache[key]

    def of(self, tensor: str, size, spec=None) -> list:
        """One tensor's batch-1 shape: static where inference found it, else probed."""
        shape = self.static(size, spec).get(tensor)
        if shape is None or any(not isinstance(d, int) for d in shape[1:]):
            shape = self.complete(size, spec).get(tensor)
        return shape

    def _infer(self, size, spec) -> dict:
        m = self.model
        nodes, inits = adapter_nodes(spec)
        weight_infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                        for n, a in m.weights.items()]
        return infer_shapes(nodes + m.nodes, {**m.small_inits, **inits},
                            [float_info(PIXELS, [1, size[0], size[1], 3])] + weight_infos, m.opset_imports)

    def _probe(self, size, spec, names) -> dict:
        m = self.model
        nodes, inits = adapter_nodes(spec)
        probed = probe_shapes(m.runtime, nodes + m.nodes, {**m.small_inits, **inits}, m.weights, size, [],
                              m.opset_imports, names)
        return {name: [1, *shape[1:]] for name, shape in probed.items()}


# --- graph-level functions, for the program builders (graphs with extra inputs and backward nodes) ----------
def static_shapes(nodes, inits, size, more_inputs, opsets) -> dict:
    """Shapes with a symbolic batch; where shapes computed from Shape() get lost with a symbolic batch
    (exporters' dynamic padding), a batch-1 inference fills them in, batch dimension marked symbolic."""
    symbolic = infer_shapes(nodes, inits, [float_info(PIXELS, ["N", size[0], size[1], 3])] + more_inputs, opsets)
    if all(all(isinstance(d, int) for d in shape[1:]) for shape in symbolic.values()) and \
            all(o in symbolic for n in nodes for o in n.output if o):
        return symbolic
    concrete = infer_shapes(nodes, inits, [float_info(PIXELS, [1, size[0], size[1], 3])] + more_inputs, opsets)
    for name, shape in concrete.items():
        known = symbolic.get(name)
        if known is None or any(not isinstance(d, int) for d in known[1:]):
            symbolic[name] = (["N"] + shape[1:]) if shape and shape[0] == 1 else shape
    return symbolic


def unknown_shapes(nodes, shapes: dict) -> list[str]:
    """The nodes' outputs whose sizes (past the batch) static inference did not find."""
    return [o for n in nodes for o in n.output
            if o and (o not in shapes or any(not isinstance(d, int) for d in shapes[o][1:]))]


def probe_shapes(runtime, nodes, inits, weights, size, extra_inputs, opsets, names) -> dict:
    """Shapes that static inference could not find, read off one forward run at batch 1."""
    inputs = [float_info(PIXELS, [1, size[0], size[1], 3])] + list(extra_inputs)
    weight_infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                    for n, a in weights.items()]
    types = elem_types(nodes, inits, inputs + weight_infos, opsets)
    used = {i for n in nodes for i in n.input}
    names = [n for n in names if types.get(n, TensorProto.FLOAT) == TensorProto.FLOAT]
    if not names:
        return {}
    graph = helper.make_graph(nodes, "probe", inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              initializer=[t for t in inits.values()] +
                              [external_placeholder(n, a) for n, a in weights.items() if n in used])
    proto = helper.make_model(graph, opset_imports=opsets)
    proto.ir_version = 8
    feeds = {PIXELS: np.zeros((1, size[0], size[1], 3), np.float32)}
    for info in extra_inputs:
        dims = [1 if not d.HasField("dim_value") else d.dim_value for d in info.type.tensor_type.shape.dim]
        feeds[info.name] = np.zeros(dims, helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type or 1))
    session = runtime.session(proto, {n: a for n, a in weights.items() if n in used})
    values = session.run(names, feeds)
    return {n: ["N"] + list(v.shape[1:]) for n, v in zip(names, values)}
