"""What a foreign file's user is told: the preprocessing assumed, the labels it lacks; mixed image sizes on a
model of any size; options that would silently do nothing are refused."""
import json

import cv2
import numpy as np
import pytest
import torch

from convlens.cli import main


@pytest.fixture(scope="module")
def any_size_1000(tmp_path_factory):
    """A foreign (torch.onnx) convnet of any input size with 1000 classes and no labels."""
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 1000)).eval()
    path = tmp_path_factory.mktemp("foreign") / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    return net, path


def _image(folder, name, shape, value=100):
    folder.mkdir(exist_ok=True)
    path = folder / name
    cv2.imwrite(str(path), (np.random.default_rng(len(name)).uniform(0, 255, (*shape, 3))).astype(np.uint8))
    return path


def test_a_folder_of_mixed_sizes_runs_in_batches_by_size(tmp_path, any_size_1000, capsys):
    net, path = any_size_1000
    folder = tmp_path / "imgs"
    shapes = {"a.png": (20, 30), "b.png": (40, 24), "c.png": (20, 30), "d.png": (33, 33)}
    for name, shape in shapes.items():
        _image(folder, name, shape)
    out = tmp_path / "cam"
    assert main(["cam", str(path), str(folder), "--batch", "4", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(e["image"].split("/")[-1] for e in result["images"]) == sorted(shapes)
    for e in result["images"]:
        name = e["image"].split("/")[-1]
        x = torch.from_numpy(cv2.imread(e["image"])[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            assert e["maps"][0]["class"] == int(net(x).argmax()), name  # raw preprocessing, as announced
        layer_map = np.load(out / f"{name[:-4]}_gradcam_{e['maps'][0]['class']}_layer.npy")
        assert layer_map.shape == shapes[name]


def test_foreign_files_say_the_preprocessing_assumed_and_the_labels_they_lack(tmp_path, any_size_1000, capsys):
    _, path = any_size_1000
    image = _image(tmp_path, "x.png", (32, 32))
    assert main(["cam", str(path), str(image), "--class", "tabby", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "convlens: warning: net.onnx has no convlens metadata: assuming NCHW input of raw RGB pixels" in err
    assert err.count("no convlens metadata") == 1
    assert "carries no class labels" in err and "--labels imagenet" in err
    assert main(["cam", str(path), str(image), "--class", "tabby", "--labels", "imagenet", "--preprocess", "torch",
                 "-o", str(tmp_path / "o"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"][0]["maps"][0]["class"] == 281  # ImageNet's "tabby, tabby cat"
    assert "no convlens metadata" not in captured.err  # --preprocess given: nothing assumed
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(1000)))
    assert main(["cam", str(path), str(image), "--class", "thing 7", "--labels", str(labels), "--preprocess", "raw",
                 "-o", str(tmp_path / "o2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"][0]["maps"][0]["label"] == "thing 7"


@pytest.mark.parametrize("argv,words", [
    (["filters", "MODEL", "--layer", "0", "--steps", "0"], "--steps must be 1 or more, not 0"),
    (["filters", "MODEL", "--layer", "0", "--size", "2"], "--size must be 8 pixels or more"),
    (["cam", "MODEL", "IMAGE", "--batch", "0"], "--batch must be 1 or more, not 0"),
    (["sanity", "MODEL", "IMAGE", "--steps", "0"], "--steps must be 1 or more, not 0"),
])
def test_options_that_would_do_nothing_are_refused(tmp_path, tiny_torch, argv, words, capsys):
    image = _image(tmp_path, "x.png", (32, 32))
    argv = [str(tiny_torch["path"]) if a == "MODEL" else str(image) if a == "IMAGE" else a for a in argv]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 1
    assert words in capsys.readouterr().err
