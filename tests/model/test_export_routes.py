"""Files written by the usual exporters, not by convlens: Grad-CAM at the layer `auto` picks equals the
framework's own Grad-CAM (torch autograd, tf.GradientTape) at the layer a practitioner picks by hand
(pytorch-grad-cam's README: ResNet `layer4[-1]`, MobileNetV2 `features[-1]`; Keras: the last block's
output). The practitioner's layer is written here by name, never taken from what `auto` returns."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import normalized, torch_gradcam

import convlens

SIZE = 96
PIXELS = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)


# ---- torch --------------------------------------------------------------------------------------

def _torch_nets():
    import torchvision

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    mobilenet = torchvision.models.mobilenet_v2(weights=None).eval()
    for net in (resnet, mobilenet):  # random BN statistics, so the folded batch norms are not identities
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return {"resnet18": (resnet, lambda n: n.layer4[-1]), "mobilenet_v2": (mobilenet, lambda n: n.features[-1])}


TORCH_ROUTES = {
    "torchscript-opset13": {"dynamo": False, "opset_version": 13},
    "torchscript-opset17": {"dynamo": False, "opset_version": 17},
    "dynamo": {"dynamo": True},
}


@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_exports")
    nets, files = _torch_nets(), {}
    x = torch.zeros(1, 3, SIZE, SIZE)
    for arch, (net, _) in nets.items():
        for route, kwargs in TORCH_ROUTES.items():
            path = folder / f"{arch}_{route}.onnx"
            torch.onnx.export(net, (x,), str(path), input_names=["image"], **kwargs)
            files[arch, route] = path
    return nets, files


@pytest.mark.slow
@pytest.mark.parametrize("route", list(TORCH_ROUTES))
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torch_export_routes_gradcam_at_auto_layer(torch_exports, arch, route):
    nets, files = torch_exports
    net, practitioner_layer = nets[arch]
    ref, cls = torch_gradcam(net, practitioner_layer(net), torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(files[arch, route], PIXELS, preprocess="raw")
    got = maps[0][0]
    assert got.class_index == cls
    assert got.cam.shape == ref.shape
    print(f"ROUTE {route} {arch} layer={got.layer} grid={got.cam.shape} maxdiff={np.abs(got.cam - ref).max():.2e}")
    assert np.abs(got.cam - ref).max() < 1e-3, (got.layer, np.abs(got.cam - ref).max())


# ---- Keras --------------------------------------------------------------------------------------

def _keras_nets():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    mobilenet = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3))
    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=4, padding="same")(inp)))
    y = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x)))
    y = layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(y))
    x = layers.ReLU(name="block_out")(layers.Add()([x, y]))
    out = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    resnet = keras.Model(inp, out, name="tiny_resnet")
    for model in (mobilenet, resnet):  # random BN statistics
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                rng = np.random.default_rng(len(layer.name))
                layer.set_weights([gamma, beta, rng.uniform(-0.2, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return {"mobilenet_v2": (mobilenet, "out_relu"), "tiny_resnet": (resnet, "block_out")}


KERAS_ROUTES = ["tf2onnx-cli-savedmodel", "tf2onnx-python", "keras-export-onnx"]


@pytest.fixture(scope="module")
def keras_exports(tmp_path_factory):
    import tensorflow as tf
    import tf2onnx

    folder = tmp_path_factory.mktemp("keras_exports")
    nets, files = _keras_nets(), {}
    for arch, (net, _) in nets.items():
        saved = folder / f"{arch}_savedmodel"
        net.export(str(saved), verbose=False)
        path = folder / f"{arch}_tf2onnx-cli-savedmodel.onnx"
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--opset", "17",
                        "--output", str(path)], check=True, capture_output=True)
        files[arch, "tf2onnx-cli-savedmodel"] = path
        path = folder / f"{arch}_tf2onnx-python.onnx"
        spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
        tf2onnx.convert.from_keras(net, input_signature=spec, opset=17, output_path=str(path))
        files[arch, "tf2onnx-python"] = path
        path = folder / f"{arch}_keras-export-onnx.onnx"
        net.export(str(path), format="onnx", verbose=False)
        files[arch, "keras-export-onnx"] = path
    return nets, files


def keras_gradcam(net, layer_name, x):
    import keras
    import tensorflow as tf

    dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)][-1]
    sub = keras.Model(net.inputs, [net.get_layer(layer_name).output, dense.input])
    with tf.GradientTape() as tape:
        acts, feats = sub(x, training=False)
        logits = tf.matmul(feats, dense.kernel) + dense.bias  # pre-softmax scores
        cls = int(tf.argmax(logits[0]))
        score = logits[0, cls]
    grad = tape.gradient(score, acts).numpy()[0]
    cam = (grad.mean(axis=(0, 1)) * acts.numpy()[0]).sum(-1)
    return normalized(cam), cls


@pytest.mark.slow
@pytest.mark.parametrize("route", KERAS_ROUTES)
@pytest.mark.parametrize("arch", ["mobilenet_v2", "tiny_resnet"])
def test_keras_export_routes_gradcam_at_auto_layer(keras_exports, arch, route):
    nets, files = keras_exports
    net, practitioner_layer = nets[arch]
    ref, cls = keras_gradcam(net, practitioner_layer, PIXELS[None])
    model = convlens.load(files[arch, route], preprocess="raw")
    assert model.input_spec.layout == "NHWC"
    maps, _ = convlens.cam(model, PIXELS)
    got = maps[0][0]
    assert got.class_index == cls
    assert got.cam.shape == ref.shape
    print(f"ROUTE {route} {arch} layer={got.layer} grid={got.cam.shape} maxdiff={np.abs(got.cam - ref).max():.2e}")
    assert np.abs(got.cam - ref).max() < 1e-3, (got.layer, np.abs(got.cam - ref).max())


@pytest.mark.slow
@pytest.mark.parametrize("route", list(TORCH_ROUTES))
def test_input_gradient_through_overlapping_max_pools_on_every_opset(torch_exports, route):
    """ResNet-18's 3x3 stride-2 max-pool: gradients from overlapping windows add up (ScatterElements with
    reduction, opset 16); opset 13 files are run as opset 16 and give torch's gradient."""
    nets, files = torch_exports
    net = nets["resnet18"][0]
    x = torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy()).requires_grad_(True)
    logits = net(x)
    cls = int(logits.argmax(1))
    logits[0, cls].backward()
    ref = x.grad[0].permute(1, 2, 0).numpy()
    got = convlens.saliency(files["resnet18", route], PIXELS, preprocess="raw", target=cls)[0].attribution
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
