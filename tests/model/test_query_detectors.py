"""DETR-style detectors: a transformers DetrForObjectDetection built from a config (seeded weights, a small
ResNet backbone) and exported by torch.onnx, its two outputs the class logits (N, Q, C + 1) and the boxes
(tests/detector_files.py; the session fixture `detr` in tests/conftest.py).

- convlens's decoding equals transformers' post_process_object_detection on the same outputs;
- Grad-CAM (at the layer `auto` picks) and the input gradient of each detection equal torch autograd of that
  query's class logit on the transformers model;
- score+iou adds the query box's IoU with a drawn box, as pytorch-grad-cam's FasterRCNNBoxScoreTarget does.
"""
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from helpers import normalized

import convlens

from detector_files import DETR_SIZE as SIZE
CONF = 0.605  # the seeded queries score 0.55..0.63: four of twelve pass
PHOTO = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _x():
    return torch.from_numpy(PHOTO.transpose(2, 0, 1)[None].copy() / 255).float()


def _reference(net):
    """transformers' own post-processing of the model's outputs: scores, labels, boxes (by score)."""
    from transformers import DetrImageProcessor
    from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

    with torch.no_grad():
        logits, boxes = net(_x())
    (found,) = DetrImageProcessor().post_process_object_detection(
        DetrObjectDetectionOutput(logits=logits, pred_boxes=boxes), threshold=CONF, target_sizes=[(SIZE, SIZE)])
    order = torch.argsort(found["scores"], descending=True)
    return found["scores"][order].numpy(), found["labels"][order].numpy(), found["boxes"][order].numpy()


def test_decoding_equals_transformers_post_processing(detr):
    net, path = detr
    scores, labels, boxes = _reference(net)
    assert len(scores) == 4
    model = convlens.load(path, scale="1/255")
    assert model.detector is not None and model.detector.queries and model.detector.classes == 5
    found = convlens.api.detections(model, PHOTO, conf=CONF)
    assert [d.cls for d in found] == list(labels)
    np.testing.assert_allclose([d.score for d in found], scores, rtol=1e-4)
    np.testing.assert_allclose([d.box for d in found], boxes, atol=1e-3)


def test_each_detections_gradcam_and_gradient_equal_torch_for_its_query(detr):
    net, path = detr
    model = convlens.load(path, scale="1/255")
    found = convlens.api.detections(model, PHOTO, conf=CONF)
    maps, _ = convlens.cam(model, PHOTO, box="all", conf=CONF)
    assert [r.class_index for r in maps[0]] == list(range(len(found)))
    kept = {}
    hook = net.net.model.input_projection.register_forward_hook(lambda _m, _i, o: kept.__setitem__("A", o))
    for k, (result, detection) in enumerate(zip(maps[0], found)):
        x = _x().requires_grad_(True)
        logits, _ = net(x)
        logit = logits[0, detection.anchor, detection.cls]
        grad_a, grad_x = torch.autograd.grad(logit, [kept["A"], x])
        ref = normalized((grad_a.mean(dim=(2, 3), keepdim=True) * kept["A"]).sum(1)[0].detach().numpy())
        assert "input_projection" in result.layer
        np.testing.assert_allclose(result.cam, ref, atol=1e-4)
        assert result.score == pytest.approx(float(logit), rel=1e-4, abs=1e-4)
        if k < 2:
            (a,) = convlens.saliency(model, PHOTO, box=k, conf=CONF)
            expected = grad_x[0].numpy().transpose(1, 2, 0) / 255
            np.testing.assert_allclose(a.attribution, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    hook.remove()


def test_score_plus_iou_on_a_query_box(detr):
    from torchvision.ops import box_iou

    net, path = detr
    model = convlens.load(path, scale="1/255")
    found = convlens.api.detections(model, PHOTO, conf=CONF)
    drawn = np.asarray(found[0].box) + np.array([3.0, -2.0, 5.0, 1.0])
    nearest = int(box_iou(torch.tensor([d.box for d in found]), torch.from_numpy(drawn[None])).argmax())
    detection = found[nearest]  # the seeded queries' boxes lie close together: the drawn box picks by IoU
    x = _x().requires_grad_(True)
    logits, boxes = net(x)
    cx, cy, w, h = boxes[0, detection.anchor] * SIZE
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])[None]
    objective = logits[0, detection.anchor, detection.cls] + box_iou(box, torch.from_numpy(drawn[None]).float())[0, 0]
    (grad,) = torch.autograd.grad(objective, x)
    expected = grad[0].numpy().transpose(1, 2, 0) / 255
    (a,) = convlens.saliency(model, PHOTO, box=",".join(f"{v:.4f}" for v in drawn), conf=CONF,
                             box_objective="score+iou")
    assert a.class_index == nearest
    np.testing.assert_allclose(a.attribution, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
