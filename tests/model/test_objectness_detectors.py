"""YOLOv5-style detectors (one output (N, A, 5 + C) with objectness): tests/detector_files.py's small net under
YOLOv5's Detect head as its export runs it, exported by torch.onnx.

- convlens's decoding equals YOLOv5's non_max_suppression (written out in tests/detector_files.py) on the same
  rows: candidates, classes, scores, boxes;
- each detection's Grad-CAM at its level's feature map (what `--layer auto` picks) and its input gradient equal
  torch autograd of that candidate's class logit (before the sigmoid) on the torch module.
"""
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from detector_files import V5_SIZE, yolov5_nms
from helpers import normalized

import convlens

CONF, IOU = 0.1, 0.45
PHOTO = cv2.resize(skimage.data.astronaut(), (V5_SIZE, V5_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _x():
    return torch.from_numpy(PHOTO.transpose(2, 0, 1)[None].copy() / 255).float()


def test_decoding_equals_yolov5s_nms(yolov5_style):
    net, path = yolov5_style
    with torch.no_grad():
        kept, candidates = yolov5_nms(net(_x())[0], CONF, IOU)
    assert 5 <= len(kept) < 300
    model = convlens.load(path, scale="1/255")
    assert model.detector.objectness and model.detector.classes == 3
    assert [(a, b) for a, b, _ in model.detector_levels] == [(0, 768), (768, 960), (960, 1008)]
    found = convlens.api.detections(model, PHOTO, conf=CONF, iou=IOU)
    assert [d.anchor for d in found] == candidates.tolist()
    assert [d.cls for d in found] == kept[:, 5].int().tolist()
    np.testing.assert_allclose([d.score for d in found], kept[:, 4].numpy(), rtol=1e-4)
    np.testing.assert_allclose([d.box for d in found], kept[:, :4].numpy(), atol=1e-3)


def test_each_detections_gradcam_and_gradient_equal_torch(yolov5_style):
    net, path = yolov5_style
    model = convlens.load(path, scale="1/255")
    found = convlens.api.detections(model, PHOTO, conf=CONF, iou=IOU)
    maps, _ = convlens.cam(model, PHOTO, box="all", conf=CONF, iou=IOU)
    levels = model.detector_levels
    for k, (result, d) in enumerate(zip(maps[0], found)):
        level = next(i for i, (a, b, _) in enumerate(levels) if a <= d.anchor < b)
        x = _x().requires_grad_(True)
        p3 = net.stem(x)
        p4 = net.down16(p3)
        feature = (p3, p4, net.down32(p4))[level]
        y = net.heads[level](feature)
        n, _, ny, nx = y.shape
        y = y.view(n, net.na, net.columns, ny, nx).permute(0, 1, 3, 4, 2)
        a, gy, gx = np.unravel_index(d.anchor - levels[level][0], (net.na, ny, nx))
        logit = y[0, a, gy, gx, 5 + d.cls]
        grad_a, grad_x = torch.autograd.grad(logit, [feature, x])
        ref = normalized((grad_a.mean(dim=(2, 3), keepdim=True) * feature).sum(1)[0].detach().numpy())
        assert result.layer == model.layer(levels[level][2]).name
        np.testing.assert_allclose(result.cam, ref, atol=1e-4)
        assert result.score == pytest.approx(float(logit), rel=1e-4, abs=1e-4)
        if k < 2:
            (s,) = convlens.saliency(model, PHOTO, box=k, conf=CONF, iou=IOU)
            expected = grad_x[0].numpy().transpose(1, 2, 0) / 255
            np.testing.assert_allclose(s.attribution, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    assert len({r.layer for r in maps[0]}) >= 2, "the detections should come from more than one level"
