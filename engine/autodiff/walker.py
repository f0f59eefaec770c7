"""The walker: objective + forward nodes -> backward nodes, using one rule per op.

It cuts the graph to the nodes between `wrt` and the objective, visits them in reverse, sums fan-in,
reduces broadcasting once, and names the gradient of value v `v_grad`. Weight gradients are never
made: only tensors that depend on `wrt` carry gradients.
"""
from __future__ import annotations

from dataclasses import dataclass


from ..errors import ConvlensError
from .emitter import Emitter
from .rules import BROADCASTING, NON_DIFFERENTIABLE, OVERRIDES, RULES, _unbroadcast


@dataclass
class Backward:
    nodes: list  # forward nodes (some replaced, e.g. MaxPool with indices) followed by backward nodes
    inits: dict
    weights: dict
    grads: dict  # wrt tensor -> its gradient tensor


def build_backward(nodes: list, objective: str, wrt: list[str], shapes: dict, weights: dict, inits: dict,
                   overrides: tuple[str, ...] = (), opset: int = 17) -> Backward:
    """Backward graph of scalar `objective` with respect to each tensor in `wrt`.

    `nodes` is the forward graph (topologically ordered); the returned nodes replace it.
    """
    rules = dict(RULES)
    for name in overrides:
        if name not in OVERRIDES:
            raise ConvlensError(f"Unknown rule override {name!r}; available: {', '.join(OVERRIDES)}.")
        rules.update(OVERRIDES[name])

    # tensors that depend on wrt (forward), and those the objective depends on (backward)
    depends = set(wrt)
    for node in nodes:
        if node.op_type not in NON_DIFFERENTIABLE and any(i in depends for i in node.input):
            depends.update(o for o in node.output if o)
    if objective not in depends:
        raise ConvlensError(f"The objective {objective!r} does not depend on {', '.join(wrt)}; nothing to differentiate.")
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

    e = Emitter(shapes, weights, inits, opset)
    contributions: dict[str, list[str]] = {objective: [e.const(1.0)]}
    e.scope(objective)
    for node in reversed(path):
        dys = [_gradient_of(e, o, contributions) if o in useful else None for o in node.output]
        if all(d is None for d in dys):
            continue
        fn = rules.get(node.op_type)
        if fn is None:
            raise ConvlensError(
                f"No gradient rule for op {node.op_type} (node {node.name!r}); rules exist for: "
                + ", ".join(sorted(RULES)) + ".")
        needs = [bool(i) and i in useful for i in node.input]
        e.scope(node.output[0] or node.name)
        grads = fn(e, node, dys, needs)
        for i, (inp, g) in enumerate(zip(node.input, grads)):
            if g is None or not needs[i]:
                continue
            if node.op_type in BROADCASTING:
                g = _unbroadcast(e, g, e.shape(inp), e.shape(node.output[0]))
            contributions.setdefault(inp, []).append(g)
    grads = {w: _gradient_of(e, w, contributions) for w in wrt}
    for w, g in grads.items():
        if g is None:
            raise ConvlensError(f"The objective does not depend on {w!r}.")
    forward = [e.replaced.get(id(n), n) for n in nodes]
    return Backward(forward + e.nodes, e.new_inits, e.new_weights, grads)


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
