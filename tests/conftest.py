"""Shared fixtures. Frameworks are imported in an order that works (triton before TensorFlow)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from convlens.converters.frameworks import preload_triton  # noqa: E402

preload_triton()

import pytest  # noqa: E402
from helpers import IMAGE  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def torch_vgg16(models_dir):
    """torchvision VGG16 with seeded random weights, its state dict, and its .onnx file."""
    import torch
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    path = models_dir / "torch_vgg16.onnx"
    save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224), name="torchvision.vgg16"), path)
    state_path = models_dir / "vgg16.pth"
    torch.save(net.state_dict(), state_path)
    return {"net": net, "path": path, "state": state_path}


@pytest.fixture(scope="session")
def keras_vgg16(models_dir, torch_vgg16):
    """Keras VGG16 holding the torch fixture's weights (transferred), and its .onnx file."""
    from convlens.converters.keras_converter import applications_model, convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    net = applications_model("VGG16", weights=str(torch_vgg16["state"]))
    path = models_dir / "keras_vgg16.onnx"
    save_onnx(convert_keras_model(net, name="VGG16", preprocess="caffe"), path)
    return {"net": net, "path": path}


@pytest.fixture(scope="session")
def image():
    from convlens.engine.render.images import load_image, resize

    return resize(load_image(IMAGE), (224, 224))


@pytest.fixture(scope="session")
def tiny_torch(models_dir):
    """A small seeded convnet (10 classes, 32 px, any input size), converted by convlens: for CLI paths
    where the model's size does not matter."""
    import torch
    from torch import nn

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = models_dir / "tiny_torch.onnx"
    save_onnx(convert_module(net, torch.zeros(1, 3, 32, 32), name="tiny", labels=[f"class{i}" for i in range(10)]),
              path)
    return {"net": net, "path": path}


@pytest.fixture(scope="session")
def lite0(models_dir):
    """EfficientNet-Lite0 with its real ImageNet weights (shipped in a package), converted once."""
    import torch

    from convlens import load
    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    path = save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), name="efficientnet-lite0",
                                    preprocess="tf"), models_dir / "lite0.onnx")
    return load(path)


@pytest.fixture(scope="session")
def yolo(tmp_path_factory):
    """tests/detector_files.py's YOLOv8n: (torch model, file without NMS, file with NMS inside)."""
    from detector_files import build_yolo

    return build_yolo(tmp_path_factory.mktemp("yolo"))


@pytest.fixture(scope="session")
def detr(tmp_path_factory):
    """tests/detector_files.py's DETR: (torch module, .onnx file)."""
    from detector_files import build_detr

    return build_detr(tmp_path_factory.mktemp("detr"))


@pytest.fixture(scope="session")
def yolov5_style(tmp_path_factory):
    """tests/detector_files.py's YOLOv5-style detector with objectness: (torch module, .onnx file)."""
    from detector_files import build_yolov5_style

    return build_yolov5_style(tmp_path_factory.mktemp("yolov5"))


@pytest.fixture(scope="session")
def yolo26(tmp_path_factory):
    """tests/detector_files.py's YOLO26n (NMS-free): (torch model, plain export, end2end export with a TopK)."""
    from detector_files import build_yolo

    return build_yolo(tmp_path_factory.mktemp("yolo26"), yaml="yolo26n.yaml")
