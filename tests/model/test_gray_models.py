"""Grayscale models take one gray channel (RGB images converted to luma), in every path, from both
frameworks, checked against each framework's own computation on the same gray input."""
import numpy as np
import torch

import convlens
from convlens.cli import main

PIXELS = np.random.default_rng(9).uniform(0, 255, (28, 28, 3)).astype(np.float32)
GRAY = PIXELS @ np.array([0.299, 0.587, 0.114], np.float32)  # (28, 28)


def test_keras_one_channel_model(tmp_path, capsys):
    import keras
    import tensorflow as tf

    from convlens.converters.keras_converter import convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    keras.utils.set_random_seed(3)
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
                            keras.layers.Flatten(name="flat"), keras.layers.Dense(10, name="logits")])
    path = save_onnx(convert_keras_model(net, name="mnist", preprocess="raw"), tmp_path / "mnist.onnx")
    model = convlens.load(path)
    assert model.input_spec.channels == 1
    acts = convlens.activations(model, PIXELS, ["c2"])["c2"]
    x = tf.constant(GRAY[None, :, :, None])
    ref = keras.Model(net.inputs, net.get_layer("c2").output)(x).numpy()
    assert acts.shape == (1, 24, 24, 8)  # one image, not a batch of three planes
    np.testing.assert_allclose(acts, ref, rtol=1e-4, atol=1e-4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = net(x)
        cls = int(tf.argmax(logits[0]))
        score = logits[0, cls]
    g = tape.gradient(score, x).numpy()[0, :, :, 0]
    sal = convlens.saliency(model, PIXELS, target=cls)[0].attribution
    # d score / d pixel_c = weight_c * d score / d gray
    np.testing.assert_allclose(
        sal, g[..., None] * np.array([0.299, 0.587, 0.114]), rtol=1e-3, atol=1e-6 * np.abs(g).max()
    )
    assert main(["layers", str(path)]) == 0
    assert "gray" in capsys.readouterr().out


def test_torch_one_channel_export(tmp_path):
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    path = tmp_path / "gray.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17)
    x = torch.from_numpy(GRAY[None, None].copy()).requires_grad_(True)
    kept = {}
    net[3].register_forward_hook(lambda _m, _i, out: kept.__setitem__("A", out))
    logits = net(x)
    cls = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, cls], kept["A"])
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * kept["A"]).sum(1))[0].detach().numpy()
    maps, _ = convlens.cam(path, PIXELS, preprocess="raw")
    assert maps[0][0].class_index == cls
    np.testing.assert_allclose(maps[0][0].cam, cam / cam.max(), atol=1e-4)
