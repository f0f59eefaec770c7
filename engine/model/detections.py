"""Detectors: the YOLO-style or DETR-style head in a graph, its candidates decoded and kept by convlens's own NMS.

The head is found where ultralytics' exporter writes it (YOLOv8, YOLO11): a Concat on axis 1 of the boxes
(N, 4, A) (centre x, centre y, width, height in input pixels) and a Sigmoid of the class logits (N, C, A), one
column per candidate (anchor). A file with NonMaxSuppression inside holds the same head before it: the head is
read there, and convlens decodes it itself, so a file with NMS and one without give the same detections.
Decoding follows ultralytics' non_max_suppression (best class per candidate, score above `conf`, class-aware
greedy NMS at `iou`, at most `max_det`); a detection is explained by its class's logit (before the sigmoid) at
its candidate.

A DETR-style head is a pair of outputs: class logits (N, Q, C + 1), the last class meaning "no object", and
boxes (N, Q, 4) made by a Sigmoid (centre x, centre y, width, height as fractions of the input). Decoding follows
transformers' post_process_object_detection: softmax over the C + 1 classes, best of the first C per query,
score above `conf`, no NMS (the set prediction has none); a detection is explained by its class's logit (before
the softmax) at its query.

A YOLOv5/v7-style head with objectness is one output (N, A, 5 + C): centre x, centre y, width, height in input
pixels, the objectness and the class probabilities, every column a Sigmoid of the per-level convolution's output
(N, na, ny, nx, 5 + C) decoded, the levels concatenated. Decoding follows YOLOv5's non_max_suppression: a
candidate needs objectness above `conf`, its score is objectness x class probability, best class, above `conf`,
then the class-aware NMS; a detection is explained by its class's logit (before the sigmoid) at its candidate,
read from the levels' pre-sigmoid tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import producers

MAX_WH = 7680  # ultralytics' per-class offset for class-aware NMS


@dataclass(frozen=True)
class DetectionHead:
    raw: str  # (N, 4 + C, A): boxes then class probabilities
    logits: str  # (N, C, A): the class logits before the sigmoid
    classes: int
    anchors: int
    corners: bool = False  # boxes as x1, y1, x2, y2 (ultralytics' exports with NMS inside), else centre and size
    queries: bool = False  # DETR-style: `raw` the boxes (N, Q, 4) as fractions, `logits` (N, Q, C + 1)
    level_logits: tuple = ()  # YOLOv5-style: the levels' pre-sigmoid (N, na, ny, nx, 5 + C); `raw` is (N, A, 5 + C)
    end2end: bool = False  # YOLOv10/YOLO26 exported NMS-free: a TopK follows the head, and decoding is top-k

    @property
    def objectness(self) -> bool:
        return bool(self.level_logits)

    @property
    def row_major(self) -> bool:
        """Candidates along axis 1 of `raw` (DETR, YOLOv5), rather than axis 2 (YOLOv8)."""
        return self.queries or self.objectness

    @property
    def tensors(self) -> list[str]:
        """The tensors decoding reads."""
        return [self.raw, self.logits] if self.queries else [self.raw]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the model input's pixels (the photo's, once placed)
    cls: int
    score: float
    anchor: int  # the candidate's column in the head
    input_box: tuple | None = None  # the box in the model input's pixels, where `box` is the photo's
    frame: tuple | None = None  # the model input's (H, W), which a DETR-style head's fractions are of


def find_detection_head(nodes, shapes: dict, outputs=()) -> DetectionHead | None:
    """The YOLO-style head or, among the graph's `outputs`, the DETR-style pair (module docstring), or None.
    `shapes` are batch-1 shapes at some input size."""
    made = producers(nodes)
    return _yolo_head(nodes, made, shapes) or _query_head(made, shapes, outputs) or \
        _objectness_head(made, shapes, outputs)


def _objectness_head(made: dict, shapes: dict, outputs) -> DetectionHead | None:
    for out in outputs:
        shape = shapes.get(out)
        if not _shape3(shape) or shape[2] < 6:
            continue
        node = made.get(out)
        parts = list(node.input) if node is not None and node.op_type == "Concat" else [out]
        levels = [_sigmoid_above(made, part, shapes, shape[2]) for part in parts]
        if any(level is None for level in levels):
            continue
        counts = [int(np.prod(shapes[level][1:4])) for level in levels]
        if sum(counts) == shape[1]:
            return DetectionHead(out, "", shape[2] - 5, shape[1], level_logits=tuple(levels))
    return None


def _sigmoid_above(made: dict, tensor: str, shapes: dict, columns: int, depth: int = 16) -> str | None:
    """The input of the Sigmoid of a (N, na, ny, nx, columns) tensor upstream of `tensor`, within `depth` nodes."""
    queue, seen = [tensor], set()
    while queue and len(seen) < depth:
        node = made.get(queue.pop(0))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Sigmoid":
            shape = shapes.get(node.input[0])
            if shape and len(shape) == 5 and shape[4] == columns and all(isinstance(d, int) for d in shape[1:]):
                return node.input[0]
            continue
        queue += [i for i in node.input if i]
    return None


def _query_head(made: dict, shapes: dict, outputs) -> DetectionHead | None:
    boxes = [o for o in outputs if _shape3(shapes.get(o), 4) and made.get(o) is not None
             and made[o].op_type == "Sigmoid"]
    for box in boxes:
        queries = shapes[box][1]
        logits = [o for o in outputs if o != box and _shape3(shapes.get(o)) and shapes[o][1] == queries
                  and shapes[o][2] >= 2]
        if len(logits) == 1:
            return DetectionHead(box, logits[0], shapes[logits[0]][2] - 1, queries, queries=True)
    return None


def _shape3(shape, last=None) -> bool:
    return bool(shape) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape[1:]) \
        and (last is None or shape[2] == last)


def _yolo_head(nodes, made: dict, shapes: dict) -> DetectionHead | None:
    for node in nodes:
        if node.op_type != "Concat" or len(node.input) != 2:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        boxes, scores = (shapes.get(t) for t in node.input)
        sigmoid = made.get(node.input[1])
        if axis not in (1, -2) or sigmoid is None or sigmoid.op_type != "Sigmoid" or not boxes or not scores:
            continue
        if len(boxes) == 3 and len(scores) == 3 and boxes[1] == 4 and isinstance(scores[1], int) \
                and isinstance(scores[2], int) and boxes[2] == scores[2]:
            return DetectionHead(node.output[0], sigmoid.input[0], scores[1], scores[2], _corners(made, node.input[0]),
                                 end2end=_topk_below(nodes, node.output[0]))
    return None


def _topk_below(nodes, tensor: str, depth: int = 64) -> bool:
    """Whether a TopK reads `tensor` or what is computed from it (within `depth` nodes): an NMS-free export's
    top-k selection (ultralytics' end2end), where a file with NMS inside has NonMaxSuppression instead."""
    readers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    queue, seen = [tensor], 0
    while queue and seen < depth:
        for n in readers.get(queue.pop(0), []):
            seen += 1
            if n.op_type == "NonMaxSuppression":
                return False
            if n.op_type == "TopK":
                return True
            queue += list(n.output)
    return False


def _corners(made: dict, boxes: str) -> bool:
    """Whether the head writes corners: ultralytics' dist2bbox concatenates (x1y1 + x2y2) / 2 and x2y2 - x1y1
    for centre and size (a Div first), or x1y1 = anchor - left-top and x2y2 = anchor + right-bottom (a Sub
    first), scaled by the strides."""
    node = made.get(boxes)
    if node is not None and node.op_type == "Mul":
        node = made.get(node.input[0])
    if node is None or node.op_type != "Concat" or not node.input:
        return False
    first = made.get(node.input[0])
    return first is not None and first.op_type == "Sub"


def decode(raw: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
           corners: bool = False) -> list[Detection]:
    """The detections of one image's head output (4 + C, A), highest score first."""
    box_rows, probabilities = raw[:4].T.astype(np.float64), raw[4:].T.astype(np.float64)
    cls = probabilities.argmax(1)
    score = probabilities[np.arange(len(cls)), cls]
    keep = np.flatnonzero(score > conf)
    if keep.size == 0:
        return []
    if corners:
        boxes = box_rows[keep]
    else:
        boxes = _xywh_to_corners(box_rows[keep])
    order = nms(boxes + (cls[keep] * MAX_WH)[:, None], score[keep], iou)[:max_det]
    return [Detection(tuple(float(v) for v in boxes[i]), int(cls[keep[i]]), float(score[keep[i]]), int(keep[i]))
            for i in order]


def decode_head(head: DetectionHead, values: dict, size: tuple[int, int], conf: float = 0.25, iou: float = 0.7,
                max_det: int = 300) -> list[Detection]:
    """The detections of one image from the head's tensors (`values`, batch row 0), boxes in the input's pixels
    (the input being `size` (H, W))."""
    if head.objectness:
        return decode_objectness(values[head.raw][0], conf, iou, max_det)
    if head.end2end:
        return decode_top_k(values[head.raw][0], conf, max_det, head.corners)
    if not head.queries:
        return decode(values[head.raw][0], conf, iou, max_det, head.corners)
    return decode_queries(values[head.logits][0], values[head.raw][0], size, conf, max_det)


def decode_top_k(raw: np.ndarray, conf: float = 0.25, max_det: int = 300, corners: bool = True) -> list[Detection]:
    """An NMS-free head's detections from its (4 + C, A) output, as ultralytics' end2end export selects them: the
    `max_det` candidates of highest best-class score, then the `max_det` best (candidate, class) pairs among them
    (a candidate may appear with two classes), those above `conf`; no NMS."""
    box_rows, probabilities = raw[:4].T.astype(np.float64), raw[4:].T.astype(np.float64)
    k = min(max_det, probabilities.shape[0])
    first = np.argsort(-probabilities.max(1), kind="stable")[:k]
    pairs = probabilities[first].ravel()
    best = np.argsort(-pairs, kind="stable")[:k]
    out = []
    for flat in best:
        if pairs[flat] <= conf:
            break
        candidate, cls = int(first[flat // probabilities.shape[1]]), int(flat % probabilities.shape[1])
        b = box_rows[candidate]
        box = b if corners else _xywh_to_corners(b[None])[0]
        out.append(Detection(tuple(float(v) for v in box), cls, float(pairs[flat]), candidate))
    return out


def decode_objectness(rows: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300) -> list[Detection]:
    """A YOLOv5-style head's detections from its (A, 5 + C) rows, highest score first (module docstring)."""
    r = rows.astype(np.float64)
    candidates = np.flatnonzero(r[:, 4] > conf)
    probabilities = r[candidates, 5:] * r[candidates, 4:5]
    cls = probabilities.argmax(1)
    score = probabilities[np.arange(len(cls)), cls]
    keep = score > conf
    candidates, cls, score = candidates[keep], cls[keep], score[keep]
    if candidates.size == 0:
        return []
    boxes = _xywh_to_corners(r[candidates, :4])
    order = nms(boxes + (cls * MAX_WH)[:, None], score, iou)[:max_det]
    return [Detection(tuple(float(v) for v in boxes[i]), int(cls[i]), float(score[i]), int(candidates[i]))
            for i in order]


def decode_queries(logits: np.ndarray, boxes: np.ndarray, size: tuple[int, int], conf: float = 0.25,
                   max_det: int = 300) -> list[Detection]:
    """A DETR-style head's detections: per query (row) its best real class by softmax probability, above `conf`,
    highest first; boxes from fractions of the (H, W) input to its pixels."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    cls = p[:, :-1].argmax(1)
    score = p[np.arange(len(cls)), cls]
    keep = np.flatnonzero(score > conf)
    keep = keep[np.argsort(-score[keep], kind="stable")][:max_det]
    height, width = size
    b = boxes.astype(np.float64)
    corners = np.stack([(b[:, 0] - b[:, 2] / 2) * width, (b[:, 1] - b[:, 3] / 2) * height,
                        (b[:, 0] + b[:, 2] / 2) * width, (b[:, 1] + b[:, 3] / 2) * height], axis=1)
    return [Detection(tuple(float(v) for v in corners[q]), int(cls[q]), float(score[q]), int(q), frame=tuple(size))
            for q in keep]


def _xywh_to_corners(rows: np.ndarray) -> np.ndarray:
    """(K, 4) centre x, centre y, width, height -> x1, y1, x2, y2."""
    xy, wh = rows[:, :2], rows[:, 2:4]
    return np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS: indices kept, highest score first; a box is dropped when its IoU with a kept one exceeds `iou`."""
    order = list(np.argsort(-scores, kind="stable"))
    kept = []
    while order:
        best, order = order[0], order[1:]
        kept.append(int(best))
        if order:
            rest = np.asarray(order)
            overlap = box_iou(boxes[best], boxes[rest])
            order = [int(i) for i, o in zip(rest, overlap) if o <= iou]
    return kept


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each of `others` (K, 4)."""
    others = np.atleast_2d(others)
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2, y2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def level_features(nodes, head: DetectionHead, shapes: dict) -> list[tuple[int, int, str]]:
    """Per level of the head (stride 8, 16, 32 in YOLOv8): (first candidate, end, the feature map the level's
    branches read). The logits concatenate one (N, C, h*w) block per level; walking up a block's branch, the
    feature map is the first tensor that a convolution outside the branch also reads (the box branch)."""
    if head.queries:
        return []  # one set of queries reads the whole encoded image: the auto rule's layer serves
    made = producers(nodes)
    if head.objectness:
        return _objectness_levels(made, head, shapes)
    readers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    concat = made.get(head.logits)
    if concat is None or concat.op_type != "Concat":
        return []
    levels, start = [], 0
    for block in concat.input:
        shape = shapes.get(block)
        if not shape or not isinstance(shape[-1], int):
            return []
        chain, tensor, found = set(), block, None
        for _ in range(64):
            node = made.get(tensor)
            if node is None:
                break
            chain.add(id(node))
            tensor = node.input[0]
            if any(r.op_type == "Conv" and id(r) not in chain for r in readers.get(tensor, [])):
                found = tensor
                break
        if found is None:
            return []
        levels.append((start, start + shape[-1], found))
        start += shape[-1]
    return levels if start == head.anchors else []


def _objectness_levels(made: dict, head: DetectionHead, shapes: dict) -> list[tuple[int, int, str]]:
    """A YOLOv5-style head's levels: each level's pre-sigmoid tensor comes (through a reshape and a transpose)
    from one convolution, whose input is the feature map the level reads."""
    levels, start = [], 0
    for tensor in head.level_logits:
        node = made.get(tensor)
        for _ in range(8):
            if node is None or node.op_type == "Conv":
                break
            node = made.get(node.input[0])
        if node is None or node.op_type != "Conv":
            return []
        count = int(np.prod(shapes[tensor][1:4]))
        levels.append((start, start + count, node.input[0]))
        start += count
    return levels
