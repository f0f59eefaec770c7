"""convlens compare: Keras and PyTorch VGG16 with shared weights agree; a perturbed kernel is caught."""
import json

import torch

import convlens
from helpers import IMAGE

from convlens.cli import main


def test_shared_weights_pass_compare(tmp_path, keras_vgg16, torch_vgg16, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", str(keras_vgg16["path"]), str(torch_vgg16["path"]), str(IMAGE), "-o", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, result["first_failure"]
    assert result["passed"] and len(result["rows"]) == 20
    assert result["figures"]["top5 agreement"]["ok"]
    assert result["figures"]["Grad-CAM max abs difference"]["value"] <= 1e-3
    assert (out / "compare.md").read_text().startswith("| keras_vgg16.onnx | torch_vgg16.onnx |")
    assert (out / "gradcam_side_by_side.png").exists() and (out / "filters_side_by_side.png").exists()


def test_perturbed_kernel_fails_and_names_the_first_layer(tmp_path, keras_vgg16, torch_vgg16, capsys):
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    net = torchvision.models.vgg16(weights=None).eval()
    net.load_state_dict(torch.load(torch_vgg16["state"], weights_only=True))
    with torch.no_grad():
        net.features[10].weight[3] += 0.05 * torch.randn_like(net.features[10].weight[3])  # block3_conv1
    bad = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224), name="torchvision.vgg16"), tmp_path / "bad.onnx")
    rc = main(["compare", str(keras_vgg16["path"]), str(bad), str(IMAGE), "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 3
    assert "first difference at layer block3_conv1 / features.11" in captured.err
    assert "| block2_pool | features.9 |" in captured.out and "| yes |" in captured.out


def test_own_and_foreign_resnet_align_by_structure_and_a_logit_shift_fails(tmp_path, capsys):
    """convlens's ResNet-18 against torch.onnx's export of the same weights: names differ (and torch.onnx
    folds the batch norms), so layers pair by convolution depth and op; a constant added to every logit
    keeps the top 5 and the probabilities, and still fails on the logits."""
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(4)
    net = torchvision.models.resnet18(weights=None).eval()
    own = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224), name="resnet18"), tmp_path / "own.onnx")

    def export(path):
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17)
        return str(path)

    foreign = export(tmp_path / "foreign.onnx")
    rc = main(["compare", str(own), foreign, str(IMAGE), "-o", str(tmp_path / "same"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0, result["first_failure"]
    pairs = [(r["a"], r["b"]) for r in result["rows"]]
    assert len(pairs) >= 8 and all(a != b for a, b in pairs)
    assert ("layer4.1.relu", "layer4.1.relu_1.Relu") in pairs  # the last block's output, after add and ReLU
    assert result["figures"]["logits max relative difference"]["ok"]
    with torch.no_grad():
        net.fc.bias += 0.5
    shifted = export(tmp_path / "shifted.onnx")
    rc = main(["compare", str(own), shifted, str(IMAGE), "-o", str(tmp_path / "shifted"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 3 and result["first_failure"] == "logits"
    assert result["figures"]["top5 agreement"]["ok"] and result["figures"]["probabilities max abs difference"]["ok"]


def test_two_exports_of_real_weights_pass_within_float32_noise_and_a_perturbed_kernel_fails(tmp_path, lite0):
    """EfficientNet-Lite0 (real weights, ReLU6) against torch.onnx's plain export of the same weights. On the
    coffee photo the two input gradients for class 900 differ by ~4e-3 (a ReLU6 kink flips under float32
    rounding): more than a fixed 1e-3, within the gradient's own float32 noise, which compare measures."""
    import skimage.data

    from convlens.converters.pretrained import efficientnet_lite0

    net = efficientnet_lite0().eval()
    coffee = skimage.data.coffee()

    def export(path):
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17)
        return convlens.load(path, preprocess="tf")

    plain = export(tmp_path / "plain.onnx")
    result = convlens.compare(lite0, plain, coffee, target=900)
    gradient = result.figures["input gradient relative difference"]
    assert result.passed, result.first_failure
    assert gradient["value"] > 1e-3 and gradient["limit"] >= gradient["value"]
    assert result.figures["input gradient float32 noise"]["value"] > 0
    with torch.no_grad():
        net._blocks[4]._expand_conv.weight[3] += 0.05 * torch.randn_like(net._blocks[4]._expand_conv.weight[3])
    result = convlens.compare(lite0, export(tmp_path / "bad.onnx"), coffee, target=900)
    assert not result.passed and "_blocks.4" in result.first_failure
