"""Detectors: a YOLOv8n built by ultralytics from its yaml (seeded weights, its class head spread so that
detections score between 0.25 and 1) and exported by ultralytics' own exporter, with and without NMS inside
(tests/detector_files.py; the session fixture `yolo` in tests/conftest.py).

- convlens's decoding and NMS equal ultralytics' non_max_suppression on the same head output: boxes, classes,
  scores and the candidate behind each detection;
- Grad-CAM and the input gradient of a detection equal torch autograd of that candidate's class logit on the
  ultralytics model, at the feature map its level reads (which `--layer auto` picks);
- the file with NMS inside gives the same detections and maps as the one without;
- `convlens cam --box all` writes one overlay per detection with its box, a summary picture of them all, and lists
  the detections.
"""
import json
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from helpers import normalized

import convlens
from convlens.cli import main

from detector_files import YOLO_SIZE as SIZE
CONF, IOU = 0.25, 0.7
PHOTO = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
LEVEL_MODULES = (15, 18, 21)  # the neck outputs the three levels of YOLOv8's head read (strides 8, 16, 32)


def _x(photo=PHOTO):
    return torch.from_numpy(photo.transpose(2, 0, 1)[None].copy() / 255).float()


def _reference(net, photo=PHOTO):
    """ultralytics' own post-processing: (detections (K, 6), candidate index per detection, raw head output)."""
    from ultralytics.utils.nms import non_max_suppression

    with torch.no_grad():
        out = net(_x(photo))
    out = out[0] if isinstance(out, (tuple, list)) else out
    kept, index = non_max_suppression(out, CONF, IOU, return_idxs=True)
    return kept[0].numpy(), index[0].numpy().reshape(-1), out


def test_decoding_and_nms_equal_ultralytics(yolo):
    net, raw, nms = yolo
    kept, index, _ = _reference(net)
    assert 2 <= len(kept) <= 300, "the head spread should give a few detections"
    for path in (raw, nms):
        found = convlens.api.detections(path, PHOTO, conf=CONF, iou=IOU, scale="1/255")
        assert [d.anchor for d in found] == list(index)
        assert [d.cls for d in found] == [int(c) for c in kept[:, 5]]
        np.testing.assert_allclose([d.score for d in found], kept[:, 4], rtol=2e-4)  # float32: ONNX Runtime, torch
        np.testing.assert_allclose([d.box for d in found], kept[:, :4], atol=1e-2)


def test_a_detections_gradcam_and_gradient_equal_torch_for_its_candidate(yolo):
    net, raw, nms = yolo
    kept, index, _ = _reference(net)
    model = convlens.load(raw, scale="1/255")
    levels = model.detector_levels
    assert [(a, b) for a, b, _ in levels] == [(0, 400), (400, 500), (500, 525)]
    maps, tops = convlens.cam(model, PHOTO, box="all", conf=CONF, iou=IOU)
    assert [t[0] for t in tops[0]] == list(range(min(5, len(kept))))
    for k, result in enumerate(maps[0]):
        anchor, cls = int(index[k]), int(kept[k, 5])
        level = next(i for i, (a, b, _) in enumerate(levels) if a <= anchor < b)
        assert result.class_index == k and result.layer == f"model.{LEVEL_MODULES[level]}.cv2.act.Mul"
        kept_maps = {}
        hook = net.model[LEVEL_MODULES[level]].register_forward_hook(lambda _m, _i, o: kept_maps.__setitem__("A", o))
        x = _x().requires_grad_(True)
        out = net(x)
        hook.remove()
        out = out[0] if isinstance(out, (tuple, list)) else out
        logit = torch.logit(out[0, 4 + cls, anchor].double())  # the class logit before the head's sigmoid
        grad_a, grad_x = torch.autograd.grad(logit, [kept_maps["A"], x])
        ref = normalized((grad_a.mean(dim=(2, 3), keepdim=True) * kept_maps["A"]).sum(1)[0].detach().numpy())
        np.testing.assert_allclose(result.cam, ref, atol=1e-4)
        assert result.score == pytest.approx(float(logit), rel=1e-3, abs=1e-3)
        if k == 0:  # the input gradient, in pixel units (the file reads pixels / 255)
            (a,) = convlens.saliency(model, PHOTO, box=0, conf=CONF, iou=IOU)
            expected = grad_x[0].numpy().transpose(1, 2, 0) / 255
            np.testing.assert_allclose(a.attribution, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    with_nms, _ = convlens.cam(nms, PHOTO, box="all", conf=CONF, iou=IOU, scale="1/255")
    for a, b in zip(maps[0], with_nms[0]):
        assert a.class_index == b.class_index and np.abs(a.cam - b.cam).max() < 1e-5


def test_cam_box_all_writes_one_overlay_per_detection_with_its_box(yolo, tmp_path, capsys):
    net, raw, _ = yolo
    kept, _, _ = _reference(net)
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), PHOTO[..., ::-1].astype(np.uint8))
    assert main(["cam", str(raw), str(image), "--scale", "1/255", "--box", "all", "-o", str(tmp_path / "c"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    entry = result["images"][0]
    assert result["target"]["kind"] == "detection"
    assert len(entry["detections"]) == len(kept) == len(entry["maps"])
    np.testing.assert_allclose(entry["detections"][0]["box"], kept[0, :4], atol=0.01)
    picture = cv2.imread(str(tmp_path / "c" / "street_gradcam_0_overlay.png"))
    x1, y1 = (int(round(max(v, 0))) for v in kept[0, :2])
    assert picture is not None and picture[min(y1, SIZE - 1), min(x1 + 3, SIZE - 1)].max() in (0, 255)  # the box
    summary = cv2.imread(entry["summary"])  # every detection's overlay, in tiles of 320 px with 4 px gaps, 4 a row
    rows = -(-len(kept) // 4)
    assert entry["summary"].endswith("street_gradcam_detections.png") and summary.shape[:2] == (
        rows * 324 - 4, 4 * 324 - 4)
    first = entry["detections"][1]["box"]
    assert main(["saliency", str(raw), str(image), "--scale", "1/255", "--box", ",".join(str(v) for v in first),
                 "-o", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"][0]["class"] == 1  # the detection of highest IoU
    assert main(["cam", str(raw), str(image), "--scale", "1/255", "--box", "999", "-o", str(tmp_path / "x")]) == 1
    assert "--box 999 is out of range" in capsys.readouterr().err


def test_score_plus_iou_adds_the_candidate_boxs_iou_as_faster_rcnn_box_score_target_does(yolo):
    """The objective of pytorch-grad-cam's FasterRCNNBoxScoreTarget on a YOLO candidate: its class logit plus the
    IoU of its box (a function of the image) with a reference box. With the detected box as reference the IoU is 1
    at a kink and its gradient 0 (as in pytorch-grad-cam, whose references are the predicted boxes); with a box
    the user draws (`--box x1,y1,x2,y2`, nearest to detection 0) it pulls: input gradient vs autograd."""
    from torchvision.ops import box_iou

    net, raw, nms = yolo
    kept, index, _ = _reference(net)
    anchor, cls = int(index[0]), int(kept[0, 5])
    drawn = kept[0, :4] + np.array([6.0, -4.0, 10.0, 3.0])  # near detection 0, not on it
    x = _x().requires_grad_(True)
    out = net(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    cx, cy, w, h = out[0, :4, anchor]
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])[None]
    iou = box_iou(box, torch.from_numpy(drawn[None]).float())[0, 0]
    objective = torch.logit(out[0, 4 + cls, anchor].double()) + iou
    (grad,) = torch.autograd.grad(objective, x)
    expected = grad[0].numpy().transpose(1, 2, 0) / 255
    given = ",".join(f"{v:.4f}" for v in drawn)
    for path in (raw, nms):  # centre-and-size boxes, and corners (the file with NMS inside)
        (a,) = convlens.saliency(path, PHOTO, box=given, conf=CONF, iou=IOU, box_objective="score+iou",
                                 scale="1/255")
        assert a.class_index == 0
        np.testing.assert_allclose(a.attribution, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    (plain,) = convlens.saliency(raw, PHOTO, box=given, conf=CONF, iou=IOU, scale="1/255")
    assert np.abs(plain.attribution - a.attribution).max() > 1e-2 * np.abs(expected).max()  # the IoU term counts


def test_an_nms_free_export_is_decoded_as_its_own_top_k(yolo26):
    """YOLO26n exported end2end (ultralytics' nms=False: a TopK after the head, output (1, 300, 6)): convlens reads
    the head before the TopK and decodes it by the same top-k, no NMS: the file's own rows above --conf; each
    detection's explained score is the logit of its score (its candidate and class)."""
    import onnxruntime as ort

    _, raw, end2end = yolo26
    model = convlens.load(end2end, scale="1/255")
    assert model.detector.end2end and not convlens.load(raw, scale="1/255").detector.end2end
    session = ort.InferenceSession(str(end2end), providers=["CPUExecutionProvider"])
    rows = session.run(None, {session.get_inputs()[0].name: _x().numpy()})[0][0]
    rows = rows[rows[:, 4] > CONF]
    found = convlens.api.detections(model, PHOTO, conf=CONF)
    assert len(found) == len(rows) >= 5
    assert [d.cls for d in found] == rows[:, 5].astype(int).tolist()
    np.testing.assert_allclose([d.score for d in found], rows[:, 4], rtol=1e-3)
    np.testing.assert_allclose([d.box for d in found], rows[:, :4], atol=2e-2)
    maps, _ = convlens.cam(model, PHOTO, box="all", conf=CONF)
    for result, d in list(zip(maps[0], found))[:5]:
        assert result.score == pytest.approx(np.log(d.score / (1 - d.score)), abs=1e-3)
