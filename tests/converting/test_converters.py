"""Converters against their frameworks: every exposed layer and the logits, metadata, weight transfer."""
import numpy as np
import onnx
import onnxruntime as ort
import torch
from helpers import assert_close, nchw

from convlens.engine import load
from convlens.engine.metadata import ModelMeta
from convlens.engine.model.model import read_meta
from convlens.engine.runtime.adapter import apply_numpy


def _ort_outputs(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": x})))


def test_torch_vgg16_every_layer_matches_torch(torch_vgg16, image):
    net = torch_vgg16["net"]
    model = load(torch_vgg16["path"])
    x = apply_numpy(image[None], model.input_spec)
    outs = _ort_outputs(torch_vgg16["path"], x)
    captured = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: captured.__setitem__(n, o.detach().clone()))
             for n, m in net.named_modules() if n]
    with torch.no_grad():
        logits = net(torch.tensor(x)).numpy()
    for h in hooks:
        h.remove()
    assert_close(outs["logits"], logits, what="logits")
    assert len(model.layers) == len(captured)  # every named module, containers ("features") included
    assert model.layer("features").tensor == model.layer("features.30").tensor
    for layer in model.layers:
        assert_close(outs[layer.tensor], captured[layer.name].numpy(), what=layer.name)


def test_keras_vgg16_every_layer_matches_keras(keras_vgg16, image):
    import keras

    net = keras_vgg16["net"]
    model = load(keras_vgg16["path"])
    assert model.meta.source == "keras" and model.input_spec.preset == "caffe" and model.input_spec.layout == "NHWC"
    x = apply_numpy(image[None], model.input_spec)
    outs = _ort_outputs(keras_vgg16["path"], x)
    layers = [l for l in net.layers if type(l).__name__ != "InputLayer"]
    ref = keras.Model(net.inputs, [l.output for l in layers])(x)
    for layer, value in zip(layers, ref):
        assert_close(outs[model.layer(layer.name).tensor], np.asarray(value), what=layer.name)
    # Keras VGG16 ends in softmax: the logits are recorded too, and softmax(logits) = predictions
    logits = outs[model.meta.logits]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    assert_close(probs / probs.sum(1, keepdims=True), np.asarray(ref[-1]), what="softmax(logits)")


def test_shared_weights_give_the_same_activations_and_logits(torch_vgg16, keras_vgg16, image):
    from convlens.converters.vgg_transfer import vgg16_layer_pairs
    from convlens.engine.techniques.activations import activations

    # the same preprocessing on both sides, so the same weights see the same numbers
    tmodel = load(torch_vgg16["path"], preprocess="caffe")
    kmodel = load(keras_vgg16["path"], preprocess="caffe")
    pairs = vgg16_layer_pairs()
    ka = activations(kmodel, image, [k for k, _ in pairs])
    ta = activations(tmodel, image, [t for _, t in pairs])
    for k, t in pairs:
        assert_close(nchw(ka[k], "NHWC"), ta[t], what=f"{k} vs {t}")
    from convlens.engine.runtime.program import program

    kl = program(kmodel, [kmodel.meta.logits], (224, 224)).run(image)[kmodel.meta.logits]
    tl = program(tmodel, [tmodel.meta.logits], (224, 224)).run(image)[tmodel.meta.logits]
    assert_close(kl, tl, what="logits")


def test_weight_transfer_round_trip(torch_vgg16, keras_vgg16):
    from convlens.converters.vgg_transfer import keras_vgg16_to_torch_state

    state = keras_vgg16_to_torch_state(keras_vgg16["net"].get_weights())
    for name, value in torch_vgg16["net"].state_dict().items():
        np.testing.assert_array_equal(state[name].numpy(), value.numpy(), err_msg=name)


def test_convert_torch_from_keras_weights_file(tmp_path, keras_vgg16, torch_vgg16, image):
    from convlens.converters import convert

    h5 = tmp_path / "vgg.weights.h5"
    keras_vgg16["net"].save_weights(str(h5))
    out = convert("torch:vgg16", tmp_path / "from_keras.onnx", weights=str(h5))
    a = _ort_outputs(out, np.ones((1, 3, 224, 224), np.float32))["logits"]
    b = _ort_outputs(torch_vgg16["path"], np.ones((1, 3, 224, 224), np.float32))["logits"]
    assert_close(a, b, what="logits after .weights.h5 -> torch transfer")
    # the weights decide the input: Keras VGG16's weights expect caffe input (BGR minus the mean), with no flag
    from convlens.engine.techniques.activations import activations

    from_keras = load(out)
    assert from_keras.input_spec.preset == "caffe"
    got = activations(from_keras, image, ["features.29"])["features.29"]
    ref = activations(load(keras_vgg16["path"]), image, ["block5_conv3"])["block5_conv3"]
    assert_close(got, nchw(ref, "NHWC"), rtol=1e-4, what="torch VGG16 with Keras weights vs Keras VGG16")


def test_keras_vgg16_from_torch_weights_expects_torch_input(tmp_path, torch_vgg16, image):
    from convlens.converters import convert
    from convlens.engine.techniques.activations import activations

    out = convert("keras:VGG16", tmp_path / "from_torch.onnx", weights=str(torch_vgg16["state"]))
    from_torch = load(out)
    assert from_torch.input_spec.preset == "torch"
    got = activations(from_torch, image, ["block5_conv3"])["block5_conv3"]
    ref = activations(load(torch_vgg16["path"]), image, ["features.29"])["features.29"]
    assert_close(nchw(got, "NHWC"), ref, rtol=1e-4, what="Keras VGG16 with torch weights vs torch VGG16")


def test_metadata_round_trip(torch_vgg16):
    proto = onnx.load(str(torch_vgg16["path"]))
    meta = read_meta(proto)
    assert meta.source == "torch" and meta.logits == "logits" and meta.labels == "imagenet"
    assert meta.input.mean == [0.485, 0.456, 0.406] and meta.input.color == "RGB" and meta.input.size == (224, 224)
    assert ModelMeta.from_json(meta.to_json()) == meta
    assert {l.name for l in meta.layers} >= {"features.0", "features.29", "classifier.6"}
    outputs = {o.name for o in proto.graph.output}
    assert all(l.tensor in outputs for l in meta.layers)


def test_foreign_file_layers_are_inferred_and_run(tmp_path, torch_vgg16, image):
    from convlens.engine.techniques.activations import activations

    proto = onnx.load(str(torch_vgg16["path"]))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    foreign = load(path, preprocess="torch")
    assert foreign.meta.inferred and foreign.input_spec.layout == "NCHW" and foreign.input_spec.size == (224, 224)
    kinds = [l.kind for l in foreign.layers]
    assert kinds.count("conv") == 13 and kinds.count("pool") >= 5
    names = [l.name for l in foreign.layers]
    assert len(set(names)) == len(names)
    assert load(path, preprocess="torch").layers == foreign.layers  # stable names
    first_conv = next(l for l in foreign.layers if l.kind == "conv")
    got = activations(foreign, image, [first_conv.name])[first_conv.name]
    ref = activations(load(torch_vgg16["path"]), image, ["features.0"])["features.0"]
    assert_close(got, ref, what="inferred first conv")


def test_small_torch_models_match(tmp_path):
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    for name in ["resnet18", "mobilenet_v3_small"]:
        torch.manual_seed(1)
        net = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(2, 3, 96, 96)
        path = save_onnx(convert_module(net, x[:1], name=name), tmp_path / f"{name}.onnx")
        outs = _ort_outputs(path, x.numpy())
        with torch.no_grad():
            assert_close(outs["logits"], net(x).numpy(), what=name)


def test_keras_mobilenet_and_saved_file(tmp_path):
    import keras

    from convlens.converters import convert
    from convlens.converters.keras_converter import convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    path = save_onnx(convert_keras_model(net, preprocess="tf"), tmp_path / "mnv2.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    model = load(path)
    outs = _ort_outputs(path, x)
    assert_close(outs[model.meta.probabilities], np.asarray(net(x)), what="MobileNetV2 predictions")
    saved = tmp_path / "tiny.keras"
    tiny = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
                             keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, name="out")])
    tiny.save(saved)
    out = convert(str(saved), tmp_path / "tiny.onnx")
    m = load(out)
    assert [l.name for l in m.layers] == ["c1", "gap", "out"]
    xs = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    assert_close(_ort_outputs(out, xs)["out"], np.asarray(tiny(xs)), what="saved .keras model")


def test_keras_no_top_takes_any_size(tmp_path):
    from convlens.converters import convert

    out = convert("keras:VGG16", tmp_path / "notop.onnx", include_top=False)
    m = load(out)
    assert m.input_spec.size is None and m.meta.logits is None
    from convlens.engine.techniques.activations import activations

    acts = activations(m, np.zeros((100, 120, 3), np.float32), ["block5_pool"])
    assert acts["block5_pool"].shape == (1, 3, 3, 512)


def test_exported_program_and_module(tmp_path):
    from convlens.converters import convert

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(1, 3, 16, 16)
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(pt2))
    out = convert(str(pt2), tmp_path / "net.onnx")
    model = load(out)
    assert model.meta.source == "torch"
    # the module paths survive (torch.export.unflatten), as for torch:NAME, with kinds read off their ops
    assert [(l.name, l.kind) for l in model.layers] == [("0", "conv"), ("1", "activation"), ("2", "pool"),
                                                        ("3", "other"), ("4", "dense")]
    with torch.no_grad():
        assert_close(_ort_outputs(out, x.numpy())["logits"], net(x).numpy(), what=".pt2 logits")
