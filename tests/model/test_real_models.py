"""Real trained models that ship inside a package: PaddleOCR's v4 text detector and recognizer and its angle
classifier (paddle2onnx files at opset 11-12, inside the rapidocr-onnxruntime wheel, installed with --no-deps by
the test command). Described with their own recipes (BGR; ImageNet mean/std for the detector, [-1, 1] for the
others), they must read a line of text convlens draws here, and each target's gradient must agree with central
finite differences of the same objective through ONNX Runtime."""
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
import pytest

import convlens
from convlens.engine.runtime.program import program

MODELS = Path(find_spec("rapidocr_onnxruntime").submodule_search_locations[0]) / "models"
TEXT = "convlens 42"
RECOGNIZER = dict(scale="1/127.5", mean="1,1,1", channel_order="bgr")  # PaddleOCR: BGR, (x / 255 - 0.5) / 0.5
DETECTOR = dict(scale="1/255", mean="0.485,0.456,0.406", std="0.229,0.224,0.225", channel_order="bgr")


def _line(height=64, width=256) -> np.ndarray:
    """Black text on white, RGB."""
    page = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(page, TEXT, (8, int(height * 0.69)), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * height / 64, (0, 0, 0), 2)
    return page


def _objective(model, pixels: np.ndarray) -> float:
    return float(program(model, [model.meta.logits], pixels.shape[:2]).run(pixels[None])[model.meta.logits][0, 0])


def _directional_check(model, pixels, h, seed):
    """(the attribution along a random direction, the central difference of the objective along it)."""
    (a,) = convlens.saliency(model, pixels)
    v = np.random.default_rng(seed).normal(size=pixels.shape).astype(np.float32)
    fd = (_objective(model, pixels + h * v) - _objective(model, pixels - h * v)) / (2 * h)
    return float((a.attribution * v).sum()), fd


def test_the_recognizer_reads_the_line_and_its_sequence_gradient_is_the_finite_difference():
    model = convlens.load(MODELS / "ch_PP-OCRv4_rec_infer.onnx", **RECOGNIZER)
    line = cv2.resize(_line(), (192, 48), interpolation=cv2.INTER_AREA).astype(np.float32)  # PaddleOCR's 48 px
    assert model.target.kind == "sequence"
    assert convlens.api.decoded(model, [line]) == [TEXT]  # names from the file's `character` list, U+3000 kept
    analytic, fd = _directional_check(model, line, 0.02, seed=0)
    assert fd == pytest.approx(analytic, rel=0.05)


def test_the_detectors_region_objective_and_its_gradient():
    import onnx
    import onnxruntime as ort

    model = convlens.load(MODELS / "ch_PP-OCRv4_det_infer.onnx", **DETECTOR)
    page = _line().astype(np.float32)
    x = ((page[..., ::-1] / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None]
    # the file's own logits, through ONNX Runtime: its last Sigmoid's input made an output (the probabilities
    # saturate at 1.0 in float32, so they cannot be inverted)
    proto = onnx.load(str(MODELS / "ch_PP-OCRv4_det_infer.onnx"))
    sigmoid = next(n for n in proto.graph.node if n.output[0] == proto.graph.output[0].name)
    assert sigmoid.op_type == "Sigmoid"
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(sigmoid.input[0]))
    session = ort.InferenceSession(proto.SerializeToString())
    p, logit = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    expected = logit.astype(np.float64)[p > 0.5].sum()  # the map's logit where the detector sees text
    assert model.target.kind == "dense" and (p > 0.5).any()
    assert _objective(model, page) == pytest.approx(expected, rel=1e-3)
    analytic, fd = _directional_check(model, page, 0.02, seed=1)
    assert fd == pytest.approx(analytic, rel=0.1)  # float32 differences of a sum near 1e5: a looser check
    maps, _ = convlens.cam(model, page)
    assert maps[0][0].layer_rule.startswith("auto, class-map head")  # not the map's own logits


def test_the_angle_classifier_tells_upright_from_upside_down():
    model = convlens.load(MODELS / "ch_ppocr_mobile_v2.0_cls_infer.onnx", **RECOGNIZER)
    line = cv2.resize(_line(), (192, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert model.target is None and model.classes == 2  # PaddleOCR's labels: 0 and 180 degrees
    assert convlens.cam(model, line)[1][0][0][0] == 0
    assert convlens.cam(model, line[::-1, ::-1].copy())[1][0][0][0] == 1
