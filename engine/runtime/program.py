"""A program: pixels in, chosen tensors (and gradients) out, compiled once into an ORT session.

Every technique asks for a program: the input adapter in front, the model cut to what the request
needs, optional objective nodes behind it, and optionally the backward graph from engine/autodiff.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper

from ..autodiff import build_backward
from ..errors import ConvlensError
from ..graph import float_info, needed_nodes
from ..metadata import InputSpec
from .adapter import PIXELS, adapter_nodes
from .session import external_placeholder
from .shapes import probe_shapes, static_shapes, unknown_shapes


@dataclass(frozen=True)
class GradRequest:
    """Differentiate the scalar `objective` with respect to the tensors in `wrt`."""

    objective: str
    wrt: tuple[str, ...]
    overrides: tuple[str, ...] = ()  # names of rule sets that replace rules ("guided", an LRP composite)
    params: tuple = ()  # (name, value) pairs for those rules (an LRP composite's eps, gamma, bounds)
    conditions: tuple = ()  # (tensor, channels, channel axis): relevance kept only in those channels there


@dataclass
class Extra:
    """Nodes and initializers appended behind the model (objectives, helpers)."""

    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # extra graph inputs (ValueInfoProto), e.g. a target index
    key: tuple = ()


class Program:
    def __init__(self, session, fetch: list[str], grads: dict[str, str], size, extra_inputs, needs_pixels=True,
                 single_image=False):
        self.single_image = single_image  # run batches one image at a time (graphs exported for batch 1)
        self.session = session
        self.fetch = fetch
        self.grads = grads  # wrt tensor -> gradient tensor name
        self.size = size
        self.extra_inputs = extra_inputs
        self.needs_pixels = needs_pixels  # False when the program starts at inner tensors only

    def run(self, pixels: np.ndarray | None, **feeds) -> dict[str, np.ndarray]:
        """Run on a batch of RGB pixels (N, H, W, 3) in 0..255; returns fetched tensors by name.
        Programs started at inner tensors take those as feeds (by tensor name) and may not need pixels."""
        inputs = dict(feeds)
        if self.needs_pixels:
            pixels = np.ascontiguousarray(pixels, dtype=np.float32)
            if pixels.ndim == 3:
                pixels = pixels[None]
            inputs[PIXELS] = pixels
        try:
            values = self._run(inputs)
        except Exception as exc:  # ORT raises its own types; say what was asked
            what = f"a {self.size[0]}x{self.size[1]} image"
            reason = " ".join(str(exc).split())
            if len(reason) > 300:  # cut at a word, never mid-word
                reason = reason[:300].rsplit(" ", 1)[0] + " ..."
            raise ConvlensError(f"ONNX Runtime could not run the model on {what} ({reason}); if the model takes only "
                                "its own input size, run it at that size (--size for filters).") from None
        return dict(zip(self.fetch, values))

    def _run(self, inputs: dict) -> list:
        n = len(next(iter(inputs.values())))
        if not self.single_image or n <= 1:
            return self.session.run(self.fetch, inputs)
        # every input is batch-major; per-item outputs are stacked, scalars (sums over items) added
        runs = [self.session.run(self.fetch, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]
        return [np.concatenate(parts) if parts[0].ndim else np.sum(parts, axis=0) for parts in zip(*runs)]


def program(model, fetch: list[str], size: tuple[int, int], spec: InputSpec | None = None,
            extra: Extra | None = None, grad: GradRequest | None = None, start: tuple = ()) -> Program:
    """The compiled program for this request on `model` (a loaded Model: its graph, weights, runtime and shape
    service), from the model's cache when it was built before.

    `start`: (tensor, batch-1 shape) pairs fed at run time instead of computed, so a program can begin
    at an inner layer (a CAM's head: from the target layer to the class scores) and skip what is known."""
    spec = spec or model.input_spec
    extra = extra or Extra()
    start = tuple((name, tuple(shape)) for name, shape in start)
    key = (tuple(fetch), tuple(size), _spec_key(spec), extra.key, grad, start)
    cached = model.programs.get(key)
    if cached is not None:
        return cached
    built = _build(model, list(fetch), tuple(size), spec, extra, grad, start)
    model.programs[key] = built
    return built


def _spec_key(spec: InputSpec) -> tuple:
    return (spec.name, spec.layout, spec.color, spec.scale, tuple(spec.mean), tuple(spec.std), spec.channels)


@dataclass
class Graph:
    """What a request needs of a model: the nodes (forward, then backward) cut to the targets, the constants they
    use, and where each gradient is."""

    nodes: list
    inits: dict  # small constants (TensorProto)
    weights: dict  # large constants (numpy), kept outside the graph proto
    grads: dict  # wrt tensor -> gradient tensor
    shapes: dict  # the static (and probed) shapes the backward graph was written with; {} without one


def forward_and_backward(runtime, nodes: list, inits: dict, weights: dict, targets: list[str], size, inputs: list,
                         opset_imports, grad: GradRequest | None = None, copy_weights: bool = True) -> Graph:
    """The one program builder: `nodes` (adapter, model, objective) cut to `targets`, and, for a gradient request,
    the backward graph written on shapes inferred (probed where inference cannot follow sizes) at `size`.
    `inputs`: graph inputs besides PIXELS (ValueInfoProto), where the cut stops. Used by `program` and the
    exported explainer alike."""
    stop_at = [PIXELS] + [i.name for i in inputs]
    # the tensors differentiated or conditioned are kept too: a layer exposed as a relayout beside the path
    # (tf2onnx's NHWC layers) is followed back to the tensor it views
    asked = [grad.objective, *grad.wrt, *(c[0] for c in grad.conditions)] if grad else []
    cut = needed_nodes(nodes, list(targets) + asked, stop_at=stop_at)
    if grad is None:
        return Graph(cut, dict(inits), dict(weights), {}, {})
    opset = next((o.version for o in opset_imports if o.domain in ("", "ai.onnx")), 17)
    weight_infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                    for n, a in weights.items()]
    shapes = static_shapes(cut, inits, size, list(inputs) + weight_infos, opset_imports)
    unknown = unknown_shapes(cut, shapes)
    if unknown:
        shapes.update(probe_shapes(runtime, cut, inits, weights, size, inputs, opset_imports, unknown))
    back = build_backward(cut, grad.objective, list(grad.wrt), shapes, weights, inits, grad.overrides, opset,
                          copy_weights=copy_weights, params=grad.params,
                          conditions=grad.conditions)
    # the forward nodes (some with extra outputs) followed by the backward ones; rules may leave a node
    # they replaced (see the ReLU rule), so keep only what the targets and gradients need
    kept = needed_nodes(back.nodes, list(targets) + list(back.grads.values()), stop_at=stop_at)
    return Graph(kept, {**inits, **back.inits}, {**weights, **back.weights}, back.grads, shapes)


def _build(model, fetch, size, spec, extra, grad, start=()) -> Program:
    a_nodes, a_inits = adapter_nodes(spec)
    nodes = a_nodes + model.nodes + list(extra.nodes)
    inits = {**model.small_inits, **a_inits, **extra.inits}
    _check_known(list(fetch) + ([grad.objective] if grad else []) + [name for name, _ in start], nodes, inits,
                 model.weights)
    inputs = list(extra.inputs) + [float_info(name, ["N", *shape[1:]]) for name, shape in start]
    built = forward_and_backward(model.runtime, nodes, inits, model.weights, fetch, size, inputs,
                                 model.opset_imports, grad)
    fetch = list(fetch) + [g for g in built.grads.values() if g not in fetch]
    used = {i for n in built.nodes for i in n.input} | set(fetch)
    initializers = [t for name, t in built.inits.items() if name in used]
    initializers += [external_placeholder(name, arr) for name, arr in built.weights.items() if name in used]
    needs_pixels = not start or any(PIXELS in n.input for n in built.nodes)
    pixel_info = float_info(PIXELS, ["N", size[0], size[1], 3])
    graph = helper.make_graph(built.nodes, "convlens", ([pixel_info] if needs_pixels else []) + inputs,
                              [helper.make_tensor_value_info(f, TensorProto.FLOAT, None) for f in fetch],
                              initializer=initializers)
    proto = helper.make_model(graph, opset_imports=model.opset_imports)
    proto.ir_version = 8
    session = model.runtime.session(proto, {n: a for n, a in built.weights.items() if n in used})
    return Program(session, fetch, built.grads, size, inputs, needs_pixels, model.single_image)


def _check_known(targets, nodes, inits, weights):
    known = {o for n in nodes for o in n.output} | set(inits) | set(weights) | {PIXELS}
    for t in targets:
        if t not in known:
            raise ConvlensError(f"Tensor {t!r} is not in the model graph.")
