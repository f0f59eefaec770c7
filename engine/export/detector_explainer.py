"""`convlens export --box`: a detector's detections and one heatmap per detection in one standalone ONNX graph.

The graph's contract (README, "Exported explainers"):
  inputs   image     uint8 [1, H, W, 3], RGB pixels of any size (one image per run)
  outputs  boxes     float32 [K, 4]: x1, y1, x2, y2 in the fed image's pixels, highest score first
           scores    float32 [K]
           classes   int64 [K]
           heatmaps  float32 [K, H, W] in [0, 1]: the CAM method's map of each detection, at the fed size
           overlays  uint8 [K, H, W, 3], drawn as `convlens cam` draws its overlay PNG (without the box)
K is at most --max-boxes (--box K: the K-th detection alone, or none where the image has fewer). Inside: the image
is stretched to the model's size; the model runs once and its head is decoded as convlens decodes it (YOLO-style:
best class per candidate, ONNX NonMaxSuppression made class-aware by offsetting each box by its class, as
ultralytics does; an NMS-free YOLO's top-k; DETR-style: softmax, TopK, no NMS); then a Loop runs, per detection, the
model and its backward graph for that detection's logit, one image per pass (the detectors ultralytics exports fix
the batch at 1), and the map at the layer: with --layer auto on a YOLO-style head, the feature map the detection's
level reads, as `convlens cam --box` picks it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConvlensError
from ..graph import float_info, needed_nodes
from ..model.detections import MAX_WH, Detection
from ..model.model import Model
from ..model.output_targets import OutputTarget, flat_logits, logit_count
from ..runtime.adapter import PIXELS, adapter_nodes
from ..runtime.program import GradRequest, forward_and_backward
from ..techniques.cam import resolve_layer
from ..techniques.cam_methods import CAM_METHODS
from ..writer import GraphWriter
from .explainer import (EXPORT_OPSET, IMAGE, Explainer, _cam_map, _heatmap, _image_nodes, _model_at_export_opset,
                        _normalized, _overlay, _topological, exported_size)

WEIGHTS, OBJECTIVE = "detector_objective_weights", "detector_objective"
OUTPUTS = ("boxes", "scores", "classes", "heatmaps", "overlays")


def export_detector_explainer(model: Model, box="all", method: str = "gradcam", layer: str | None = "auto",
                              max_boxes: int = 10, conf: float = 0.25, iou: float = 0.7) -> Explainer:
    head = model.detector
    if head is None:
        raise ConvlensError("export --box applies to detectors (a YOLO-style or DETR-style head); this model has none.")
    row = CAM_METHODS.get(method)
    if row is None or row.onnx_map is None:
        exportable = [m for m, r in CAM_METHODS.items() if r.onnx_map is not None]
        raise ConvlensError(f"export --box writes a CAM map per detection; {method!r} is not one of "
                            f"{', '.join(exportable)}.")
    for name, value in (("--conf", conf), ("--iou", iou)):
        if not 0 <= value <= 1:
            raise ConvlensError(f"{name} must be between 0 and 1, not {value}.")
    if max_boxes < 1:
        raise ConvlensError(f"--max-boxes must be 1 or more, not {max_boxes}.")
    text = "all" if box is None else str(box)
    if text != "all" and not text.isdigit():
        raise ConvlensError(f"export --box takes K (a detection's rank by score, 0-based) or all, not {text!r}: a "
                            "box drawn on one photo does not carry over to the images an explainer is fed.")
    rank = None if text == "all" else int(text)
    size = exported_size(model)
    model = model.with_tensors_renamed({IMAGE, *OUTPUTS})  # a file's input called "image", an output "boxes"
    head = model.detector
    levels = _levels(model, layer, size)

    e = GraphWriter(EXPORT_OPSET, scope="detector")
    e.op("Identity", _image_nodes(e, size), out=PIXELS)
    nodes, small = _model_at_export_opset(model)
    a_nodes, a_inits = adapter_nodes(model.input_spec)
    decode = _decode_queries if head.queries else _decode_objectness if head.objectness else \
        _decode_top_k if head.end2end else _decode_yolo
    decoded = decode(e, head, size, max_boxes if rank is None else rank + 1, conf, iou)
    anchor, flat_index, boxes, scores, classes = decoded
    if rank is not None:
        anchor, flat_index, boxes, scores, classes = (e.op("Slice", t, e.ints([rank]), e.ints([rank + 1]), e.ints([0]))
                                                      for t in decoded)
    level_of = _level_ids(e, anchor, levels)
    forward = needed_nodes(a_nodes + nodes, head.tensors, stop_at=[PIXELS])

    # the per-detection pass: forward and backward of one logit, the map at the detection's level's layer
    w = GraphWriter(EXPORT_OPSET, scope="detector_objective")
    w.op("ReduceSum", w.op("Mul", flat_logits(w, head), WEIGHTS), out=OBJECTIVE, keepdims=0)
    graph = forward_and_backward(model.runtime, a_nodes + nodes + w.nodes, {**small, **a_inits, **w.new_inits},
                                 model.weights, [info.tensor for _, info in levels], size,
                                 [float_info(WEIGHTS, [1, None])], [helper.make_opsetid("", EXPORT_OPSET)],
                                 GradRequest(OBJECTIVE, tuple(info.tensor for _, info in levels)), copy_weights=False)
    body, body_inits = _per_detection_body(model, graph, levels, flat_index, level_of, method, size)
    count = e.op("Gather", e.op("Shape", anchor), e.ints(0), axis=0)
    e.nodes.append(helper.make_node("Loop", [count, ""], ["detector_heatmaps"], name="detector_loop", body=body))
    e.op("Identity", "detector_heatmaps", out="heatmaps")
    _overlay(e, "heatmaps")
    for name, tensor in (("boxes", boxes), ("scores", scores), ("classes", classes), ("overlays", "overlay")):
        e.op("Identity", tensor, out=name)
    inits = {**small, **a_inits, **graph.inits, **e.new_inits, **body_inits}
    proto = _assemble(forward + e.nodes, body, inits, {**graph.weights, **e.new_weights})
    notes = ["the explainer takes one image per run (N = 1) and writes one heatmap per detection"]
    picked = ", ".join(info.name for _, info in levels)
    return Explainer(proto, method, picked, notes)


def _levels(model: Model, layer, size) -> list[tuple[int, object]]:
    """(first candidate, LayerInfo) per level whose map explains the detections from that candidate on: with
    `auto` on a YOLO-style head, each level's feature map; otherwise one layer, as a detection's view picks it."""
    if layer in (None, "auto") and model.detector_levels:
        infos = []
        for start, _, tensor in model.detector_levels:
            info = next((l for l in model.layers if l.tensor == tensor), None)
            if info is None:
                break
            infos.append((start, info))
        else:
            return infos
    probe = Detection((0.0, 0.0, 1.0, 1.0), 0, 0.0, 0, frame=tuple(size))
    view = model.explaining(OutputTarget(detections=(probe,)))
    return [(0, view.layer(resolve_layer(view, layer, size)))]


def _decode_yolo(e: GraphWriter, head, size, keep: int, conf: float, iou: float):
    """(anchor, flat logit index, boxes in the fed image's pixels, scores, classes) of the kept detections."""
    probabilities = e.op("Slice", head.raw, e.ints([4]), e.ints([2 ** 62]), e.ints([1]))  # (1, C, A)
    score = e.reduce("ReduceMax", probabilities, [1], keepdims=1)  # (1, 1, A)
    cls = e.op("ArgMax", probabilities, axis=1, keepdims=0)  # (1, A)
    rows = e.op("Transpose", e.op("Slice", head.raw, e.ints([0]), e.ints([4]), e.ints([1])), perm=[0, 2, 1])
    corners = rows if head.corners else _corners(e, rows, 2)  # (1, A, 4)
    anchor, classes, scores, on_input = _class_aware_nms(e, corners, score, cls, keep, iou, conf)
    flat_index = e.op("Add", e.op("Mul", classes, e.const(head.anchors, np.int64)), anchor)
    return anchor, flat_index, e.op("Mul", on_input, _to_image(e, size)), scores, classes


def _decode_top_k(e: GraphWriter, head, size, keep: int, conf: float, iou: float):
    """The same for an NMS-free head (detections.decode_top_k): the 300 candidates of highest best-class score,
    the 300 best (candidate, class) pairs among them, those above `conf`, the first `keep`."""
    classes_n = head.classes
    probabilities = e.op("Transpose", e.op("Slice", head.raw, e.ints([4]), e.ints([2 ** 62]), e.ints([1])),
                         perm=[0, 2, 1])  # (1, A, C)
    rows = e.op("Reshape", probabilities, e.ints([-1, classes_n]))  # (A, C)
    k = min(300, head.anchors)
    _, first = e.ops("TopK", [e.reduce("ReduceMax", rows, [1], keepdims=0), e.ints([k])], 2, axis=0, largest=1,
                     sorted=1)
    pairs = e.op("Reshape", e.op("Gather", rows, first, axis=0), e.ints([-1]))  # (k * C)
    values, flat = e.ops("TopK", [pairs, e.ints([k])], 2, axis=0, largest=1, sorted=1)
    passes = e.op("Greater", values, e.const(conf))
    values, flat = (e.op("Compress", t, passes, axis=0) for t in (values, flat))
    scores, flat = (e.op("Slice", t, e.ints([0]), e.ints([keep]), e.ints([0])) for t in (values, flat))
    width = e.const(classes_n, np.int64)
    anchor = e.op("Gather", first, e.op("Div", flat, width), axis=0)
    classes = e.op("Mod", flat, width)
    rows4 = e.op("Reshape", e.op("Transpose", e.op("Slice", head.raw, e.ints([0]), e.ints([4]), e.ints([1])),
                                 perm=[0, 2, 1]), e.ints([-1, 4]))  # (A, 4)
    picked = e.op("Gather", rows4, anchor, axis=0)
    on_input = picked if head.corners else _corners(e, picked, 1)
    flat_index = e.op("Add", e.op("Mul", classes, e.const(head.anchors, np.int64)), anchor)
    return anchor, flat_index, e.op("Mul", on_input, _to_image(e, size)), scores, classes


def _decode_objectness(e: GraphWriter, head, size, keep: int, conf: float, iou: float):
    """The same for a YOLOv5-style head (N, A, 5 + C): objectness above `conf`, score objectness x class."""
    objectness = e.op("Slice", head.raw, e.ints([4]), e.ints([5]), e.ints([2]))  # (1, A, 1)
    probabilities = e.op("Mul", e.op("Slice", head.raw, e.ints([5]), e.ints([2 ** 62]), e.ints([2])), objectness)
    best = e.reduce("ReduceMax", probabilities, [2], keepdims=0)  # (1, A)
    cls = e.op("ArgMax", probabilities, axis=2, keepdims=0)  # (1, A)
    passes = e.op("Greater", e.op("Squeeze", objectness, e.ints([2])), e.const(conf))
    score = e.op("Unsqueeze", e.op("Where", passes, best, e.const(0.0)), e.ints([1]))  # (1, 1, A)
    corners = _corners(e, e.op("Slice", head.raw, e.ints([0]), e.ints([4]), e.ints([2])), 2)  # (1, A, 4)
    anchor, classes, scores, on_input = _class_aware_nms(e, corners, score, cls, keep, iou, conf)
    flat_index = e.op("Add", e.op("Mul", anchor, e.const(head.classes + 5, np.int64)),
                      e.op("Add", classes, e.const(5, np.int64)))
    return anchor, flat_index, e.op("Mul", on_input, _to_image(e, size)), scores, classes


def _decode_queries(e: GraphWriter, head, size, keep: int, conf: float, iou: float):
    """The same for a DETR-style pair: per query its best real class by softmax, the top `keep` above `conf`."""
    probabilities = e.op("Softmax", head.logits, axis=-1)  # (1, Q, C + 1)
    real = e.op("Slice", probabilities, e.ints([0]), e.ints([head.classes]), e.ints([2]))
    score = e.op("Reshape", e.reduce("ReduceMax", real, [2], keepdims=0), e.ints([-1]))
    cls = e.op("Reshape", e.op("ArgMax", real, axis=2, keepdims=0), e.ints([-1]))
    top, order = e.ops("TopK", [score, e.ints([min(keep, head.anchors)])], 2, axis=0, largest=1, sorted=1)
    anchor = e.op("Compress", order, e.op("Greater", top, e.const(conf)), axis=0)
    classes = e.op("Gather", cls, anchor, axis=0)
    scores = e.op("Gather", score, anchor, axis=0)
    fractions = _corners(e, e.op("Gather", e.op("Reshape", head.raw, e.ints([-1, 4])), anchor, axis=0), 1)
    image_hw = e.op("Cast", e.op("Shape", IMAGE, start=1, end=3), to=TensorProto.FLOAT)
    scale = e.op("Gather", image_hw, e.ints([1, 0, 1, 0]), axis=0)  # fractions of the input are of the image
    flat_index = e.op("Add", e.op("Mul", anchor, e.const(head.classes + 1, np.int64)), classes)
    return anchor, flat_index, e.op("Mul", fractions, scale), scores, classes


def _corners(e: GraphWriter, boxes: str, axis: int) -> str:
    """Centre x, centre y, width, height along `axis` -> x1, y1, x2, y2."""
    xy = e.op("Slice", boxes, e.ints([0]), e.ints([2]), e.ints([axis]))
    half = e.op("Mul", e.op("Slice", boxes, e.ints([2]), e.ints([4]), e.ints([axis])), e.const(0.5))
    return e.op("Concat", e.op("Sub", xy, half), e.op("Add", xy, half), axis=axis)


def _class_aware_nms(e: GraphWriter, corners: str, score: str, cls: str, keep: int, iou: float, conf: float):
    """(candidate, class, score, box) of the kept detections, highest score first: corners (1, A, 4), score
    (1, 1, A), cls (1, A); each box offset by its class x MAX_WH, so boxes of two classes never overlap, as
    ultralytics makes its NMS class-aware."""
    offset = e.op("Unsqueeze", e.op("Mul", e.op("Cast", cls, to=TensorProto.FLOAT), e.const(float(MAX_WH))),
                  e.ints([2]))
    selected = e.op("NonMaxSuppression", e.op("Add", corners, offset), score, e.ints([keep]),
                    e.const([iou]), e.const([conf]))  # (K, 3): batch, class, candidate
    anchor = e.op("Gather", selected, e.ints(2), axis=1)
    classes = e.op("Gather", e.op("Reshape", cls, e.ints([-1])), anchor, axis=0)
    scores = e.op("Gather", e.op("Reshape", score, e.ints([-1])), anchor, axis=0)
    return anchor, classes, scores, e.op("Gather", e.op("Reshape", corners, e.ints([-1, 4])), anchor, axis=0)


def _to_image(e: GraphWriter, size) -> str:
    """(4,) factors from the model input's pixels to the fed image's: x, y, x, y (the image is stretched)."""
    image_hw = e.op("Cast", e.op("Shape", IMAGE, start=1, end=3), to=TensorProto.FLOAT)
    per_pixel = e.op("Div", image_hw, e.const([float(size[0]), float(size[1])]))  # (sy, sx)
    return e.op("Gather", per_pixel, e.ints([1, 0, 1, 0]), axis=0)


def _level_ids(e: GraphWriter, anchor: str, levels) -> str:
    """Per detection, the index of the level its candidate belongs to (levels cover consecutive candidates)."""
    level = e.op("Mul", anchor, e.const(0, np.int64))
    for start, _ in levels[1:]:
        level = e.op("Add", level, e.op("Cast", e.op("GreaterOrEqual", anchor, e.const(start, np.int64)),
                                        to=TensorProto.INT64))
    return level


def _per_detection_body(model: Model, graph, levels, flat_index: str, level_of: str, method: str, size):
    """The Loop's body: detection k's one-hot objective row, the forward and backward graph, every level's
    normalized map at the fed size, and the one of k's level. Every tensor it makes is renamed under 'box/',
    so that it reads the image, the weights and the decoded detections from the outer graph."""
    b = GraphWriter(EXPORT_OPSET, scope="detector_box")
    k = "detector_k"
    index = b.op("Unsqueeze", b.op("Gather", flat_index, k, axis=0), b.ints([0]))
    depth = b.const(logit_count(model.detector), np.int64)
    b.op("OneHot", index, depth, b.const([0.0, 1.0]), axis=-1, out=WEIGHTS)  # (1, F)
    before = list(b.nodes)
    b.nodes = []
    maps = []
    for n, (_, info) in enumerate(levels):
        raw = _cam_map(b, model, info, graph.grads[info.tensor], method, size)
        maps.append(_heatmap(b, _normalized(b, raw, f"level{n}")))  # (1, H, W)
    stacked = b.op("Concat", *maps, axis=0) if len(maps) > 1 else maps[0]
    chosen = b.op("Gather", stacked, b.op("Gather", level_of, k, axis=0), axis=0) if len(maps) > 1 else \
        b.op("Squeeze", stacked, b.ints([0]))
    b.op("Identity", "detector_cond_in", out="detector_cond_out")
    b.op("Identity", chosen, out="detector_heatmap")
    nodes = _renamed(before + graph.nodes + b.nodes, "box/", keep={"detector_cond_out", "detector_heatmap"})
    body = helper.make_graph(
        _topological(nodes), "detector_per_box",
        [helper.make_tensor_value_info(k, TensorProto.INT64, []),
         helper.make_tensor_value_info("detector_cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("detector_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("detector_heatmap", TensorProto.FLOAT, ["H", "W"])])
    return body, b.new_inits


def _renamed(nodes: list, prefix: str, keep: set) -> list:
    """The nodes with every tensor they make renamed `prefix + name` (but `keep`), references included."""
    made = {o for n in nodes for o in n.output if o and o not in keep}
    out = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [prefix + i if i in made else i for i in node.input]
        copy.output[:] = [prefix + o if o in made else o for o in node.output]
        copy.name = prefix + node.name if node.name else ""
        out.append(copy)
    return out


def _assemble(nodes: list, body, inits: dict, weights: dict) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input} | {i for n in body.node for i in n.input}
    initializers = [t for name, t in inits.items() if name in used]
    initializers += [numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in weights.items()
                     if name in used]
    inputs = [helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, [1, "H", "W", 3])]
    outputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"]),
               helper.make_tensor_value_info("classes", TensorProto.INT64, ["K"]),
               helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["K", "H", "W"]),
               helper.make_tensor_value_info("overlays", TensorProto.UINT8, ["K", "H", "W", 3])]
    graph = helper.make_graph(_topological(nodes), "convlens_detector_explainer", inputs, outputs,
                              initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)], producer_name="convlens")
    proto.ir_version = 8
    return proto
