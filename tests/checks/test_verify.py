"""convlens verify: the engine against each framework's own autograd, on the weights the file holds."""
import json

import torch

from convlens.cli import main


def _verify(capsys, args):
    rc = main(["verify", *args, "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    result = json.loads(captured.out)
    return rc, result


def test_verify_torch_vgg16(torch_vgg16, capsys):
    rc, result = _verify(
        capsys, [str(torch_vgg16["path"]), "--source", "torch:vgg16", "--weights", str(torch_vgg16["state"])]
    )
    assert rc == 0 and result["passed"], result["rows"]
    assert len(result["rows"]) == 5


def test_verify_keras_vgg16(tmp_path, keras_vgg16, capsys):
    h5 = tmp_path / "k.weights.h5"
    keras_vgg16["net"].save_weights(str(h5))
    rc, result = _verify(capsys, [str(keras_vgg16["path"]), "--source", "keras:VGG16", "--weights", str(h5)])
    assert rc == 0 and result["passed"], result["rows"]


def test_verify_torch_resnet18_and_catches_wrong_weights(tmp_path, capsys):
    import torchvision

    from convlens.converters import convert

    torch.manual_seed(21)
    net = torchvision.models.resnet18(weights=None)
    pth = tmp_path / "r18.pth"
    torch.save(net.state_dict(), pth)
    onnx_path = convert("torch:resnet18", tmp_path / "r18.onnx", weights=str(pth))
    rc, result = _verify(capsys, [str(onnx_path), "--source", "torch:resnet18", "--weights", str(pth)])
    assert rc == 0 and result["passed"], result["rows"]
    cam_row = next(r for r in result["rows"] if r["figure"].startswith("Grad-CAM"))
    assert "layer4" in cam_row["figure"]  # a 7x7 grid, not the 1x1 avgpool where every map is equal
    rc, result = _verify(capsys, [str(onnx_path), "--source", "torch:resnet18", "--weights", "none"])
    assert rc == 3 and not result["passed"] and result["first_failure"].startswith("logits")
    cam_row = next(r for r in result["rows"] if r["figure"].startswith("Grad-CAM"))
    assert not cam_row["ok"], result["rows"]  # wrong weights: the Grad-CAM row says so too


def test_verify_a_torch_onnx_export(tmp_path, capsys):
    """A file torch.onnx wrote (no convlens metadata): checked on its logits and input gradient."""
    import torchvision

    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None).eval()
    pth = tmp_path / "r18.pth"
    torch.save(net.state_dict(), pth)
    path = tmp_path / "exported.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17)
    rc, result = _verify(capsys, [str(path), "--source", "torch:resnet18", "--weights", str(pth),
                                  "--preprocess", "torch"])
    assert rc == 0 and result["passed"], result["rows"]
    assert [r["figure"] for r in result["rows"]] == ["logits max relative difference",
                                                     "input gradient relative L2 difference"]


def test_verify_keras_file(tmp_path, capsys):
    import keras

    from convlens.converters import convert

    keras.utils.set_random_seed(2)
    net = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="p1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, name="out"),
        ]
    )
    path = tmp_path / "small.keras"
    net.save(path)
    out = convert(str(path), tmp_path / "small.onnx")
    rc, result = _verify(capsys, [str(out), "--source", str(path)])
    assert rc == 0 and result["passed"], result["rows"]


def test_verify_a_pt2_file(tmp_path, capsys):
    """A torch.export program: the file converted from it against the program's own module and autograd; a file
    of other weights fails."""
    from convlens.converters import convert

    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 4)).eval()
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 48, 48),)), str(pt2))
    out = convert(str(pt2), tmp_path / "net.onnx")
    rc, result = _verify(capsys, [str(out), "--source", str(pt2)])
    assert rc == 0 and result["passed"], result["rows"]
    with torch.no_grad():
        net[0].weight.mul_(1.5)
    other = tmp_path / "other.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 48, 48),)), str(other))
    rc, result = _verify(capsys, [str(out), "--source", str(other)])
    assert rc == 3 and not result["passed"]


def test_verify_rebuilds_the_seeded_random_weights_a_file_records(tmp_path, capsys):
    """`convert --weights none` draws seeded weights and records it: verify with no --weights passes, as the
    README's commands run it; another source, or a file that records no weights, is refused in a sentence."""
    from convlens.converters import convert

    path = convert("torch:resnet18", tmp_path / "r18.onnx", weights="none")
    rc, result = _verify(capsys, [str(path), "--source", "torch:resnet18"])
    assert rc == 0 and result["passed"], result["rows"]
    assert main(["verify", str(path), "--source", "torch:vgg16"]) == 1
    assert capsys.readouterr().err.strip() == ("convlens: r18.onnx was converted from torchvision.resnet18, not from "
                                               "torch:vgg16; verify it against the source it was converted from.")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()), (torch.zeros(1, 3, 8, 8),),
                      str(foreign), dynamo=False, opset_version=17)
    assert main(["verify", str(foreign), "--source", "torch:resnet18", "--preprocess", "torch"]) == 1
    assert "does not record the weights it was made with, so verify cannot rebuild them; pass --weights" \
        in capsys.readouterr().err
