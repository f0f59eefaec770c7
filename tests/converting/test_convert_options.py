"""Every `convert` option takes effect for each source kind or is refused with one sentence; output is quiet."""
import subprocess
import sys

import pytest
import torch

from convlens.cli import main
from convlens.engine import load


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny .keras file and a tiny .pt2 file."""
    import keras

    folder = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(0)
    tiny = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
                             keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, name="out")])
    tiny.save(folder / "tiny.keras")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 16, 16),)), str(folder / "tiny.pt2"))
    return {"keras-file": str(folder / "tiny.keras"), "torch-file": str(folder / "tiny.pt2")}


REFUSED = [
    ("keras-file", ["--weights", "w.h5"], "--weights does not apply to"),
    ("keras-file", ["--weights", "none"], "--weights does not apply to"),  # as every other value is
    ("keras-file", ["--no-top"], "--no-top does not apply to"),
    ("keras-file", ["--input-size", "64"], "--input-size does not apply to"),
    ("torch-file", ["--weights", "w.pth"], "--weights does not apply to"),
    ("torch-file", ["--no-top"], "--no-top does not apply to"),
    ("torch-file", ["--input-size", "64"], "--input-size does not apply to"),
    ("torch:resnet18", ["--no-top"], "--no-top applies to keras:NAME sources"),
]


@pytest.mark.parametrize("source,options,words", REFUSED)
def test_options_that_do_not_apply_are_refused(tmp_path, saved_models, source, options, words, capsys):
    src = saved_models.get(source, source)
    assert main(["convert", src, *options, "-o", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("source", ["keras-file", "torch-file"])
def test_preprocess_takes_effect_on_saved_files(tmp_path, saved_models, source, capsys):
    out = tmp_path / "out.onnx"
    assert main(["convert", saved_models[source], "--preprocess", "caffe", "-o", str(out)]) == 0
    assert "caffe preprocessing" in capsys.readouterr().out
    spec = load(out).input_spec
    assert spec.preset == "caffe" and spec.color == "BGR"


def test_preprocess_and_input_size_take_effect_on_torchvision(tmp_path, capsys):
    out = tmp_path / "sq.onnx"
    assert main(["convert", "torch:squeezenet1_1", "--preprocess", "tf", "--input-size", "64", "-o", str(out)]) == 0
    spec = load(out).input_spec
    assert spec.preset == "tf" and tuple(spec.size) == (64, 64)


def test_keras_applications_options_take_effect(tmp_path):
    out = tmp_path / "mn.onnx"
    assert main(["convert", "keras:MobileNet", "--no-top", "--input-size", "96", "--preprocess", "raw",
                 "-o", str(out), "--quiet"]) == 0
    m = load(out)
    assert m.input_spec.preset == "raw" and tuple(m.input_spec.size) == (96, 96) and m.meta.logits is None


@pytest.mark.parametrize("name,aux_prefix", [("googlenet", "aux1."), ("inception_v3", "AuxLogits.")])
def test_torchvision_weights_with_or_without_auxiliary_classifiers(tmp_path, name, aux_prefix):
    import torchvision

    from convlens.converters.torch_converter import torchvision_model

    for aux in (True, False):
        torch.manual_seed(0)
        saved = torchvision.models.get_model(name, weights=None, aux_logits=aux, init_weights=False).eval()
        path = tmp_path / f"{name}_{aux}.pth"
        torch.save(saved.state_dict(), path)
        loaded = torchvision_model(name, str(path))
        assert any(k.startswith(aux_prefix) for k in loaded.state_dict()) == aux
        x = torch.randn(1, 3, 299, 299)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), saved(x))


def test_convert_prints_one_line_by_default(tmp_path, saved_models):
    """Converting a Keras file (TensorFlow, absl and tf2onnx all loaded) prints the summary and nothing else."""
    cmd = [sys.executable, "-m", "convlens.cli", "convert", saved_models["keras-file"], "-o", str(tmp_path / "k.onnx")]
    quiet = subprocess.run(cmd, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.count("\n") == 1 and quiet.stdout.startswith("wrote ")
