"""`convlens evaluate` on a detector (tests/detector_files.py's YOLOv8n): each image's detection of rank --box is
explained through a view whose one score is that detection's; the deletion and insertion curves follow that
score (its candidate's class probability: the curve starts at the detection's score and ends at the candidate's
probability on an all-zero input, as torch computes it); the pointing games take the detection's own box.
"""
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
from detector_files import YOLO_SIZE

import convlens
from convlens.engine.errors import ConvlensError
from convlens.engine.evaluation.metrics import pointing_hit

CONF = 0.05
PHOTOS = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
          "mirrored": skimage.data.astronaut()[:, ::-1]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, picture in PHOTOS.items():
        cv2.imwrite(str(folder / f"{name}.png"), cv2.resize(picture, (YOLO_SIZE, YOLO_SIZE))[..., ::-1])
    return folder


def test_a_detectors_curves_follow_its_detection_and_pointing_takes_its_box(yolo, photos, tmp_path):
    net, raw, _ = yolo
    run = convlens.evaluate(raw, [str(photos)], tmp_path / "run", methods="gradcam", steps=6, conf=CONF,
                            metrics="deletion,insertion,pointing", scale="1/255")
    rows = {(r["path"], r["method"]): r for r in pq.read_table(run.folder / "results.parquet").to_pylist()}
    curves = pq.read_table(run.folder / "curves.parquet").to_pylist()
    assert len(rows) == 2 * len(PHOTOS)
    model = convlens.load(raw, scale="1/255")
    with torch.no_grad():
        on_zeros = net(torch.zeros(1, 3, YOLO_SIZE, YOLO_SIZE))
    on_zeros = (on_zeros[0] if isinstance(on_zeros, (tuple, list)) else on_zeros)[0].numpy()
    for name in PHOTOS:
        path = str(photos / f"{name}.png")
        picture = cv2.imread(path)[..., ::-1].astype(np.float32)
        top = convlens.api.detections(model, picture, conf=CONF)[0]
        row = rows[(path, "gradcam")]
        assert row["target"] == top.cls and row["target_label"].endswith("(detection 0)")
        assert row["probability"] == pytest.approx(top.score, rel=1e-4)
        deletion = sorted((c["fraction"], c["probability"]) for c in curves
                          if c["path"] == path and c["method"] == "gradcam" and c["metric"] == "deletion")
        assert deletion[0][1] == pytest.approx(top.score, rel=1e-4)
        assert deletion[-1][1] == pytest.approx(float(on_zeros[4 + top.cls, top.anchor]), rel=1e-3, abs=1e-6)
        (maps,), _ = convlens.cam(model, picture, box=0, conf=CONF)
        assert row["pointing_hit"] == pointing_hit(maps[0].heatmap, [top.box])


def test_detector_options_are_refused_in_a_sentence(yolo, photos, tmp_path):
    _, raw, _ = yolo
    classifier = tmp_path / "classifier.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(classifier), dynamo=False, opset_version=17)
    with pytest.raises(ConvlensError, match="evaluate explains one detection per image: give --box K"):
        convlens.evaluate(raw, [str(photos)], tmp_path / "a", box="all", scale="1/255")
    with pytest.raises(ConvlensError, match="--box applies to detectors"):
        convlens.evaluate(classifier, [str(photos)], tmp_path / "b", box=0)
    with pytest.raises(ConvlensError, match="none of rank 0 to evaluate; lower --conf"):
        convlens.evaluate(raw, [str(photos)], tmp_path / "c", conf=0.999, scale="1/255", methods="gradcam")
