"""Whole models: the engine's gradients against torch.autograd and tf.GradientTape on the same weights.

Pixel gradients run through the input adapter, so the references differentiate their own
preprocessing too.
"""
import numpy as np
import pytest
import torch
from helpers import assert_close

from convlens.engine import load
from convlens.engine.runtime.adapter import PIXELS
from convlens.engine.runtime.objectives import one_hot
from convlens.engine.techniques.gradients import gradient_program, run_gradient
from convlens.engine.techniques.targets import Target


def engine_grads(model, pixels, classes, wrt=(PIXELS,), layer=None):
    prog, channels = gradient_program(model, Target(layer=layer), pixels.shape[1:3], wrt=tuple(wrt))
    out = run_gradient(prog, pixels, one_hot(classes, channels))
    return {w: out[prog.grads[w]] for w in wrt}, out["objective_items"]


def torch_pixel_grads(net, spec, pixels, classes, layers=()):
    """Pixel gradient (and gradients at named leaf modules) of sum_i logit[i, classes[i]]."""
    p = torch.tensor(pixels, requires_grad=True)
    x = p[..., [2, 1, 0]] if spec.color == "BGR" else p
    x = ((x * spec.scale - torch.tensor(spec.mean, dtype=torch.float32)) / torch.tensor(spec.std, dtype=torch.float32))
    x = x.permute(0, 3, 1, 2)
    saved = {}
    mods = dict(net.named_modules())
    hooks = []
    for name in layers:
        def hook(_m, _i, out, n=name):
            out.retain_grad()
            saved[n] = out
        hooks.append(mods[name].register_forward_hook(hook))
    inplace = [(m, m.inplace) for m in net.modules() if isinstance(getattr(m, "inplace", None), bool)]
    for m, _ in inplace:
        m.inplace = False
    try:
        logits = net(x)
        logits[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    finally:
        for h in hooks:
            h.remove()
        for m, f in inplace:
            m.inplace = f
    return p.grad.numpy(), {n: saved[n].grad.numpy() for n in layers}, logits.detach().numpy()


def test_vgg16_pixel_and_layer_gradients_match_torch(torch_vgg16, image):
    model = load(torch_vgg16["path"])
    rng = np.random.default_rng(0)
    pixels = np.stack([image, np.clip(image + rng.normal(0, 20, image.shape), 0, 255)]).astype(np.float32)
    classes = [386, 281]
    layers = ["features.29", "features.15"]
    got, items = engine_grads(model, pixels, classes, wrt=(PIXELS, *layers))
    ref, ref_layers, logits = torch_pixel_grads(torch_vgg16["net"], model.input_spec, pixels, classes, layers)
    assert_close(items, logits[[0, 1], classes], what="objective")
    assert_close(got["features.29"], ref_layers["features.29"], what="gradient at features.29 (block5_conv3)")
    # Below the max-pools, near-ties (values equal to ~1e-6) can pick a different argmax in ORT and
    # torch, both correct; the gradients then agree except at those windows.
    for name, g, r in [("features.15", got["features.15"], ref_layers["features.15"]), ("pixels", got[PIXELS], ref)]:
        rel = np.linalg.norm(g - r) / np.linalg.norm(r)
        assert rel < 1e-2, f"{name}: relative L2 error {rel:.2e}"
        assert np.mean(np.abs(g - r) <= 1e-4 * (np.abs(r) + np.abs(r).max())) > 0.99, name


TORCH_MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "squeezenet1_1",
                "convnext_tiny", "regnet_x_400mf"]


@pytest.fixture(scope="module")
def small_torch_models(tmp_path_factory):
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    folder = tmp_path_factory.mktemp("small_torch")
    out = {}
    for name in TORCH_MODELS:
        torch.manual_seed(3)
        net = torchvision.models.get_model(name, weights=None).eval()
        with torch.no_grad():  # random BN statistics, so batch norm is not the identity
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        path = save_onnx(convert_module(net, torch.zeros(1, 3, 64, 64), name=name), folder / f"{name}.onnx")
        out[name] = (net, path)
    return out


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torchvision_pixel_gradients_match_torch(small_torch_models, name):
    net, path = small_torch_models[name]
    model = load(path)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    classes = [7, 901]
    got, items = engine_grads(model, pixels, classes)
    ref, _, logits = torch_pixel_grads(net, model.input_spec, pixels, classes)
    assert_close(items, logits[[0, 1], classes], what=f"{name} objective")
    pools = any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    if not pools:
        assert_close(got[PIXELS], ref, rtol=1e-4, what=f"{name} pixel gradient")
    else:
        rel = np.linalg.norm(got[PIXELS] - ref) / np.linalg.norm(ref)
        assert rel < 1e-3, f"{name}: relative L2 error {rel:.2e}"


def test_intermediate_layer_gradient_resnet(small_torch_models):
    net, path = small_torch_models["resnet18"]
    model = load(path)
    pixels = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    got, _ = engine_grads(model, pixels, [5], wrt=("layer3.1.bn2",))
    _, ref, _ = torch_pixel_grads(net, model.input_spec, pixels, [5], ["layer3.1.bn2"])
    assert_close(got["layer3.1.bn2"], ref["layer3.1.bn2"], what="gradient at layer3.1.bn2")


# --- Keras, against tf.GradientTape -----------------------------------------------------------------
def tape_grads(net, spec, pixels, classes, logits_fn=None):
    import tensorflow as tf

    p = tf.constant(pixels)
    with tf.GradientTape() as tape:
        tape.watch(p)
        x = p[..., ::-1] if spec.color == "BGR" else p
        x = (x * spec.scale - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)
        scores = logits_fn(x) if logits_fn else net(x)
        obj = tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=0) * tf.eye(len(classes)))
    return tape.gradient(obj, p).numpy(), scores.numpy()


def keras_logits_fn(net):
    """The pre-softmax scores of a Keras classifier whose last Dense has a softmax activation."""
    import keras

    last = net.layers[-1]
    body = keras.Model(net.inputs, last.input)
    return lambda x: keras.ops.matmul(body(x), last.kernel) + last.bias


def test_keras_vgg16_pixel_gradient_matches_gradient_tape(keras_vgg16, image):
    model = load(keras_vgg16["path"])
    pixels = image[None].astype(np.float32)
    got, items = engine_grads(model, pixels, [386])
    ref, scores = tape_grads(keras_vgg16["net"], model.input_spec, pixels, [386], keras_logits_fn(keras_vgg16["net"]))
    assert_close(items, scores[0, [386]], what="logit")
    rel = np.linalg.norm(got[PIXELS] - ref) / np.linalg.norm(ref)
    assert rel < 1e-2, f"relative L2 error {rel:.2e} (max-pool near-ties aside, see the torch test)"


@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetB0"])
def test_keras_models_pixel_gradients_match_gradient_tape(tmp_path, name):
    import keras

    from convlens.converters.keras_converter import applications_preprocess, convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    keras.utils.set_random_seed(4)
    ctor = getattr(keras.applications, name)
    net = ctor(weights=None, input_shape=(64, 64, 3), **({"alpha": 0.35} if name == "MobileNetV2" else {}))
    path = save_onnx(convert_keras_model(net, preprocess=applications_preprocess(name)), tmp_path / f"{name}.onnx")
    model = load(path)
    pixels = np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    got, items = engine_grads(model, pixels, [3, 999])
    ref, scores = tape_grads(net, model.input_spec, pixels, [3, 999], keras_logits_fn(net))
    assert_close(items, scores[[0, 1], [3, 999]], what=f"{name} logits")
    assert_close(got[PIXELS], ref, rtol=1e-4, what=f"{name} pixel gradient")
