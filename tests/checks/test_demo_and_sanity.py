"""A real pretrained model (EfficientNet-Lite0, weights shipped in a package) on the bundled cat photo."""
import json
import re

import cv2
import numpy as np
import pytest
import torch

from convlens.cli import main
from convlens.engine import predictions
from convlens.engine.checks.sanity import cascading_randomization, spearman
from convlens.engine.render.images import sample_image
from convlens.engine.techniques.cam import gradcam

# Chelsea's face fills the photo; in the 224x224 input, drawn by eye: a box around her eyes, nose and mouth
# (45 % of the area), and the strip of pink background at the right edge
FACE_BOX = (slice(40, 200), slice(40, 180))
BACKGROUND = (slice(0, 224), slice(200, 224))


def _face_share(heat: np.ndarray) -> float:
    return float(heat[FACE_BOX].sum() / heat.sum())
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_top_prediction_is_a_cat_and_gradcam_peaks_on_it(lite0):
    top = predictions(lite0, sample_image())[0]
    assert top[0][0] in CAT_CLASSES, top
    heat = gradcam(lite0, sample_image(), "top")[0][0].heatmap
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert FACE_BOX[0].start <= peak[0] < FACE_BOX[0].stop and FACE_BOX[1].start <= peak[1] < FACE_BOX[1].stop, peak
    # concentrated on the face: well above the share a uniform map gets, which fails the same check
    uniform = np.ones_like(heat)
    assert _face_share(heat) > 0.6 and not _face_share(uniform) > 0.6  # measured: 0.69 against 0.45
    assert heat[BACKGROUND].mean() < 0.5 * heat[FACE_BOX].mean()


def test_sanity_check_reproduces_the_papers_finding(lite0):
    cam = cascading_randomization(lite0, sample_image(), "gradcam", steps=3)
    guided = cascading_randomization(lite0, sample_image(), "guided-backprop", steps=3)
    # Grad-CAM depends on the weights: randomizing the top layer already changes its map
    assert cam[1]["spearman"] < 0.8 and min(r["spearman"] for r in cam[1:]) < 0.5
    # guided backprop barely notices the top layers (Adebayo et al. 2018)
    assert guided[1]["spearman"] > 0.95 and guided[1]["spearman"] > cam[1]["spearman"]


def test_spearman():
    a = np.arange(10.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)


def test_demo_and_report_cli(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--filter-steps", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"][0]["top5"][0][0] in CAT_CLASSES
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 12 and "http" not in page.replace("http-equiv", "")  # self-contained, no network
    # a second run never overwrites the report without --force, and reuses the converted model
    before = (out / "efficientnet_lite0.onnx").stat().st_mtime_ns
    report = (out / "report.html").stat().st_mtime_ns
    assert main(["demo", "-o", str(out), "--filter-steps", "2", "--quiet"]) == 1
    assert f"Output {out / 'report.html'} already exists; pass --force to overwrite it." in capsys.readouterr().err
    assert (out / "report.html").stat().st_mtime_ns == report
    assert main(["demo", "-o", str(out), "--filter-steps", "2", "--quiet", "--force"]) == 0
    assert (out / "efficientnet_lite0.onnx").stat().st_mtime_ns == before


def test_sanity_cli(tmp_path, lite0, capsys):
    from helpers import IMAGE

    from convlens.engine.render.images import IMAGE_SUFFIXES  # noqa: F401

    out = tmp_path / "s"
    assert (
        main(
            ["sanity", lite0.path, str(IMAGE), "--method", "guided-backprop", "--steps", "2", "-o", str(out), "--json"]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 3 and [r["randomized"] for r in rows] == sorted(r["randomized"] for r in rows)
    assert rows[0] == {"randomized": 0, "top_layer": None, "spearman": 1.0}
    # the files say what the run measured
    assert json.loads((out / "sanity_guided-backprop.json").read_text()) == rows
    table = (out / "sanity_guided-backprop.md").read_text()
    assert all(f"| {r['spearman']:.3f} |" in table for r in rows)
    figure = cv2.imread(str(out / "sanity_guided-backprop.png"), cv2.IMREAD_GRAYSCALE)
    assert figure.shape[1] == 640 and figure[:360, :22].min() < 128  # the y axis's label, written upwards
    assert figure[360:, 60:].min() < 128  # the randomized layers named under the x axis
    assert main(["sanity", lite0.path, str(tmp_path / "nope.png"), "-o", str(tmp_path / "t")]) == 1


def test_spearman_equals_scipys_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.random((14, 14))
    b = a + rng.normal(0, 0.3, a.shape)
    a[:3] = 0.0  # ties, as a ReLU'd map has
    b[5:7] = 1.0
    for x, y in ((a, b), (a, -b), (a, rng.random(a.shape))):
        assert abs(spearman(x, y) - spearmanr(x.ravel(), y.ravel()).statistic) < 1e-9


def test_a_named_layer_where_static_shapes_are_symbolic(lite0):
    """EfficientNet-Lite0's computed "same" pads leave static shape inference with symbolic sizes; a layer the
    user names is still read on its real grid, and its Grad-CAM is torch's."""
    from helpers import torch_gradcam

    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.engine.render.images import resize

    pixels = resize(sample_image(), (224, 224))
    got = gradcam(lite0, pixels, "top", "_blocks.15")[0][0]
    net = efficientnet_lite0().eval()
    x = torch.from_numpy((pixels / 127.5 - 1.0).transpose(2, 0, 1)[None].astype(np.float32).copy())
    ref, cls = torch_gradcam(net, net._blocks[15], x)
    assert got.class_index == cls and got.cam.shape == ref.shape == (7, 7)
    assert np.abs(got.cam - ref).max() < 1e-3
