"""`convlens export`: standalone explainer graphs, run where convlens is not installed.

The main check runs every explainer in a fresh virtual environment holding only onnxruntime and numpy
(made here with pip from the registry), on images written to .npy files, and compares what comes back with
`convlens cam` / `convlens saliency` computed in this process on the same .onnx files:
- at the model's own input size, cam and heatmap equal convlens's within 1e-5, the overlay equals
  render.overlay, and a batch can mix a fed class with -1 (its top class);
- on a non-square image of another size, the heatmap has that size and correlates >= 0.99 with convlens's map
  resized to it (the explainer resizes the image with ONNX's antialiased bilinear filter, convlens with
  OpenCV's area filter, so they agree closely but not exactly);
- without a fed target the explained class is the top-1.
Models: torchvision VGG16 and ResNet-50, Keras VGG16, EfficientNet-Lite0 and a plain torch.onnx export.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import convlens
from convlens.engine.errors import ConvlensError
from convlens.engine.render.images import resize, sample_image
from convlens.engine.render.pictures import overlay

pytestmark = pytest.mark.slow
OTHER = (180, 300)  # a non-square image of another size (H, W)


@pytest.fixture(scope="module")
def runner_venv(tmp_path_factory):
    """A virtual environment with onnxruntime and numpy only (the versions CI tests), made with pip."""
    folder = tmp_path_factory.mktemp("runner") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pins = {line.split("==")[0]: line.strip() for line in
            (Path(__file__).parents[2] / ".ci" / "constraints.txt").read_text().splitlines() if "==" in line}
    pip = subprocess.run([str(folder / "bin" / "pip"), "install", "-q", pins["onnxruntime"], pins["numpy"]],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    python = folder / "bin" / "python"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "convlens" not in names and "torch" not in names and "tensorflow" not in names
    yield python
    shutil.rmtree(folder.parent, ignore_errors=True)


RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort
    jobs = json.load(open(sys.argv[1]))
    for job in jobs:
        session = ort.InferenceSession(job["explainer"], providers=["CPUExecutionProvider"])
        feeds = {"image": np.load(job["image"])}
        if job.get("target") is not None:
            feeds["target"] = np.array(job["target"], np.int64)
        names = [o.name for o in session.get_outputs()]
        np.savez(job["out"], **dict(zip(names, session.run(None, feeds))))
""")


@pytest.fixture(scope="module")
def sources(torch_vgg16, keras_vgg16, lite0, models_dir):
    """name -> .onnx path: the explainer sources."""
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(1)
    resnet = torchvision.models.resnet50(weights=None).eval()
    resnet_path = models_dir / "resnet50.onnx"
    if not resnet_path.exists():
        save_onnx(convert_module(resnet, torch.zeros(1, 3, 224, 224), name="torchvision.resnet50"), resnet_path)
    foreign = models_dir / "foreign_resnet18.onnx"
    if not foreign.exists():  # a plain export: no convlens metadata, a dynamic batch
        torch.manual_seed(2)
        net = torchvision.models.resnet18(weights=None).eval()
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(foreign), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    return {"torch_vgg16": Path(torch_vgg16["path"]), "keras_vgg16": Path(keras_vgg16["path"]), "resnet50": resnet_path,
            "lite0": Path(lite0.path), "foreign": foreign}


def _images():
    photo = sample_image()
    own = resize(photo, (224, 224)).astype(np.uint8)
    flipped = np.ascontiguousarray(own[:, ::-1])
    other = resize(photo, OTHER).astype(np.uint8)
    return np.stack([own, flipped]), other[None]


@pytest.fixture(scope="module")
def runs(sources, runner_venv, tmp_path_factory):
    """Every source's Grad-CAM explainer (and gradcam++ / xgradcam / layercam on ResNet-50) run in the fresh venv:
    {(source, method, case): outputs}."""
    folder = tmp_path_factory.mktemp("explainers")
    batch, other = _images()
    np.save(folder / "batch.npy", batch)
    np.save(folder / "other.npy", other)
    plan = [(name, "gradcam") for name in sources] + [("resnet50", m) for m in ("gradcam++", "xgradcam", "layercam")]
    jobs = []
    for name, method in plan:
        explainer = folder / f"{name}_{method}.onnx"
        convlens.export(sources[name], explainer, method=method, **_load_options(name))
        for case, image, target in (("own", "batch.npy", [5, -1]), ("top", "batch.npy", None),
                                    ("other", "other.npy", None)):
            jobs.append({"explainer": str(explainer), "image": str(folder / image), "target": target,
                         "out": str(folder / f"{name}_{method}_{case}.npz"), "key": [name, method, case]})
    (folder / "jobs.json").write_text(json.dumps(jobs))
    (folder / "runner.py").write_text(RUNNER)
    done = subprocess.run([str(runner_venv), str(folder / "runner.py"), str(folder / "jobs.json")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    results = {tuple(j["key"]): dict(np.load(j["out"])) for j in jobs}
    yield results
    shutil.rmtree(folder, ignore_errors=True)


def _load_options(name):
    return {"preprocess": "torch"} if name == "foreign" else {}


CASES = [("torch_vgg16", "gradcam"), ("keras_vgg16", "gradcam"), ("resnet50", "gradcam"), ("lite0", "gradcam"),
         ("foreign", "gradcam"), ("resnet50", "gradcam++"), ("resnet50", "xgradcam"), ("resnet50", "layercam")]


@pytest.mark.parametrize("name,method", CASES)
def test_at_the_models_size_the_maps_equal_convlens_cam(sources, runs, name, method):
    batch, _ = _images()
    model = convlens.load(sources[name], **_load_options(name))
    out = runs[(name, method, "own")]
    assert out["heatmap"].shape == (2, 224, 224) and out["overlay"].shape == (2, 224, 224, 3)
    assert out["overlay"].dtype == np.uint8 and out["explained_class"].dtype == np.int64
    top = runs[(name, method, "top")]["explained_class"]
    assert out["explained_class"][0] == 5 and out["explained_class"][1] == top[1]  # fed class, then -1: top-1
    for i, target in enumerate([5, int(top[1])]):
        ref = convlens.cam(model, batch[i].astype(np.float32), target=target, method=method)[0][0][0]
        assert np.abs(out["cam"][i] - ref.cam).max() <= 1e-5
        assert np.abs(out["heatmap"][i] - ref.heatmap).max() <= 1e-5
        expected = overlay(batch[i], ref.heatmap).astype(int)
        # equal but where float rounding puts heat * 255 on the other side of an integer (one colormap step)
        assert np.mean(np.abs(out["overlay"][i].astype(int) - expected) > 0) < 1e-3
    probabilities = out["probabilities"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert list(np.argmax(probabilities, axis=1)) == list(top)


@pytest.mark.parametrize("name,method", CASES[:5])
def test_another_size_gives_a_map_of_that_size(sources, runs, name, method):
    _, other = _images()
    model = convlens.load(sources[name], **_load_options(name))
    out = runs[(name, method, "other")]
    assert out["heatmap"].shape == (1,) + OTHER and out["overlay"].shape == (1,) + OTHER + (3,)
    ref = convlens.cam(model, other[0].astype(np.float32), target=int(out["explained_class"][0]), method=method)[0][0][
        0
    ]
    resized = cv2.resize(ref.cam, (OTHER[1], OTHER[0]), interpolation=cv2.INTER_LINEAR)
    assert np.corrcoef(out["heatmap"][0].ravel(), resized.ravel())[0, 1] >= 0.99


def test_the_graph_is_standard_and_stores_each_weight_once(sources, tmp_path):
    path = tmp_path / "vgg16_explainer.onnx"
    explainer = convlens.export(sources["torch_vgg16"], path, method="gradcam")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain for o in proto.opset_import} == {""} and proto.opset_import[0].version == 18
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert [i.name for i in proto.graph.input] == ["image", "target"]
    assert [o.name for o in proto.graph.output] == ["probabilities", "explained_class", "heatmap", "cam", "overlay"]
    model = convlens.load(sources["torch_vgg16"])
    weight_bytes = sum(a.nbytes for a in model.weights.values())
    stored = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    assert weight_bytes <= stored < weight_bytes * 1.01  # no transposed or flipped copies
    assert explainer.layer == "features.29"


def test_saliency_explainers_equal_convlens_saliency(tmp_path):
    """vanilla, smoothgrad (noise baked in from the seed), integrated gradients, guided backprop and DeepLIFT (a
    black baseline beside each image) on a small convnet, at its own size."""
    from torch import nn

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = save_onnx(
        convert_module(net, torch.zeros(1, 3, 40, 40), preprocess="torch", labels=None), tmp_path / "s.onnx"
    )
    model = convlens.load(path)
    image = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for method in ("vanilla", "smoothgrad", "integrated-gradients", "guided-backprop", "deeplift"):
        explainer = convlens.export(model, tmp_path / f"{method}.onnx", method=method, samples=6, steps=5, seed=7)
        assert explainer.layer is None
        session = ort.InferenceSession(str(tmp_path / f"{method}.onnx"), providers=["CPUExecutionProvider"])
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image[None]})))
        assert "cam" not in out
        ref = convlens.saliency(model, image.astype(np.float32), method=method, samples=6, steps=5, seed=7)[0]
        assert out["explained_class"][0] == ref.class_index
        assert np.abs(out["heatmap"][0] - ref.saliency).max() <= 1e-5, method
    # a file gives the same maps every run (the noise is a constant of the graph)
    session = ort.InferenceSession(str(tmp_path / "smoothgrad.onnx"), providers=["CPUExecutionProvider"])
    first, second = (session.run(["heatmap"], {"image": image[None]})[0] for _ in range(2))
    assert np.array_equal(first, second)


def test_baseline_explainers_equal_convlens_saliency(tmp_path, capsys):
    """DeepLIFT (a mean-colour or image-file baseline), DeepLIFT-SHAP (seeded noise or a folder of baselines) and
    GradientSHAP (points, and input noise with stdevs, drawn from the seed) baked into the graph: on a batch of two
    images, with and without a fed target, each image's class and map equal `convlens saliency`'s with the same
    options within 1e-5."""
    import cv2
    from torch import nn

    from convlens.cli import main
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10)).eval()
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 24, 24), preprocess="torch"), tmp_path / "s.onnx")
    model = convlens.load(path)
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    photo, folder = tmp_path / "baseline.png", tmp_path / "baselines"
    folder.mkdir()
    cv2.imwrite(str(photo), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    cases = [("deeplift", {"baseline": "mean"}), ("deeplift", {"baseline": str(photo)}),
             ("deeplift-shap", {"baselines": 3, "seed": 4}), ("deeplift-shap", {"baselines": str(folder)}),
             ("gradient-shap", {"baselines": 4, "samples": 5, "seed": 6}),
             ("gradient-shap", {"baselines": 4, "samples": 5, "seed": 6, "stdevs": 0.3})]
    maps = []
    for k, (method, options) in enumerate(cases):
        out_path = tmp_path / f"{k}.onnx"
        convlens.export(model, out_path, method=method, **options)
        session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        for target in (None, np.array([3, -1], np.int64)):
            feed = {"image": images} if target is None else {"image": images, "target": target}
            out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
            for i in range(2):
                chosen = "top" if target is None or target[i] < 0 else int(target[i])
                ref = convlens.saliency(model, images[i].astype(np.float32), target=chosen, method=method,
                                        **options)[0]
                assert out["explained_class"][i] == ref.class_index
                assert np.abs(out["heatmap"][i] - ref.saliency).max() <= 1e-5, (method, options, i)
        maps.append(out["heatmap"])
    assert all(np.abs(a - b).max() > 1e-2 for a, b in zip(maps, maps[1:]))  # each baseline gives its own map
    # through the command line, and the one baseline the graph cannot compute refused in a sentence
    assert main(["export", str(path), "--method", "deeplift-shap", "--baselines", str(folder),
                 "-o", str(tmp_path / "cli.onnx")]) == 0
    capsys.readouterr()
    assert main(["export", str(path), "--method", "deeplift", "--baseline", "blur", "-o",
                 str(tmp_path / "blur.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--baseline blur" in err and err.count("\n") == 0
    assert not (tmp_path / "blur.onnx").exists()


def test_a_zero_map_stays_zero_and_a_batch_of_one_file_says_so(tmp_path):
    from torch import nn

    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    with torch.no_grad():  # class scores that do not depend on the image: every gradient is zero
        net[4].weight.zero_()
    path = tmp_path / "batch1.onnx"  # a plain export, batch of 1 baked in
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=17)
    explainer = convlens.export(path, tmp_path / "e.onnx", method="gradcam", layer="auto")
    assert any("batch of 1" in note for note in explainer.notes)
    assert onnx.load(tmp_path / "e.onnx").graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"image": np.full((1, 20, 24, 3), 100, np.uint8)})))
    assert np.all(out["cam"] == 0) and np.all(out["heatmap"] == 0) and not np.isnan(out["heatmap"]).any()
    with pytest.raises(ConvlensError, match="batch of 1 baked in"):
        convlens.export(path, tmp_path / "s.onnx", method="smoothgrad")


def test_export_refusals_and_the_cli(sources, tmp_path, capsys):
    from convlens.cli import main

    with pytest.raises(ConvlensError, match="cannot be exported"):
        convlens.export(sources["lite0"], method="scorecam")
    with pytest.raises(ConvlensError, match="--samples must be 1 or more"):
        convlens.export(sources["lite0"], method="smoothgrad", samples=0)
    out = tmp_path / "lite0_explainer.onnx"
    assert main(["export", str(sources["lite0"]), "--method", "layercam", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layer"] and result["outputs"][-1] == "overlay" and out.exists()
    assert main(["export", str(sources["lite0"]), "-o", str(out)]) == 1  # never overwritten without --force
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"])
def test_each_onnx_cam_row_equals_its_numpy_row(method):
    """The CAM table's two forms of a method (numpy for convlens cam, ONNX nodes for exported explainers) on the
    same activations and gradients, ties and zeros included."""
    from onnx import TensorProto, helper

    from convlens.engine.autodiff.emitter import Emitter
    from convlens.engine.techniques.cam_methods import CAM_METHODS

    rng = np.random.default_rng(8)
    acts = np.maximum(rng.standard_normal((2, 5, 4, 3)), 0).astype(np.float32)  # post-ReLU, with zeros
    grads = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    grads[0, 1] = 0  # a channel without gradient
    e = Emitter({}, {}, {}, 18)
    raw = CAM_METHODS[method].onnx_map(e, "A", "G")
    graph = helper.make_graph(e.nodes, "row", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, 4, 3])
                                               for n in ("A", "G")],
                              [helper.make_tensor_value_info(raw, TensorProto.FLOAT, None)],
                              initializer=list(e.new_inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"A": acts, "G": grads})[0]
    ref = CAM_METHODS[method].raw_map(acts.astype(np.float64), grads.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_a_file_whose_tensors_bear_the_explainers_names(tmp_path):
    """A plain export whose input is called "image" and output "heatmap": the explainer renames them inside."""
    from torch import nn

    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    path = tmp_path / "named.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, input_names=["image"],
                      output_names=["heatmap"], opset_version=17)
    convlens.export(path, tmp_path / "e.onnx", method="gradcam", layer="auto")
    image = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image[None]})))
    ((ref,),), _ = convlens.cam(path, image.astype(np.float32), layer="auto")
    assert out["explained_class"][0] == ref.class_index
    assert np.abs(out["heatmap"][0] - ref.heatmap).max() <= 1e-5
