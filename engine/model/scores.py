"""Which tensor holds the class scores: the user's (--scores), the converter's, or read off the graph.

A foreign file's scores are the output with a class axis (N, K). A dense map (N, K, H, W) or a sequence (N, T, C)
is handed to a target head (output_targets.py) that makes its row of scores. Of several outputs, one that
feeds another (an embedding that the logits are computed from) is not the scores; two that remain are
ambiguous and refused. An output made by Softmax has its logits at the Softmax's input, as convlens's own Keras
files do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..errors import ConvlensError
from ..graph import needed_nodes, producers
from .infer import find_head_activation
from .layouts import tensor_layouts, tensor_ranks, tensor_shapes

@dataclass
class Scores:
    logits: str | None
    probabilities: str | None
    nodes: list = field(default_factory=list)  # appended to the graph (the mean over pixels of a dense output)
    inits: dict = field(default_factory=dict)
    activation: str = "softmax"  # how probabilities come from the logits: softmax, or sigmoid per class
    classes: int | None = None  # the length of the class axis, where the graph fixes it
    refusal: str | None = None  # why the outputs are not class scores (said when a technique needs them)
    explain: str | None = None  # an output that is not class scores but has a default target (output_targets.py)


def choose_scores(proto: onnx.ModelProto, input_name: str, input_layout: str, requested: str | None,
                  logits: str | None, probabilities: str | None, inferred: bool,
                  shapes: dict | None = None, activation: str = "softmax") -> Scores:
    """`logits`/`probabilities`/`activation` are the metadata's; they are kept for convlens's own files unless
    `requested`. `shapes` (tensor_shapes) may be given when the caller has them already."""
    shapes = tensor_shapes(proto) if shapes is None else shapes
    ranks = tensor_ranks(proto, shapes)
    made_by = producers(proto.graph.node)
    if requested:
        known = set(made_by) | {o.name for o in proto.graph.output}
        if requested not in known:
            outs = ", ".join(o.name for o in proto.graph.output)
            raise ConvlensError(f"--scores {requested!r} is not a tensor of this model; its outputs are: {outs}.")
        scores = _read_head(proto, requested, input_name, input_layout, shapes, ranks)
        if scores.refusal and not scores.explain:  # asked for by name: say so now
            raise ConvlensError(scores.refusal)
        return scores
    if not inferred:
        return Scores(
            logits, probabilities, activation=activation, classes=class_count(shapes.get(logits or probabilities or ""))
        )
    candidates = _score_outputs(proto, ranks)
    if not candidates:
        others = [o.name for o in proto.graph.output]
        described = ", ".join(f"{o} {_shape_text(shapes.get(o))}" for o in others)
        return Scores(None, None, refusal=f"No output of this model is a vector of class scores ({described}); "
                                          f"{_what_it_looks_like(shapes.get(others[0]))}")
    return _read_head(proto, candidates[0], input_name, input_layout, shapes, ranks)


def _read_head(proto, tensor: str, input_name: str, input_layout: str, shapes: dict, ranks: dict) -> Scores:
    """The scores behind output `tensor`: a Softmax's or Sigmoid's input (through shape-only ops) is the logits."""
    found = find_head_activation(proto.graph.node, tensor)
    logits, probabilities, activation = tensor, None, "softmax"
    if found:
        logits, probabilities = found[1], tensor
        activation = "softmax" if found[0] == "Softmax" else "sigmoid"
    shape, rank = shapes.get(logits), ranks.get(logits)
    if shape is None and found and producers(proto.graph.node)[tensor].input[0] == logits:
        shape, rank = shapes.get(tensor), ranks.get(tensor)  # an activation keeps its input's shape
    if rank in (3, 4):  # a sequence or a dense map: explained through a target head (output_targets.py)
        refusal = (f"The output {tensor!r} {_shape_text(shapes.get(tensor))} is not a vector of class scores: "
                   f"{_what_it_looks_like(shape)}")
        return Scores(None, None, explain=tensor, refusal=refusal)
    classes = class_count(shape)
    if classes == 1:  # one logit: a binary classifier's positive class, never a softmax over one class
        activation = "sigmoid"
    return Scores(logits, probabilities, activation=activation, classes=classes)


def output_layout(proto, tensor, input_name, input_layout, shapes: dict) -> str:
    """The layout of a 4-D `tensor` ("NCHW" where the graph does not say), from the shapes already inferred."""
    return tensor_layouts(proto.graph.node, input_name, input_layout, tensor_ranks(proto, shapes)).get(tensor) or "NCHW"


def class_count(shape) -> int | None:
    if not shape or len(shape) != 2:
        return None
    return shape[1] if isinstance(shape[1], int) and shape[1] > 0 else None


def _shape_text(shape) -> str:
    if not shape:
        return "(shape unknown)"
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


def _what_it_looks_like(shape) -> str:
    """One clause for an output that is not class scores, and what to do."""
    advice = "choose another output with --scores NAME, or explain one value of it with --index I."
    if shape and len(shape) == 3:
        return ("(N, T, C) is a sequence (a CTC text recognizer's per-step symbols), not T*C classes; explain it "
                "with --sequence or --position T.")
    if shape and len(shape) == 4:
        return "a dense map (per-pixel predictions); explain a class over a region with --region."
    return advice


def _score_outputs(proto: onnx.ModelProto, ranks: dict) -> list[str]:
    outputs = [o.name for o in proto.graph.output if ranks.get(o.name) in (2, 3, 4)]
    if len(outputs) <= 1:
        return outputs
    # an output that another output is computed from (an embedding before the classifier) is not the scores
    feeds_another = set()
    for out in outputs:
        upstream = {t for n in needed_nodes(proto.graph.node, [out]) for t in n.output} - {out}
        feeds_another |= upstream & set(outputs)
    remaining = [o for o in outputs if o not in feeds_another]
    if len(remaining) > 1:
        shapes = ", ".join(f"{o} (rank {ranks.get(o)})" for o in remaining)
        raise ConvlensError(f"The model has several outputs that could be its class scores ({shapes}); "
                            "choose one with --scores NAME.")
    return remaining
