"""convlens evaluate: each metric against an outside computation (pytorch-grad-cam's ROAD and confidence
metrics, deletion/insertion written here in torch), results independent of who runs them (in-process, Ray,
killed and resumed), the outputs, the refusals, and the shipped sample set on EfficientNet-Lite0."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from convlens.engine.errors import ConvlensError

SIZE = 64


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A seeded convnet with a fixed 64 px input and 10 classes, converted; and a few photos."""
    import torch
    from torch import nn

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.evaluation.sample_set import _photo
    from convlens.engine.model.onnx_file import save_onnx

    folder = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = save_onnx(convert_module(net, torch.zeros(1, 3, SIZE, SIZE), name="small",
                                    labels=[f"class{i}" for i in range(10)]), folder / "small.onnx")
    images = folder / "images"
    images.mkdir()
    for name in ("chelsea", "coffee", "camera", "rocket"):
        cv2.imwrite(str(images / f"{name}.png"), _photo(name)[..., ::-1])
    with open(folder / "boxes.csv", "w") as f:
        f.write("path,class,x0,y0,x1,y1\nimages/chelsea.png,class3,0,0,410,300\nimages/coffee.png,class3,75,15,480,390\n"
                "images/coffee.png,class5,0,0,100,100\n")
    return {"net": net, "path": path, "folder": folder, "images": images, "boxes": folder / "boxes.csv"}


def _evaluator(small, metrics, methods="gradcam,vanilla", steps=10, noise=0.0):
    from convlens import load
    from convlens.engine.evaluation.evaluator import Evaluator, check_settings

    return Evaluator(load(small["path"]), check_settings(methods, metrics, steps, True, "auto", noise))


def _network_input(evaluator, path):
    from convlens.engine.render.images import load_image
    from convlens.engine.runtime.adapter import apply_numpy
    from convlens.engine.techniques.common import prepare

    pixels = prepare(evaluator.model, [load_image(path)])[0]
    return pixels, apply_numpy(pixels[None], evaluator.model.input_spec)  # NCHW, as torch takes it


# --- each metric against an outside computation ----------------------------------------------------------

@pytest.mark.parametrize("method", ["gradcam", "random"])
def test_road_equals_pytorch_grad_cam_with_noise_zero(small, method, monkeypatch):
    import torch
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ev = _evaluator(small, "road", methods=method)
    path = str(small["images"] / "chelsea.png")
    out = ev.evaluate(path)
    row = next(r for r in out["results"] if r["method"] == method)
    pixels, x = _network_input(ev, path)
    heat = ev.heatmap(method, pixels, row["target"], row["sha256"])
    monkeypatch.setattr(
        road.NoisyLinearImputer, "__init__", lambda self, noise=0.0, weighting=None: setattr(self, "noise", 0.0)
    )
    target = [ClassifierOutputSoftmaxTarget(row["target"])]
    args = (torch.from_numpy(x), heat[None], target, small["net"])
    morf = float(road.ROADMostRelevantFirstAverage()(*args)[0])  # differences from the clean probability
    lerf = float(road.ROADLeastRelevantFirstAverage()(*args)[0])
    assert abs((row["road_morf"] - row["probability"]) - morf) < 1e-4
    assert abs((row["road_lerf"] - row["probability"]) - lerf) < 1e-4
    assert abs(row["road_combined"] - float(road.ROADCombined()(*args)[0])) < 1e-4
    assert abs(morf - lerf) > 1e-4 or method == "random"  # the two orders differ: the comparison can fail


def _torch_curves(net, x, heat, target, steps):
    """Deletion and insertion written directly in torch: one input per step, torchvision's Gaussian blur."""
    import torch
    from torchvision.transforms.functional import gaussian_blur

    xt = torch.from_numpy(x)
    order = torch.sort(-torch.from_numpy(heat.astype(np.float64)).flatten(), stable=True).indices
    base = gaussian_blur(xt, [11, 11], [5.0, 5.0])
    n = heat.size
    dele, ins = [], []
    with torch.no_grad():
        for k in range(steps + 1):
            count = (2 * k * n + steps) // (2 * steps)
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[:count]] = True
            mask = mask.reshape(1, 1, *heat.shape)
            dele.append(torch.softmax(net(torch.where(mask, 0.0, xt)).double(), 1)[0, target].item())
            ins.append(torch.softmax(net(torch.where(mask, xt, base)).double(), 1)[0, target].item())
    return np.array(dele), np.array(ins)


def test_deletion_and_insertion_equal_a_torch_loop(small):
    ev = _evaluator(small, "deletion,insertion", steps=12)
    path = str(small["images"] / "coffee.png")
    out = ev.evaluate(path)
    for row in out["results"]:
        pixels, x = _network_input(ev, path)
        heat = ev.heatmap(row["method"], pixels, row["target"], row["sha256"])
        dele, ins = _torch_curves(small["net"], x, heat, row["target"], 12)
        ours = {
            k: np.array([c["probability"] for c in out["curves"] if c["method"] == row["method"] and c["metric"] == k])
            for k in ("deletion", "insertion")
        }
        assert len(ours["deletion"]) == 13
        np.testing.assert_allclose(ours["deletion"], dele, atol=2e-6)
        np.testing.assert_allclose(ours["insertion"], ins, atol=2e-6)
        fractions = np.arange(13) / 12
        assert abs(row["deletion_auc"] - np.trapezoid(dele, fractions)) < 2e-6
        assert abs(row["insertion_auc"] - np.trapezoid(ins, fractions)) < 2e-6
        assert np.ptp(dele) > 1e-3  # the curve moves: the comparison can fail


def test_confidence_metrics_equal_pytorch_grad_cam(small):
    import torch
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ev = _evaluator(small, "confidence", methods="gradcam,vanilla")
    for name in ("chelsea.png", "camera.png"):
        path = str(small["images"] / name)
        for row in ev.evaluate(path)["results"]:
            pixels, x = _network_input(ev, path)
            heat = ev.heatmap(row["method"], pixels, row["target"], row["sha256"])
            args = (torch.from_numpy(x), heat[None], [ClassifierOutputSoftmaxTarget(row["target"])], small["net"])
            drop = float(DropInConfidence()(*args)[0])  # max(0, Y - O), not yet divided by Y
            assert abs(row["average_drop"] * row["probability"] - drop) < 1e-6
            assert row["increase_in_confidence"] == float(IncreaseInConfidence()(*args)[0])


def test_pointing_games_by_their_definitions():
    from convlens.engine.evaluation.metrics import energy_pointing, pointing_hit

    heat = np.zeros((100, 200), np.float32)
    heat[50, 120] = 1.0  # the maximum at x=120, y=50
    assert pointing_hit(heat, [(100, 40, 130, 60)]) == 1.0  # inside
    assert pointing_hit(heat, [(135, 50, 150, 60)]) == 1.0  # 15 px left of the box: within tolerance
    assert pointing_hit(heat, [(136, 50, 150, 60)]) == 0.0  # 16 px
    assert pointing_hit(heat, [(130, 60, 150, 70)]) == 1.0  # 10 px right and below: 14.1 px away
    assert pointing_hit(heat, [(131, 62, 150, 70)]) == 0.0  # 11 and 12: 16.3 px away
    assert np.isnan(pointing_hit(heat, []))
    heat = np.ones((10, 10), np.float32)
    heat[:, :5] = 3.0  # 150 of 200 in the left half
    assert energy_pointing(heat, [(0, 0, 5, 10)]) == pytest.approx(0.75)
    assert energy_pointing(heat, [(0, 0, 5, 10), (0, 0, 5, 5)]) == pytest.approx(0.75)  # a union, not a sum
    assert energy_pointing(heat, [(5, 0, 10, 10)]) == pytest.approx(0.25)


def test_pointing_maps_are_placed_on_the_photo_through_the_input_recipe(lite0, tmp_path):
    """A center-crop model on a wide photo: the map covers the crop only, so the pointing games read it where the
    crop lies in the photo (render.images.to_photo), not stretched over the whole photo."""
    import convlens
    from convlens.engine.evaluation.metrics import energy_pointing
    from convlens.engine.render.images import sample_image, to_photo
    from convlens.engine.techniques.common import fit_to_model

    model = convlens.load(lite0.path, resize="center-crop")
    photo = cv2.resize(sample_image(), (360, 200)).astype(np.uint8)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), photo[..., ::-1])
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"path,class,x0,y0,x1,y1\n{path},{{cls}},20,20,180,180\n")
    ((result,),), _ = convlens.cam(model, photo.astype(np.float32))
    boxes.write_text(boxes.read_text().replace("{cls}", str(result.class_index)))
    run = convlens.evaluate(model, [str(path)], tmp_path / "run", methods="gradcam", metrics="energy-pointing",
                            boxes=str(boxes))
    import pyarrow.parquet as pq

    row = next(r for r in pq.read_table(run.folder / "results.parquet").to_pylist() if r["method"] == "gradcam")
    _, place, size = fit_to_model(model, photo.astype(np.float32))
    placed = energy_pointing(to_photo(result.heatmap, photo.shape[:2], size, place), [(20, 20, 180, 180)])
    stretched = energy_pointing(cv2.resize(result.heatmap, (360, 200)), [(20, 20, 180, 180)])
    assert row["energy_pointing"] == pytest.approx(placed, abs=1e-6), (placed, stretched)
    assert abs(placed - stretched) > 0.01  # the two placements differ: the check can tell them apart


# --- runs: outputs, resuming, Ray, refusals ----------------------------------------------------------------

ALL = "deletion,insertion,road,pointing,energy-pointing,confidence"


def _rows(folder):
    import pyarrow.parquet as pq

    rows = pq.read_table(folder / "results.parquet").to_pylist()
    keyed = {(r["path"], r["method"]): r for r in rows}
    assert len(keyed) == len(rows), "an image and method appear twice"
    return keyed


def _same(a: dict, b: dict, tol=1e-6):
    from convlens.engine.evaluation.metrics import COLUMNS

    assert a.keys() == b.keys()
    for key in a:
        for c in COLUMNS + ("probability",):
            x, y = a[key][c], b[key][c]
            assert (np.isnan(x) and np.isnan(y)) or abs(x - y) <= tol, (key, c, x, y)
        assert a[key]["sha256"] == b[key]["sha256"] and a[key]["target"] == b[key]["target"]


@pytest.fixture(scope="module")
def reference_run(small, tmp_path_factory):
    """An uninterrupted in-process run: every metric, the boxes, 10 steps."""
    import convlens

    out = tmp_path_factory.mktemp("reference") / "run"
    run = convlens.evaluate(small["path"], [str(small["images"])], out, methods="gradcam,gradcam++,vanilla",
                            metrics=ALL, boxes=small["boxes"], steps=10, batch=2)
    return run


def test_a_run_writes_every_output(reference_run, small):
    import pyarrow.parquet as pq

    folder = reference_run.folder
    rows = _rows(folder)
    assert len(rows) == 4 * 4  # 4 images x (3 methods + the random baseline)
    assert {m for _, m in rows} == {"gradcam", "gradcam++", "vanilla", "random"}
    for (path, method), r in rows.items():
        assert (folder / r["heatmap_file"]).is_file()
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        boxed = path.endswith(("chelsea.png", "coffee.png"))
        assert np.isnan(r["pointing_hit"]) != boxed or r["target"] != 3
    curves = pq.read_table(folder / "curves.parquet").to_pylist()
    assert len(curves) == 16 * 2 * 11  # 11 points (0 to 1) per deletion and insertion curve
    assert sorted({c["fraction"] for c in curves}) == [k / 10 for k in range(11)]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["images"] == 4 and "random" in summary["methods"]
    entry = summary["methods"]["gradcam"]["insertion_auc"]
    values = [r["insertion_auc"] for (p, m), r in rows.items() if m == "gradcam"]
    assert entry["n"] == 4 and entry["mean"] == pytest.approx(np.mean(values))
    assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]


def test_a_rerun_resumes_and_other_settings_are_refused(reference_run, small):
    import convlens

    again = convlens.evaluate(small["path"], [str(small["images"])], reference_run.folder,
                              methods="gradcam,gradcam++,vanilla", metrics=ALL, boxes=small["boxes"], steps=10)
    assert again.evaluated == 0 and again.skipped == 4
    with pytest.raises(ConvlensError, match=r"other settings \(steps: 10, now 20\)"):
        convlens.evaluate(small["path"], [str(small["images"])], reference_run.folder,
                          methods="gradcam,gradcam++,vanilla", metrics=ALL, boxes=small["boxes"], steps=20)


def test_ray_gives_the_in_process_results(reference_run, small, tmp_path):
    import ray

    import convlens

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run = convlens.evaluate(
            small["path"],
            [str(small["images"])],
            tmp_path / "run",
            methods="gradcam,gradcam++,vanilla",
            metrics=ALL,
            boxes=small["boxes"],
            steps=10,
            batch=1,
            ray="auto",
            workers=2,
        )
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "empty.png").write_bytes(b"")
        with pytest.raises(ConvlensError, match=r"^Cannot read .*empty.png as an image: the file is empty"):
            convlens.evaluate(small["path"], [str(broken)], tmp_path / "run2", steps=4, ray="auto", workers=1)
    finally:
        ray.shutdown()
    assert run.evaluated == 4
    _same(_rows(run.folder), _rows(reference_run.folder))


def test_a_run_killed_mid_batch_resumes_to_the_same_results(reference_run, small, tmp_path):
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "convlens.cli", "evaluate", str(small["path"]), str(small["images"]),
           "--methods", "gradcam,gradcam++,vanilla", "--metrics", ALL, "--boxes", str(small["boxes"]), "--steps", "10",
           "--batch", "1", "-o", str(out), "--quiet"]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "shards").glob("results-*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").glob("results-*.parquet")))
    assert 2 <= done_before < 4 and not (out / "results.parquet").exists()
    finished = subprocess.run(cli[:-1] + ["--json"], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["skipped"] == done_before and report["evaluated"] == 4 - done_before
    rows = _rows(out)  # each image and method once
    _same(rows, _rows(reference_run.folder))


def test_lists_with_labels_explain_the_label(small, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import convlens

    listing = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [str(small["images"] / "camera.png")], "label": ["class7"]}), listing)
    run = convlens.evaluate(
        small["path"], [str(listing)], tmp_path / "run", methods="gradcam", metrics="deletion", steps=4
    )
    assert {r["target"] for r in _rows(run.folder).values()} == {7}
    csv_list = tmp_path / "list.csv"
    csv_list.write_text("path,label\nimages/coffee.png,2\n")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "coffee.png"), cv2.imread(str(small["images"] / "coffee.png")))
    run = convlens.evaluate(
        small["path"], [str(csv_list)], tmp_path / "run2", methods="gradcam", metrics="deletion", steps=4
    )
    assert {r["target"] for r in _rows(run.folder).values()} == {2}


@pytest.mark.parametrize("options, message", [
    ({"workers": 2}, r"--workers applies to Ray runs"),
    ({"methods": "gradcam,nonsense"}, r"Unknown method 'nonsense'"),
    ({"metrics": "deletion,auc"}, r"Unknown metric 'auc'"),
    ({"metrics": "pointing"}, r"pointing metrics need boxes"),
    ({"steps": 1}, r"--steps must be 2 or more"),
    ({"road_noise": -1.0}, r"--road-noise must be 0 or more"),
    ({"batch": 0}, r"--batch must be 1 or more"),
])
def test_user_errors_get_one_sentence(small, tmp_path, options, message):
    import convlens

    with pytest.raises(ConvlensError, match=message):
        convlens.evaluate(small["path"], [str(small["images"])], tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bad_inputs_and_folders_are_refused(small, tmp_path):
    import convlens

    bad_boxes = tmp_path / "boxes.csv"
    bad_boxes.write_text("file,label,a,b,c,d\nx.png,1,0,0,1,1\n")
    with pytest.raises(ConvlensError, match="must have the header path,class,x0,y0,x1,y1"):
        convlens.evaluate(small["path"], [str(small["images"])], tmp_path / "r1", metrics="pointing", boxes=bad_boxes)
    listing = tmp_path / "list.csv"
    listing.write_text("file\nx.png\n")
    with pytest.raises(ConvlensError, match="has no 'path' column"):
        convlens.evaluate(small["path"], [str(listing)], tmp_path / "r2")
    listing.write_text("path,label\n" + str(small["images"] / "camera.png") + ",zebra\n")
    with pytest.raises(ConvlensError, match="Unknown class 'zebra'"):
        convlens.evaluate(small["path"], [str(listing)], tmp_path / "r3")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConvlensError, match="is not a convlens evaluate run"):
        convlens.evaluate(small["path"], [str(small["images"])], mine, steps=4)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    from convlens.cli import main

    assert main(["evaluate", str(small["path"]), str(small["images"]), "-o", str(tmp_path / "r4"), "--force"]) == 1


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (bash .ci/run installs it)")
def test_the_report_opens_in_a_browser(reference_run, tmp_path):
    page = reference_run.folder / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--virtual-time-budget=10000"]
    dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'p'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    charts = re.search(r'data-charts="(\d+)"', dom)
    assert loaded and charts, "the page's load script did not run"
    # 4 disagreement images x 4 maps; 2 curve charts + 9 distributions
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) == 16
    assert int(charts.group(1)) == 11
    assert "random" in dom and "insertion_auc" in dom


# --- the shipped sample set on EfficientNet-Lite0 (real ImageNet weights) ---------------------------------

def test_the_sample_set_on_lite0(lite0, tmp_path):
    import convlens
    from convlens.engine.evaluation.sample_set import PHOTOS, build
    from convlens.engine.techniques.activations import predictions
    from convlens.engine.techniques.common import prepare

    listing, boxes = build(tmp_path / "set")
    names = [line.split(",")[0] for line in listing.read_text().splitlines()[1:]]
    assert len(names) == 28
    for key, (_, cls, label, _) in PHOTOS.items():  # the labels are right: the real model agrees
        top5 = predictions(lite0, prepare(lite0, [str(tmp_path / "set" / f"{key}.png")]))[0][:5]
        assert cls in [i for i, _, _ in top5], (key, top5)
        assert lite0.label(cls) == label
    # two photos and their first composite on each texture: 8 images
    lines = listing.read_text().splitlines()[1:]
    chosen = [l for l in lines if l.split(",")[0] in ("cat.png", "espresso.png") or
              (l.endswith("_0.png,285") or l.endswith("_0.png,967"))]
    subset = tmp_path / "subset.csv"
    subset.write_text("\n".join(["path,label"] + [f"set/{l}" for l in chosen]))
    run = convlens.evaluate(lite0, [str(subset)], tmp_path / "run", methods="gradcam", steps=8,
                            metrics="insertion,pointing,energy-pointing", boxes=boxes)
    assert run.images == 8
    s = run.summary["methods"]
    # a working method beats the random baseline on a real model with known objects
    assert s["gradcam"]["insertion_auc"]["mean"] > s["random"]["insertion_auc"]["mean"]
    assert s["gradcam"]["energy_pointing"]["mean"] > s["random"]["energy_pointing"]["mean"]
    assert s["gradcam"]["pointing_hit"]["n"] == 8


def _without(modules, call: str) -> subprocess.CompletedProcess:
    """Run `call` in a fresh interpreter where `modules` cannot be imported; it prints a ConvlensError."""
    code = (f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
            "import convlens\nfrom convlens.cli import build_parser\nbuild_parser()\n"
            f"from convlens.engine.errors import ConvlensError\ntry:\n    {call}\n"
            "except ConvlensError as exc:\n    print(exc)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_core_install_does_not_need_the_evaluate_extras(small, tmp_path):
    """convlens imports without pyarrow, scipy and Ray; evaluate without pyarrow, and --ray without Ray, say
    which extra to install."""
    args = f"{str(small['path'])!r}, [{str(small['images'])!r}]"
    out = _without(("pyarrow", "ray", "scipy"), f"convlens.evaluate({args}, {str(tmp_path / 'a')!r})")
    assert out.returncode == 0 and "pip install 'convlens[eval]'" in out.stdout, out.stdout + out.stderr
    out = _without(("ray",), f"convlens.evaluate({args}, {str(tmp_path / 'b')!r}, ray='auto', steps=4)")
    assert out.returncode == 0 and "--ray needs Ray Data: pip install 'convlens[scale]'" in out.stdout, \
        out.stdout + out.stderr


def test_a_foreign_export_scores_as_the_convlens_file(small, reference_run, tmp_path):
    """The same weights exported by plain torch.onnx.export (no convlens metadata; preprocessing given on the
    command line) give the same results as convlens's own file."""
    import torch

    import convlens

    foreign = tmp_path / "plain.onnx"
    torch.onnx.export(small["net"], torch.zeros(1, 3, SIZE, SIZE), str(foreign), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    run = convlens.evaluate(str(foreign), [str(small["images"])], tmp_path / "run", methods="gradcam,gradcam++,vanilla",
                            metrics=ALL, boxes=small["boxes"], steps=10, preprocess="torch",
                            labels=str(_labels(tmp_path)))
    _same(_rows(run.folder), _rows(reference_run.folder), tol=1e-5)


def _labels(folder):
    path = folder / "labels.txt"
    path.write_text("\n".join(f"class{i}" for i in range(10)))
    return path


def test_a_keras_model_in_nhwc_with_a_softmax_head(tmp_path):
    """Perturbations live in the network's input space whatever its layout: a Keras model's (NHWC, tf
    preprocessing, softmax output) deletion end points equal Keras's own outputs on those inputs."""
    import keras
    import pyarrow.parquet as pq

    import convlens
    from convlens.converters.keras_converter import convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.render.images import load_image
    from convlens.engine.techniques.common import prepare

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))
    path = save_onnx(convert_keras_model(net, name="small_keras", preprocess="tf"), tmp_path / "k.onnx")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((80, 90, 3)) * 255).astype(np.uint8))
    # --layer auto finds c2, although tf2onnx pools its NCHW tensor and exposes c2 as a transpose beside the path
    assert convlens.cam(str(path), str(image))[0][0][0].layer == "c2"
    run = convlens.evaluate(str(path), [str(image)], tmp_path / "run", methods="gradcam", metrics="deletion", steps=6)
    (row,) = [r for r in pq.read_table(run.folder / "results.parquet").to_pylist() if r["method"] == "gradcam"]
    curve = [c["probability"] for c in pq.read_table(run.folder / "curves.parquet").to_pylist()
             if c["method"] == "gradcam"]
    pixels = prepare(convlens.load(path), [load_image(str(image))])
    clean = float(net(pixels / 127.5 - 1)[0, row["target"]])
    zeros = float(net(np.zeros((1, SIZE, SIZE, 3), np.float32))[0, row["target"]])
    assert abs(curve[0] - clean) < 1e-6 and abs(curve[-1] - zeros) < 1e-6
    assert abs(row["probability"] - clean) < 1e-6
