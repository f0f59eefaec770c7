"""Explaining outputs that are not one vector of class scores: dense maps, sequences, embeddings, single values.

Each kind appends a small head to the graph that turns the output into a row of scores per image (N, K): for
every technique that row plays the part of a classifier's logits, and its K entries are what `--class` picks.
- dense map (N, K, H, W), `region`: predicted (each class's logit summed over the pixels where it wins, or where
  a one-channel map's sigmoid exceeds 0.5: pytorch-grad-cam's SemanticSegmentationTarget), all (the mean over
  every pixel), or a mask on the model's input grid (a box or a mask image), resized to the map by nearest;
- sequence (N, T, C), a CTC recognizer: `sequence` (one score: the sum over steps of the log-probability of the
  greedy symbol) or `position` T (the C logits of step T);
- embedding (N, D), `like`: one score, the cosine similarity with a vector (another image's embedding, a text
  embedding);
- any output, `index`: the output flattened, so index I is its I-th value, raw.
ArgMax and OneHot make the masks; they carry no gradient, so a mask is a constant of the differentiation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from ..errors import ConvlensError
from ..writer import GraphWriter
from .infer import find_head_activation

TARGET_SCORES = "convlens_target_scores"
DETECTION_OBJECTIVE = "the detected class's logit (before the sigmoid) at the candidate that made the box"
OBJECTNESS_OBJECTIVE = (DETECTION_OBJECTIVE + " (the objectness, which multiplies into the score, is not part of "
                        "it)")
QUERY_OBJECTIVE = "the detected class's logit (before the softmax) at the query that made the box"


def detection_objective(detector) -> str:
    if detector.objectness:
        return OBJECTNESS_OBJECTIVE
    return QUERY_OBJECTIVE if detector.queries else DETECTION_OBJECTIVE


@dataclass(frozen=True)
class OutputTarget:
    """What to explain when the output is not class scores (None everywhere: the classifier's scores)."""

    output: str | None = None  # the output tensor (--scores NAME); None: the model's only output
    region: str | None = None  # dense maps: predicted or all
    region_mask: np.ndarray | None = dataclasses.field(default=None, compare=False)  # (H, W) on the input grid
    sequence: bool = False  # sequences: the greedy path's log-probability
    position: int | None = None  # sequences: the logits of one step
    like: np.ndarray | None = dataclasses.field(default=None, compare=False)  # embeddings: compare with this
    index: int | None = None  # any output: its flattened I-th value
    detections: tuple | None = None  # detectors: the detections (detections.Detection) to explain, in order
    box_iou: bool = False  # detectors: add the IoU of the candidate's box with the detection's (score+iou)

    @property
    def stated(self) -> bool:
        return any(v is not None and v is not False for v in dataclasses.astuple(self)[1:])


@dataclass
class TargetHead:
    nodes: list
    inits: dict
    weights: dict
    classes: int
    activation: str  # how the reported values come from the scores: identity, softmax or sigmoid
    names: list[str] | None  # labels of the K scores when the head defines them
    kind: str  # dense, sequence, embedding, value
    objective: str  # what one score is, in words (for --json and the summary)
    index: int | None = None  # the value a value target explains by default


def _logits_of(nodes, output: str) -> tuple[str, str | None]:
    """(the logits behind a Softmax/Sigmoid that makes `output`, that op) or (output, None): infer.py's rule."""
    found = find_head_activation(nodes, output)
    return (found[1], found[0]) if found else (output, None)


def detection_head(detector, detections, names: list[str] | None, opset: int, box_iou: bool = False) -> TargetHead:
    """One score per detection: its class's logit at its candidate, read from the head's logits flattened
    (YOLO: (N, C, A), reported through the sigmoid, so the value is the detection's score; DETR: (N, Q, C + 1),
    reported raw, its softmax spanning the query's classes). With `box_iou`, plus the IoU of the candidate's box
    (a function of the image) with the detected box (a constant), as pytorch-grad-cam's FasterRCNNBoxScoreTarget
    adds it; reported as it is."""
    w = GraphWriter(opset, scope="convlens_target")
    picks = [logit_index(detector, d.anchor, d.cls) for d in detections]
    logits = w.op("Gather", flat_logits(w, detector), w.const(picks, np.int64), axis=1)
    if box_iou:
        w.op("Add", logits, _candidate_iou(w, detector, detections), out=TARGET_SCORES)
    else:
        w.op("Identity", logits, out=TARGET_SCORES)
    labels = [f"{names[d.cls] if names and d.cls < len(names) else f'class {d.cls}'} {d.score:.2f}"
              for d in detections]
    activation = "identity" if box_iou or detector.queries else "sigmoid"
    return TargetHead(w.nodes, w.new_inits, w.new_weights, len(detections), activation, labels, "detection",
                      detection_objective(detector) + (" plus its box's IoU with the detected box" if box_iou else ""))


def flat_logits(w: GraphWriter, detector) -> str:
    """(N, F): every class logit of every candidate of the head, in the order logit_index counts."""
    if not detector.objectness:
        return w.op("Flatten", detector.logits, axis=1)
    columns = detector.classes + 5
    rows = [w.op("Reshape", t, w.ints([0, -1, columns])) for t in detector.level_logits]
    joined = w.op("Concat", *rows, axis=1) if len(rows) > 1 else rows[0]  # (N, A, 5 + C), as the output's rows
    return w.op("Flatten", joined, axis=1)


def logit_count(detector) -> int:
    """The length of flat_logits' row."""
    per_candidate = detector.classes + 5 if detector.objectness else detector.classes + 1 if detector.queries \
        else detector.classes
    return detector.anchors * per_candidate


def logit_index(detector, anchor: int, cls: int) -> int:
    """Where class `cls` of candidate `anchor` lies in flat_logits' row."""
    if detector.objectness:
        return anchor * (detector.classes + 5) + 5 + cls
    if detector.queries:
        return anchor * (detector.classes + 1) + cls
    return cls * detector.anchors + anchor


def _candidate_iou(w: GraphWriter, detector, detections) -> str:
    """(N, K): the IoU of each detection's candidate box in the head (x1, y1, x2, y2 after converting a centre
    and size) with the detected box, in the model input's pixels (a DETR-style head's fractions: IoU does not
    change when both boxes are scaled alike, so the detected box is taken as fractions of the input)."""
    anchors = w.const([d.anchor for d in detections], np.int64)
    if detector.row_major:
        picked = w.op("Gather", detector.raw, anchors, axis=1)  # (N, K, 4 or more)
        corners4 = w.op("Slice", picked, w.ints([0]), w.ints([4]), w.ints([2]))
        boxes = w.op("Transpose", corners4, perm=[0, 2, 1])  # (N, 4, K)
    else:
        rows = w.op("Slice", detector.raw, w.ints([0]), w.ints([4]), w.ints([1]))  # (N, 4, A)
        boxes = w.op("Gather", rows, anchors, axis=2)  # (N, 4, K)
    a, b, c, d = (w.op("Gather", boxes, w.const(k, np.int64), axis=1) for k in range(4))  # (N, K) each
    if detector.corners:
        x1, y1, x2, y2 = a, b, c, d
    else:
        half_w, half_h = w.op("Mul", c, w.const(0.5)), w.op("Mul", d, w.const(0.5))
        x1, y1, x2, y2 = w.op("Sub", a, half_w), w.op("Sub", b, half_h), w.op("Add", a, half_w), w.op("Add", b, half_h)
    given = np.asarray([det.input_box or det.box for det in detections], np.float32)  # (K, 4)
    if detector.queries:
        given = given / np.asarray([[det.frame[1], det.frame[0]] * 2 for det in detections], np.float32)
    gx1, gy1, gx2, gy2 = (w.const(given[:, k]) for k in range(4))
    zero = w.const(0.0)
    inter = w.op("Mul", w.op("Max", w.op("Sub", w.op("Min", x2, gx2), w.op("Max", x1, gx1)), zero),
                 w.op("Max", w.op("Sub", w.op("Min", y2, gy2), w.op("Max", y1, gy1)), zero))
    area = w.op("Mul", w.op("Sub", x2, x1), w.op("Sub", y2, y1))
    given_area = w.const((given[:, 2] - given[:, 0]) * (given[:, 3] - given[:, 1]))
    union = w.op("Sub", w.op("Add", area, given_area), inter)
    return w.op("Div", inter, w.op("Max", union, w.const(1e-12)))


def build_head(nodes, output: str, shape: list, layout: str, target: OutputTarget, opset: int) -> TargetHead:
    """The head for `target` on `output` of batch-1 `shape` (layout NCHW/NHWC for 4-D tensors)."""
    w = GraphWriter(opset, scope="convlens_target")
    rank = len(shape)
    if target.index is not None:
        size = int(np.prod(shape[1:]))
        if not 0 <= target.index < size:
            raise ConvlensError(f"--index {target.index} is out of range; the output {output!r} has {size} values "
                                f"(0-{size - 1}).")
        w.op("Flatten", output, out=TARGET_SCORES, axis=1)
        return TargetHead(w.nodes, w.new_inits, w.new_weights, size, "identity", None, "value",
                          f"the raw value of {output} at flat index {target.index}", target.index)
    if target.like is not None:
        return _embedding(w, output, shape, target.like)
    if rank == 4:
        return _dense(w, nodes, output, shape, layout, target)
    if rank == 3:
        return _sequence(w, nodes, output, shape, target)
    raise ConvlensError(f"The output {output!r} {tuple(shape)} is a vector: explain a class with --class, or compare "
                        "it with an embedding with --like IMAGE or --like-vector FILE.npy.")


def _dense(w: GraphWriter, nodes, output, shape, layout, target) -> TargetHead:
    if target.sequence or target.position is not None:
        raise ConvlensError(f"--sequence and --position apply to (N, T, C) outputs; {output!r} is a dense map "
                            f"{tuple(shape)}: use --region.")
    logits, activation = _logits_of(nodes, output)
    x = w.op("Transpose", logits, perm=[0, 3, 1, 2]) if layout == "NHWC" else logits
    classes = shape[3] if layout == "NHWC" else shape[1]
    region = target.region or ("mask" if target.region_mask is not None else "predicted")
    if region == "all":
        w.reduce("ReduceMean", x, [2, 3], keepdims=0, out=TARGET_SCORES)
        return TargetHead(w.nodes, w.new_inits, w.new_weights, classes, "identity", None, "dense",
                          "the class's logit averaged over every pixel of the map")
    if region == "mask":
        mask = np.asarray(target.region_mask, np.float32)[None, None]
        grid = w.op("Slice", w.op("Shape", x), w.ints([2]), w.ints([4]), w.ints([0]))
        sizes = w.op("Concat", w.ints([1, 1]), grid, axis=0)
        inside = w.op("Resize", w.const(mask), "", "", sizes, mode="nearest", nearest_mode="floor",
                      coordinate_transformation_mode="asymmetric")
        what = "the class's logit summed over the given region"
    elif classes == 1:
        if activation != "Sigmoid":
            raise ConvlensError(f"The one-channel map {output!r} has no Sigmoid, so convlens cannot tell which pixels "
                                "it predicts; give --region x1,y1,x2,y2 or --region MASK.png (or --region all).")
        inside = w.op("Cast", w.op("Greater", x, w.const(0.0)), to=TensorProto.FLOAT)  # sigmoid > 0.5
        what = "the map's logit summed over the pixels where its sigmoid exceeds 0.5"
    elif region == "predicted":
        winner = w.op("ArgMax", x, axis=1, keepdims=0)
        inside = w.op("OneHot", winner, w.const(classes, np.int64), w.const([0.0, 1.0]), axis=1)
        what = "the class's logit summed over the pixels where it wins"
    else:
        raise ConvlensError(f"--region must be predicted, all, x1,y1,x2,y2 or a mask image, not {region!r}.")
    w.reduce("ReduceSum", w.op("Mul", x, inside), [2, 3], keepdims=0, out=TARGET_SCORES)
    return TargetHead(w.nodes, w.new_inits, w.new_weights, classes, "identity", None, "dense", what)


def _sequence(w: GraphWriter, nodes, output, shape, target) -> TargetHead:
    if target.region is not None or target.region_mask is not None:
        raise ConvlensError(f"--region applies to dense maps; {output!r} {tuple(shape)} is a sequence (N, T, C): "
                            "use --sequence or --position T.")
    logits, activation = _logits_of(nodes, output)
    steps, symbols = shape[1], shape[2]
    if target.position is not None:
        if isinstance(steps, int) and not 0 <= target.position < steps:
            raise ConvlensError(f"--position {target.position} is out of range; {output!r} has {steps} steps "
                                f"(0-{steps - 1}).")
        w.op("Gather", logits, w.const(target.position, np.int64), axis=1, out=TARGET_SCORES)
        return TargetHead(w.nodes, w.new_inits, w.new_weights, symbols,
                          "sigmoid" if activation == "Sigmoid" else "softmax", None, "sequence",
                          f"the symbol's logit at step {target.position}")
    log_p = w.op("LogSoftmax", logits, axis=-1)
    greedy = w.op("OneHot", w.op("ArgMax", logits, axis=-1, keepdims=0), w.const(symbols, np.int64),
                  w.const([0.0, 1.0]), axis=-1)
    w.reduce("ReduceSum", w.op("Mul", log_p, greedy), [1, 2], keepdims=1, out=f"{TARGET_SCORES}_3d")
    w.op("Flatten", f"{TARGET_SCORES}_3d", out=TARGET_SCORES, axis=1)
    return TargetHead(w.nodes, w.new_inits, w.new_weights, 1, "identity", ["greedy sequence log-probability"],
                      "sequence", "the sum over steps of the log-probability of the greedy symbol")


def _embedding(w: GraphWriter, output, shape, like) -> TargetHead:
    vector = np.asarray(like, np.float64).reshape(-1)
    if len(shape) != 2 or shape[1] != vector.size:
        raise ConvlensError(f"The vector to compare with has {vector.size} values; the output {output!r} is "
                            f"{tuple(shape)}: give a vector of its length, or choose the embedding with --scores.")
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise ConvlensError("The vector to compare with is all zeros; a cosine similarity with it is undefined.")
    length = w.op("Sqrt", w.reduce("ReduceSum", w.op("Mul", output, output), [1], keepdims=1))
    unit = w.op("Div", output, w.op("Add", length, w.const(1e-12)))
    w.op("MatMul", unit, w.const((vector / norm).astype(np.float32).reshape(-1, 1)), out=TARGET_SCORES)
    return TargetHead(w.nodes, w.new_inits, w.new_weights, 1, "identity", ["cosine similarity"], "embedding",
                      "the cosine similarity of the output with the given vector")


def greedy_decode(step_scores: np.ndarray, names: list[str] | None) -> str:
    """CTC greedy decoding of one (T, C) row: best symbol per step, repeats merged, blanks (symbol 0) dropped.
    `names` are the file's character list: C names, or C - 1 (the blank first is implied) or C - 2 (and a space
    last), as PaddleOCR stores them; otherwise the symbols are written as numbers."""
    symbols = step_scores.shape[-1]
    best = np.argmax(step_scores, axis=-1)
    kept = [int(s) for i, s in enumerate(best) if s != 0 and (i == 0 or s != best[i - 1])]
    if names and len(names) in (symbols - 2, symbols - 1, symbols):
        full = list(names) if len(names) == symbols else ["<blank>", *names, " "][:symbols]
        return "".join(full[s] for s in kept)
    return " ".join(str(s) for s in kept)
