"""`--layer auto` on convlens's own conversions: the practitioner's layer, named here, by torch's own Grad-CAM."""
import json

import numpy as np
import pytest
import torch
from helpers import torch_gradcam

import convlens
from convlens.cli import main
from convlens.engine.techniques.cam_layer import AUTO_RULE

SIZE = 64
PIXELS = np.random.default_rng(1).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)


def _converted(tmp_path, net):
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    path = tmp_path / "net.onnx"
    save_onnx(convert_module(net, torch.zeros(1, 3, SIZE, SIZE), name="net", preprocess="raw"), path)
    return path


@pytest.mark.parametrize("arch,practitioner_layer", [
    ("resnet18", lambda n: n.layer4),  # after the last block's add and ReLU, not layer4.1.bn2
    ("convnext_tiny", lambda n: n.features[-1]),  # the last stage's output, not the 1x1 classifier.0
])
def test_auto_layer_is_the_practitioners_layer(tmp_path, arch, practitioner_layer, capsys):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    path = _converted(tmp_path, net)
    ref, cls = torch_gradcam(net, practitioner_layer(net), torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(path, PIXELS)
    got = maps[0][0]
    assert got.class_index == cls and got.cam.shape == ref.shape and min(ref.shape) > 1
    assert np.abs(got.cam - ref).max() < 1e-4
    image = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    assert main(["cam", str(path), str(image), "-o", str(tmp_path / "cam"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the CLI reports the rule that chose (the API's), and naming the layer says so
    assert result["layer"] == got.layer and result["layer_rule"] == got.layer_rule == AUTO_RULE
    assert main(["cam", str(path), str(image), "--layer", got.layer, "-o", str(tmp_path / "named"), "--json"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert named["layer"] == got.layer and named["layer_rule"] == "given by --layer"


def test_a_layer_without_a_grid_is_refused(tiny_torch, capsys):
    image = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(convlens.ConvlensError, match="has a 1x1 grid, so its map is one constant value"):
        convlens.cam(tiny_torch["path"], image, layer="5")  # the global average pool
    with pytest.raises(convlens.ConvlensError, match="has no spatial output"):
        convlens.cam(tiny_torch["path"], image, layer="7")  # the classifier


def test_auto_on_keras_vgg16_is_block5_conv3(keras_vgg16, image):
    maps, _ = convlens.cam(keras_vgg16["path"], image)
    named, _ = convlens.cam(keras_vgg16["path"], image, layer="block5_conv3")
    assert maps[0][0].cam.shape == (14, 14)
    np.testing.assert_array_equal(maps[0][0].cam, named[0][0].cam)


def test_auto_skips_a_convolution_after_the_global_pool(tmp_path):
    """timm's MobileNetV3 ends in a 1x1 `conv_head` after its global pool: the map belongs before the pool."""
    from torch import nn

    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.Hardswish(),
                        nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 32, 1), nn.Hardswish(), nn.Flatten(),
                        nn.Linear(32, 5)).eval()
    path = _converted(tmp_path, net)
    ref, cls = torch_gradcam(net, net[3], torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(path, PIXELS)
    assert maps[0][0].layer == "3" and maps[0][0].class_index == cls
    assert np.abs(maps[0][0].cam - ref).max() < 1e-4


def test_a_class_map_head_steps_back_to_the_features(tmp_path, capsys):
    """SqueezeNet's head is a 1x1 convolution to one map per class, pooled into the scores: its map would be the
    prediction itself, so auto takes the features before it (the layer pytorch-grad-cam's users pick there)."""
    import torchvision

    from convlens.engine.techniques.cam_layer import CLASS_MAP_RULE

    torch.manual_seed(2)
    net = torchvision.models.squeezenet1_1(weights=None, num_classes=12).eval()
    path = _converted(tmp_path, net)
    ref, cls = torch_gradcam(net, net.features, torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(path, PIXELS)
    assert maps[0][0].class_index == cls and maps[0][0].layer_rule == CLASS_MAP_RULE
    assert np.abs(maps[0][0].cam - ref).max() < 1e-4


def test_auto_keeps_a_text_recognizers_flat_grid(tmp_path):
    """A text recognizer strides height far more than width (a 1x16 grid from a 32x64 input): that grid is the
    last feature layer, not a reason to pick an early block."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=(4, 2), padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, stride=(8, 2), padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    path = save_onnx(convert_module(net, torch.zeros(1, 3, 32, 64), name="text", preprocess="raw"), tmp_path / "t.onnx")
    pixels = PIXELS[:32]
    ref, cls = torch_gradcam(net, net[3], torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(path, pixels)
    assert ref.shape == (1, 16) and maps[0][0].cam.shape == (1, 16) and maps[0][0].class_index == cls
    assert np.abs(maps[0][0].cam - ref).max() < 1e-4
