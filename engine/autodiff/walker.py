"""The walker: objective + forward nodes -> backward nodes, using one rule per op.

It cuts the graph to the nodes between `wrt` and the objective, visits them in reverse, sums fan-in,
reduces broadcasting once, and names the gradient of value v `v_grad`. Weight gradients are never
made: only tensors that depend on `wrt` carry gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import ConvlensError
from .canonize import canonize
from .composites import COMPOSITES
from .emitter import Emitter, attrs
from .passes import fuse_relu_into_unpool
from .rules import BROADCASTING, NON_DIFFERENTIABLE, OVERRIDES, RULES
from .rules_relevance import LINEAR_OPS


@dataclass
class Backward:
    nodes: list  # forward nodes (some replaced, e.g. MaxPool with indices) followed by backward nodes
    inits: dict
    weights: dict
    grads: dict  # wrt tensor -> its gradient tensor


def build_backward(nodes: list, objective: str, wrt: list[str], shapes: dict, weights: dict, inits: dict,
                   overrides: tuple[str, ...] = (), opset: int = 17, copy_weights: bool = True,
                   params: tuple = (), conditions: tuple = ()) -> Backward:
    """Backward graph of scalar `objective` with respect to each tensor in `wrt`.

    `nodes` is the forward graph (topologically ordered); the returned nodes replace it. `overrides` names rule
    sets (OVERRIDES: by op type, e.g. "guided") or one LRP composite (COMPOSITES: by layer role, with the
    canonizers run first); `params`: (name, value) pairs for the composite's rules (eps, gamma, low, high).
    `conditions`: (tensor, channels, channel axis) triples: the gradient (relevance) flowing back through that
    tensor keeps only those channels (concept-conditional relevance, Achtibat et al. 2023).
    """
    rules, composite, folded, renamed = dict(RULES), None, {}, {}
    for name in overrides:
        if name in COMPOSITES:
            composite = COMPOSITES[name]
            nodes, folded, renamed = canonize(nodes, weights, inits, shapes)
            weights = {**weights, **folded}
            continue
        if name not in OVERRIDES:
            raise ConvlensError(f"Unknown rule override {name!r}; available: {', '.join([*OVERRIDES, *COMPOSITES])}.")
        rules.update(OVERRIDES[name])

    # an exposed layer may be a relayout (Transpose/Identity) branching off the main path, as tf2onnx
    # writes NHWC layer outputs next to an NCHW flow: differentiate the on-path tensor, relayout after
    # (a layer folded by a canonizer is asked for under the name its values now carry)
    requested, relayouts = list(wrt), {}
    wrt = [on_path_source(_final_name(w, renamed), nodes, objective, relayouts) for w in wrt]
    # tensors that depend on wrt (forward), and those the objective depends on (backward)
    depends = set(wrt)
    for node in nodes:
        if node.op_type not in NON_DIFFERENTIABLE and any(i in depends for i in node.input):
            depends.update(o for o in node.output if o)
    if objective not in depends:
        raise ConvlensError(
            f"The objective {objective!r} does not depend on {', '.join(wrt)}; nothing to differentiate."
        )
    producer = {o: n for n in nodes for o in n.output if o}
    useful, stack = set(), [objective]
    while stack:
        t = stack.pop()
        if t in useful or t not in depends:
            continue
        useful.add(t)
        node = producer.get(t)
        if node is not None:
            stack.extend(i for i in node.input if i in depends)
    path = [n for n in nodes if any(o in useful for o in n.output) and any(i in useful for i in n.input)]

    e = Emitter(shapes, weights, inits, opset, producers={o: (k, n) for k, n in enumerate(nodes) for o in n.output},
                copy_weights=copy_weights)
    contributions: dict[str, list[str]] = {objective: [e.const(1.0)]}
    e.scope(objective)
    first = next((n for n in path if n.op_type in LINEAR_OPS), None) if composite else None
    masks = dict(_condition_masks(conditions, renamed, nodes, objective, shapes))
    for node in reversed(path):
        dys = [_gradient_of(e, o, contributions) if o in useful else None for o in node.output]
        for k, o in enumerate(node.output):
            if o in masks and dys[k] is not None:
                dys[k] = _keep_channels(e, dys[k], o, *masks.pop(o))
        if all(d is None for d in dys):
            continue
        fn = composite.rule_for(e, node, node is first, dict(params)) if composite else None
        fn = fn or rules.get(node.op_type)
        if fn is None:
            if node.domain not in ("", "ai.onnx"):  # ONNX Runtime's fused ops (com.microsoft) and the like
                raise ConvlensError(
                    f"Node {node.name!r} is {node.domain}.{node.op_type}, an op outside standard ONNX (written by "
                    "ONNX Runtime's offline graph optimizations); export the model again without them (save it "
                    "before optimizing, or with SessionOptions.graph_optimization_level at ORT_ENABLE_BASIC or lower).")
            raise ConvlensError(
                f"No gradient rule for op {node.op_type} (node {node.name!r}); rules exist for: "
                + ", ".join(sorted(RULES)) + ".")
        needs = [bool(i) and i in useful for i in node.input]
        e.scope(node.output[0] or node.name)
        grads = fn(e, node, dys, needs)
        for i, (inp, g) in enumerate(zip(node.input, grads)):  # a shorter list: the rest get none
            if g is None or not needs[i]:
                continue
            if node.op_type in BROADCASTING:
                g = e.unbroadcast(g, e.shape(inp), e.shape(node.output[0]))
            contributions.setdefault(inp, []).append(g)
    if masks:
        raise ConvlensError(f"The condition on {', '.join(masks)} cannot be applied: the tensor is not on the path "
                            "from the input to the explained score; condition a layer the score depends on.")
    grads = {}
    for asked, w in zip(requested, wrt):
        g = _gradient_of(e, w, contributions)
        if g is None:
            raise ConvlensError(f"The objective does not depend on {asked!r}.")
        for node in relayouts.get(_final_name(asked, renamed), []):  # replay the relayout chain on the gradient
            e.scope(asked)
            g = e.op(node.op_type, g, **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
                     out=f"{asked}_grad" if node is relayouts[asked][-1] else None)
        grads[asked] = g
    forward = [e.replaced.get(id(n), n) for n in nodes]
    return Backward(fuse_relu_into_unpool(forward + e.nodes), e.new_inits, {**folded, **e.new_weights}, grads)


def _condition_masks(conditions, renamed: dict, nodes, objective: str, shapes: dict):
    """(on-path tensor, (channels, axis)) per condition: a layer exposed as a relayout beside the path (tf2onnx's
    NHWC layers) is conditioned on the tensor it relayouts, its channel axis carried back through the Transposes."""
    for tensor, channels, axis in conditions:
        tensor, chain = _final_name(tensor, renamed), {}
        source = on_path_source(tensor, nodes, objective, chain)
        for node in reversed(chain.get(tensor, [])):
            if node.op_type == "Transpose":  # output axis a is input axis perm[a]; no perm: the axes reversed
                rank = len(shapes[node.output[0]])
                perm = list(attrs(node).get("perm", range(rank)[::-1]))
                axis = perm[axis % rank]
        yield source, (tuple(channels), axis)


def _final_name(tensor: str, renamed: dict) -> str:
    """A tensor's name after canonizing (a convolution folded with its batch norm takes the norm's output)."""
    while tensor in renamed:
        tensor = renamed[tensor]
    return tensor


def _keep_channels(e: Emitter, g: str, tensor: str, channels: tuple, axis: int) -> str:
    shape = e.static_shape(tensor, "a conditioned layer")
    axis = axis % len(shape)
    mask = np.zeros([shape[axis] if a == axis else 1 for a in range(1, len(shape))], np.float32)
    index = [slice(None)] * mask.ndim
    index[axis - 1] = list(channels)
    mask[tuple(index)] = 1.0
    return e.op("Mul", g, e.const(mask))


def on_path_source(w: str, nodes, objective: str, relayouts: dict) -> str:
    """w itself, or the tensor that w is a pure relayout of when only that one feeds the objective."""
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def reaches(t):
        seen, stack = set(), [t]
        while stack:
            x = stack.pop()
            if x == objective:
                return True
            if x in seen:
                continue
            seen.add(x)
            for n in consumers.get(x, []):
                stack.extend(o for o in n.output if o)
        return False

    if reaches(w):
        return w
    chain, t = [], w
    while t in producer and producer[t].op_type in ("Transpose", "Identity"):
        chain.append(producer[t])
        t = producer[t].input[0]
        if reaches(t):
            relayouts[w] = chain[::-1]
            return t
    return w


def _gradient_of(e: Emitter, tensor: str, contributions: dict) -> str | None:
    """The summed gradient of a tensor, named `<tensor>_grad` (made once, then reused)."""
    parts = contributions.get(tensor)
    if not parts:
        return None
    name = f"{tensor}_grad"
    if len(parts) == 1 and parts[0] == name:
        return name
    e.op("Sum" if len(parts) > 1 else "Identity", *parts, out=name)
    contributions[tensor] = [name]
    return name
