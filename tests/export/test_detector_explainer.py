"""`convlens export --box`: a detector explainer (boxes, scores, classes, one heatmap and overlay per detection)
run by ONNX Runtime alone gives the detections and maps `convlens cam --box all` gives, on the YOLOv8n files
(without NMS and with NMS inside; each detection's map at its level's feature map), the YOLOv5-style file and the
DETR file.
"""
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from detector_files import DETR_SIZE, V5_SIZE, YOLO_SIZE

import convlens
from convlens.cli import main
from convlens.engine.render.pictures import overlay


def _photo(size):
    return cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def _run(path, image):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image[None]})))


def _check_against_cam(explainer, source, image, conf, iou=0.7, map_tol=1e-4, **options):
    out = _run(explainer, image)
    found = convlens.api.detections(source, image.astype(np.float32), conf=conf, iou=iou, **options)[:10]
    maps, _ = convlens.cam(source, image.astype(np.float32), box="all", conf=conf, iou=iou, **options)
    assert 2 <= len(found) == len(out["boxes"]) == len(out["heatmaps"]) == len(out["overlays"])
    assert list(out["classes"]) == [d.cls for d in found]
    np.testing.assert_allclose(out["scores"], [d.score for d in found], rtol=1e-4)
    np.testing.assert_allclose(out["boxes"], [d.box for d in found], atol=1e-3)
    for k, result in enumerate(maps[0][:10]):
        assert np.abs(out["heatmaps"][k] - result.heatmap).max() <= map_tol, k
        drawn = overlay(image.astype(np.float32), out["heatmaps"][k]).astype(int)
        assert np.abs(out["overlays"][k].astype(int) - drawn).max() <= 1
    return out, maps


@pytest.mark.parametrize("which", ["raw", "nms"])
def test_a_yolo_explainer_gives_convlens_detections_and_each_boxs_map(yolo, tmp_path, which):
    _, raw, nms = yolo
    source = raw if which == "raw" else nms
    path = tmp_path / "explainer.onnx"
    explainer = convlens.export(source, path, box="all", scale="1/255")
    onnx.checker.check_model(onnx.load(str(path)))
    assert {n.op_type for n in explainer.proto.graph.node} >= {"NonMaxSuppression", "Loop"}
    out, maps = _check_against_cam(path, source, _photo(YOLO_SIZE), 0.25, scale="1/255")
    assert len({r.layer for r in maps[0]}) >= 2, "the detections should come from more than one level"


def test_an_nms_free_yolo_explainer_decodes_by_top_k(yolo26, tmp_path):
    _, _, end2end = yolo26
    path = tmp_path / "explainer.onnx"
    convlens.export(end2end, path, box="all", scale="1/255")
    # measured 4e-5 to 1.8e-4 between the two graphs' maps (1e-4 on YOLOv8n): float32 noise of a deeper head
    _check_against_cam(path, end2end, _photo(YOLO_SIZE), 0.25, map_tol=2.5e-4, scale="1/255")


def test_a_yolov5_style_explainer(yolov5_style, tmp_path):
    _, source = yolov5_style
    path = tmp_path / "explainer.onnx"
    convlens.export(source, path, box="all", conf=0.1, iou=0.45, scale="1/255")
    _check_against_cam(path, source, _photo(V5_SIZE), 0.1, 0.45, scale="1/255")


def test_a_detr_explainer_and_box_k(detr, tmp_path):
    _, source = detr
    path = tmp_path / "explainer.onnx"
    convlens.export(source, path, box="all", conf=0.605, scale="1/255")
    out, _ = _check_against_cam(path, source, _photo(DETR_SIZE), 0.605, scale="1/255")
    convlens.export(source, tmp_path / "second.onnx", box=1, conf=0.605, scale="1/255")
    second = _run(tmp_path / "second.onnx", _photo(DETR_SIZE))
    assert len(second["boxes"]) == 1 and second["classes"][0] == out["classes"][1]
    np.testing.assert_allclose(second["heatmaps"][0], out["heatmaps"][1], atol=1e-5)


def test_the_cli_and_its_refusals(yolo, detr, tmp_path, capsys):
    _, raw, _ = yolo
    out = tmp_path / "e.onnx"
    assert main(["export", str(raw), "--scale", "1/255", "--box", "all", "--max-boxes", "3", "-o", str(out),
                 "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["outputs"] == ["boxes", "scores", "classes", "heatmaps", "overlays"]
    big = cv2.resize(_photo(YOLO_SIZE), (240, 200))  # another size: boxes and maps follow the fed image
    result = _run(out, big)
    assert len(result["boxes"]) == 3 and result["heatmaps"].shape == (3, 200, 240)
    assert main(["export", str(raw), "--scale", "1/255", "--box", "10,10,50,50", "-o", str(tmp_path / "x.onnx")]) == 1
    assert "export --box takes K" in capsys.readouterr().err
    assert main(["export", str(raw), "--scale", "1/255", "--box", "all", "--method", "vanilla",
                 "-o", str(tmp_path / "y.onnx")]) == 1
    assert "export --box writes a CAM map" in capsys.readouterr().err
    assert main(["export", str(raw), "--scale", "1/255", "--box", "all", "--box-objective", "score+iou",
                 "-o", str(tmp_path / "z.onnx")]) == 1
    assert "--box-objective score+iou applies to cam and saliency" in capsys.readouterr().err
    assert main(["export", str(raw), "--scale", "1/255", "--box", "all", "-o", str(out)]) == 1  # not overwritten
    assert "exists" in capsys.readouterr().err


def test_the_report_lists_a_detectors_detections_and_their_maps(yolo, tmp_path):
    _, raw, _ = yolo
    photo = _photo(YOLO_SIZE).astype(np.float32)
    model = convlens.load(raw, scale="1/255")
    page, results = convlens.api.report(model, [photo], filter_steps=2)
    found = convlens.api.detections(model, photo)
    (entry,) = results["images"]
    assert [d["score"] for d in entry["detections"]] == pytest.approx([d.score for d in found[:10]])
    assert [c["detection"] for c in entry["cams"] if c["method"] == "gradcam"] == [0, 1, 2]
    maps, _ = convlens.cam(model, photo, box="all")
    for cam in (c for c in entry["cams"] if c["method"] == "gradcam"):
        heat = maps[0][cam["detection"]].heatmap
        assert cam["peak_yx"] == list(np.unravel_index(np.argmax(heat), heat.shape))
    assert page.count("<figure") >= 4 and "box (x1, y1, x2, y2)" in page
