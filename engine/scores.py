"""Which tensor holds the class scores: the user's (--scores), the converter's, or read off the graph.

A foreign file's scores are the output with a class axis: (N, K), or (N, K, H, W) for a dense model
(segmentation), whose score for class k is the mean over pixels of its logit; a mean-over-pixels node is
appended so every technique sees (N, K). Of several outputs, one that feeds another (an embedding that
the logits are computed from) is not the scores; two that remain are ambiguous and refused. An output
made by Softmax has its logits at the Softmax's input, as convlens's own Keras files do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ConvlensError
from .graph import needed_nodes, producers
from .infer import find_softmax_logits
from .layouts import tensor_layouts, tensor_ranks

DENSE_SCORES = "convlens_class_scores"


@dataclass
class Scores:
    logits: str | None
    probabilities: str | None
    nodes: list = field(default_factory=list)  # appended to the graph (the mean over pixels of a dense output)
    inits: dict = field(default_factory=dict)


def choose_scores(proto: onnx.ModelProto, input_name: str, input_layout: str, requested: str | None,
                  logits: str | None, probabilities: str | None, inferred: bool,
                  ranks: dict[str, int] | None = None) -> Scores:
    """`logits`/`probabilities` are the metadata's; they are kept for convlens's own files unless `requested`.
    `ranks` (tensor_ranks) may be given when the caller has them already."""
    ranks = tensor_ranks(proto) if ranks is None else ranks
    made_by = producers(proto.graph.node)
    if requested:
        known = set(made_by) | {o.name for o in proto.graph.output}
        if requested not in known:
            outs = ", ".join(o.name for o in proto.graph.output)
            raise ConvlensError(f"--scores {requested!r} is not a tensor of this model; its outputs are: {outs}.")
        logits, probabilities = _split_softmax(proto, requested)
    elif inferred:
        candidates = _score_outputs(proto, ranks)
        if not candidates:
            return Scores(None, None)
        logits, probabilities = _split_softmax(proto, candidates[0])
    if logits is None or ranks.get(logits) != 4:
        return Scores(logits, probabilities)
    layout = tensor_layouts(proto.graph.node, input_name, input_layout, ranks).get(logits) or "NCHW"
    return _dense_mean(logits, layout, _opset(proto))


def _score_outputs(proto: onnx.ModelProto, ranks: dict) -> list[str]:
    outputs = [o.name for o in proto.graph.output if ranks.get(o.name) in (2, 4)]
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


def _split_softmax(proto: onnx.ModelProto, tensor: str) -> tuple[str, str | None]:
    """(logits, probabilities): a Softmax output's logits are its input (through Identity nodes)."""
    logits = find_softmax_logits(proto, tensor)
    return (logits, tensor) if logits else (tensor, None)


def _dense_mean(tensor: str, layout: str, opset: int) -> Scores:
    axes = [1, 2] if layout == "NHWC" else [2, 3]
    if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
        inits = {"convlens_scores_axes": numpy_helper.from_array(np.array(axes, np.int64), "convlens_scores_axes")}
        node = helper.make_node("ReduceMean", [tensor, "convlens_scores_axes"], [DENSE_SCORES], keepdims=0,
                                name=DENSE_SCORES)
    else:
        inits = {}
        node = helper.make_node("ReduceMean", [tensor], [DENSE_SCORES], axes=axes, keepdims=0, name=DENSE_SCORES)
    return Scores(DENSE_SCORES, None, [node], inits)


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
