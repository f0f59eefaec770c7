"""Files convlens did not write, described right: the input recipe stated by flags or `annotate`, the scores
behind shape-only ops and sigmoid heads, outputs that are not class scores refused, class names from the file,
old opsets upgraded and checked. Each against torch's own computation (the package-style preprocessing written
here) or the exact refusal sentence."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import convlens
from convlens.cli import main

SIZE = 32
PIXELS = np.random.default_rng(5).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _net(classes=5, head=None, seed=0):
    torch.manual_seed(seed)
    layers = [torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, classes)]
    return torch.nn.Sequential(*layers, *([head] if head is not None else [])).eval()


def _export(net, path, opset=17, output="scores"):
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=opset,
                      input_names=["x"], output_names=[output])
    return path


def _package_input(pixels, bgr=False, scale=1.0, mean=(0, 0, 0), std=(1, 1, 1)):
    """What a package's own code feeds its model, written out: channel order, scale, mean, std, NCHW."""
    x = pixels[..., ::-1] if bgr else pixels
    x = (x.astype(np.float64) * scale - np.asarray(mean)) / np.asarray(std)
    return torch.tensor(x.transpose(2, 0, 1)[None].copy(), dtype=torch.float32, requires_grad=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    net = _net()
    return net, _export(net, tmp_path_factory.mktemp("plain") / "plain.onnx")


@pytest.mark.parametrize("options, package", [
    ({"scale": "1/255"}, {"scale": 1 / 255}),  # Keras's most common recipe: x / 255
    ({"channel_order": "bgr", "scale": "1/255", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"},
     {"bgr": True, "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),  # PaddleClas
    ({"preprocess": "torch", "channel_order": "bgr"},  # a flag refines a preset
     {"bgr": True, "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
    ({"channel_order": "bgr", "scale": "1/127.5", "mean": "1"}, {"bgr": True, "scale": 1 / 127.5, "mean": [1, 1, 1]}),
])
def test_a_stated_recipe_is_the_packages_preprocessing(plain, options, package):
    net, path = plain
    x = _package_input(PIXELS, **package)
    logits = net(x)
    cls = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, cls], x)
    # the package's input gradient, carried back through its preprocessing to pixels
    scale = package.get("scale", 1.0) / np.asarray(package.get("std", [1, 1, 1]))
    pixel_grad = grad[0].numpy().transpose(1, 2, 0) * scale
    if package.get("bgr"):
        pixel_grad = pixel_grad[..., ::-1]
    model = convlens.load(path, **options)
    (result,) = convlens.saliency(model, PIXELS)
    assert result.class_index == cls
    np.testing.assert_allclose(result.attribution[0] if result.attribution.ndim == 4 else result.attribution,
                               pixel_grad, rtol=1e-4, atol=1e-6 * np.abs(pixel_grad).max())
    _, top5 = convlens.cam(model, PIXELS)
    np.testing.assert_allclose(top5[0][0][2], float(torch.softmax(logits, 1)[0, cls]), rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"scale": "1/0"}, "--scale must be a number or a fraction such as 1/255, not '1/0'."),
    ({"mean": "1,2"}, "--mean must be three numbers A,B,C (or one), not 2: '1,2'."),
    ({"std": "0.2,0,0.2"}, "--std must not hold a zero (it divides): [0.2, 0.0, 0.2]."),
    ({"channel_order": "grb"}, "--channel-order must be rgb or bgr, not 'grb'."),
])
def test_a_recipe_that_cannot_be_refused_in_a_sentence(plain, options, message):
    with pytest.raises(convlens.ConvlensError) as err:
        convlens.load(plain[1], **options)
    assert str(err.value) == message


def test_the_assumed_input_is_said_whatever_other_flags_are_given(tmp_path, plain, capsys):
    out = tmp_path / "cam"
    image = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join("abcde"))
    assert main(["cam", str(plain[1]), str(image), "--labels", str(labels), "-o", str(out)]) == 0
    assert "has no convlens metadata: assuming NCHW input of raw RGB pixels" in capsys.readouterr().err
    assert main(["cam", str(plain[1]), str(image), "--scale", "1/255", "-o", str(tmp_path / "cam2")]) == 0
    assert "no convlens metadata" not in capsys.readouterr().err  # the input is stated


def _append(model, nodes, inits=(), output=None):
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    return model


def test_a_softmax_behind_shape_only_ops_has_its_logits_before_it(tmp_path, plain):
    """Flatten -> Softmax -> Reshape -> Identity, as onnx's version converter writes a Softmax: the logits are
    the Softmax's input, the reported probabilities the Softmax's."""
    net, path = plain
    model = onnx.load(str(path))
    shape = numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")
    _append(model, [helper.make_node("Flatten", ["scores"], ["flat"], axis=1),
                    helper.make_node("Softmax", ["flat"], ["soft"], axis=-1),
                    helper.make_node("Reshape", ["soft", "shape"], ["shaped"]),
                    helper.make_node("Identity", ["shaped"], ["probs"])], [shape], "probs")
    wrapped = tmp_path / "wrapped.onnx"
    onnx.save(model, str(wrapped))
    x = _package_input(PIXELS)
    with torch.no_grad():
        logits = net(x)[0].numpy()
    maps, top5 = convlens.cam(wrapped, PIXELS, preprocess="raw")
    cls = int(logits.argmax())
    assert maps[0][0].class_index == cls
    assert abs(maps[0][0].score - logits[cls]) < 1e-4  # the logit, not a probability
    np.testing.assert_allclose(top5[0][0][2], np.exp(logits[cls]) / np.exp(logits).sum(), rtol=1e-5)


def test_a_sigmoid_head_scores_its_logits_and_reports_sigmoids(tmp_path):
    net = _net(classes=4, head=torch.nn.Sigmoid(), seed=3)
    path = _export(net, tmp_path / "multilabel.onnx", output="probs")
    x = _package_input(PIXELS)
    logits = net[:-1](x)[0]
    model = convlens.load(path, preprocess="raw")
    assert model.meta.activation == "sigmoid"
    maps, top5 = convlens.cam(model, PIXELS, target="top4")
    order = list(np.argsort(-logits.detach().numpy()))
    assert [t[0] for t in top5[0][:4]] == order
    np.testing.assert_allclose([t[2] for t in top5[0][:4]], torch.sigmoid(logits).detach().numpy()[order], rtol=1e-5)
    np.testing.assert_allclose([m.score for m in maps[0]], logits.detach().numpy()[order], rtol=1e-4, atol=1e-5)
    # --score prob differentiates the sigmoid of the class, as torch does
    (result,) = convlens.saliency(model, PIXELS, target=int(order[1]), score="prob")
    (grad,) = torch.autograd.grad(net(x)[0, int(order[1])], x)
    np.testing.assert_allclose(result.attribution.reshape(SIZE, SIZE, 3), grad[0].numpy().transpose(1, 2, 0),
                               rtol=1e-4, atol=1e-6 * float(grad.abs().max()))


def test_a_one_logit_head_explains_its_positive_class(tmp_path):
    net = _net(classes=1, seed=4)
    path = _export(net, tmp_path / "binary.onnx")
    with torch.no_grad():
        logit = float(net(_package_input(PIXELS))[0, 0])
    maps, top5 = convlens.cam(path, PIXELS, preprocess="raw")
    assert maps[0][0].class_index == 0 and abs(maps[0][0].score - logit) < 1e-5
    assert abs(top5[0][0][2] - 1 / (1 + np.exp(-logit))) < 1e-6  # never a softmax over one class (always 1.0)


class DenseMap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return torch.sigmoid(self.body(x))


class Sequence(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=(8, 2), padding=1), torch.nn.ReLU())
        self.classify = torch.nn.Linear(8, 12)

    def forward(self, x):
        f = self.body(x).mean(2).permute(0, 2, 1)  # (N, T, C): one step per column
        return self.classify(f).log_softmax(-1)


@pytest.mark.parametrize("net, kind, words", [
    (DenseMap(), "dense", "sigmoid exceeds 0.5"),
    (Sequence(), "sequence", "log-probability of the greedy symbol"),
])
def test_outputs_that_are_not_class_scores_are_explained_by_their_own_target(tmp_path, net, kind, words, capsys):
    """A one-channel sigmoid map and an (N, T, C) sequence are never scored as classes (no "prob 1.0", no T*C
    classes): each gets its target (test_output_targets.py checks the numbers), and `--layer auto` on the map
    steps back from the convolution that makes it (its Grad-CAM would be the prediction itself)."""
    path = _export(net.eval(), tmp_path / "not_classes.onnx")
    image = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    assert main(["layers", str(path), "--preprocess", "raw"]) == 0  # the file is still readable
    capsys.readouterr()
    assert main(["saliency", str(path), str(image), "--preprocess", "raw", "-o", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"]["kind"] == kind and words in result["target"]["objective"]
    if kind == "dense":
        assert main(["cam", str(path), str(image), "--preprocess", "raw", "-o", str(tmp_path / "c"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["layer"] == "body.1.Relu" and result["layer_rule"].startswith("auto, class-map head")
        assert result["images"][0]["top5"][0]["prob"] != 1.0


def _with_props(path, out, **props):
    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))
    return out


def test_class_names_stored_in_the_file_are_read_when_they_fit(tmp_path, plain):
    names = {i: f"thing{i}" for i in range(5)}
    ultralytics = _with_props(plain[1], tmp_path / "u.onnx", names=repr(names))  # a Python dict literal
    assert convlens.load(ultralytics, preprocess="raw").labels == list(names.values())
    listed = _with_props(plain[1], tmp_path / "j.onnx", classes=json.dumps(["a", "b", "c", "d", "e"]))
    assert convlens.load(listed, preprocess="raw").labels == ["a", "b", "c", "d", "e"]
    wrong = _with_props(plain[1], tmp_path / "w.onnx", labels=json.dumps(["a", "b"]))  # names something else
    assert convlens.load(wrong, preprocess="raw").labels is None
    with pytest.raises(convlens.ConvlensError) as err:
        convlens.load(plain[1], preprocess="raw", labels="imagenet")
    assert str(err.value) == ("--labels gives the 1000 ImageNet names, but plain.onnx scores 5 classes; give a list "
                              "with one name per class.")


def test_an_opset_11_file_is_upgraded_and_checked(tmp_path, monkeypatch):
    net = _net(head=torch.nn.Softmax(dim=1), seed=6)
    path = _export(net, tmp_path / "old.onnx", opset=11, output="probs")
    x = _package_input(PIXELS)
    logits = net[:-1](x)
    cls = int(logits.argmax())
    model = convlens.load(path, preprocess="raw")
    maps, _ = convlens.cam(model, PIXELS)
    assert maps[0][0].class_index == cls and abs(maps[0][0].score - float(logits[0, cls])) < 1e-4
    (result,) = convlens.saliency(model, PIXELS)
    (grad,) = torch.autograd.grad(logits[0, cls], x)
    np.testing.assert_allclose(result.attribution.reshape(SIZE, SIZE, 3), grad[0].numpy().transpose(1, 2, 0),
                               rtol=1e-4, atol=1e-6 * float(grad.abs().max()))
    # an upgrade that changes what the graph computes is refused, never used
    from onnx import version_converter

    real = version_converter.convert_version

    def broken(proto, version):
        out = real(proto, version)
        weight = next(t for t in out.graph.initializer if len(t.dims) == 4)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        return out

    monkeypatch.setattr(version_converter, "convert_version", broken)
    with pytest.raises(convlens.ConvlensError) as err:
        convlens.load(path, preprocess="raw")
    assert str(err.value) == (
        "old.onnx uses ONNX opset 11, and onnx's version converter changed what its output "
        "'probs' computes when upgrading it to opset 16; re-export the model at opset 13 or newer."
    )


def test_annotate_describes_a_file_once(tmp_path, plain, capsys):
    net, path = plain
    original = path.read_bytes()
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(f"class {c}" for c in "vwxyz"))
    out = tmp_path / "described.onnx"
    assert main(["annotate", str(path), "--channel-order", "bgr", "--scale", "1/255", "--mean", "0.5", "--labels",
                 str(labels), "-o", str(out)]) == 0
    assert path.read_bytes() == original  # the original is never touched
    capsys.readouterr()
    model = convlens.load(out)  # nothing stated now: the file says it
    assert "no convlens metadata" not in capsys.readouterr().err
    assert model.labels == [f"class {c}" for c in "vwxyz"]
    x = _package_input(PIXELS, bgr=True, scale=1 / 255, mean=[0.5] * 3)
    with torch.no_grad():
        logits = net(x)[0].numpy()
    maps, top5 = convlens.cam(model, PIXELS)
    assert top5[0][0][1] == f"class {'vwxyz'[int(logits.argmax())]}"
    assert abs(maps[0][0].score - logits.max()) < 1e-4
    # weights unchanged: the copy's initializers are the original's
    a, b = onnx.load(str(path)), onnx.load(str(out))
    assert {t.name: t.raw_data for t in a.graph.initializer} == {t.name: t.raw_data for t in b.graph.initializer}
    assert main(["annotate", str(path), "-o", str(path), "--force"]) == 1
    assert "annotate writes a copy" in capsys.readouterr().err
    assert main(["annotate", str(path), "-o", str(out)]) == 1  # never overwritten without --force
    assert "already exists; pass --force" in capsys.readouterr().err


def test_annotate_keeps_external_data_and_fixes_a_dynamic_size(tmp_path):
    net = _net(seed=7)
    source = tmp_path / "src"
    source.mkdir()
    path = source / "dyn.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["scores"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, location="dyn.data", size_threshold=0)
    assert convlens.load(path, preprocess="raw").input_spec.size is None
    out = tmp_path / "described" / "dyn.onnx"
    model = convlens.annotate(path, out, preprocess="raw", input_size="24x40")
    assert (tmp_path / "described" / "dyn.data").read_bytes() == (source / "dyn.data").read_bytes()
    assert model.input_spec.size == (24, 40)
    x = _package_input(np.ascontiguousarray(np.resize(PIXELS, (24, 40, 3))))
    with torch.no_grad():
        expected = net(x)[0].numpy()
    _, top5 = convlens.cam(model, np.resize(PIXELS, (24, 40, 3)))
    assert top5[0][0][0] == int(expected.argmax())


def test_a_session_onnx_runtime_cannot_make_names_the_node(tmp_path, plain):
    model = onnx.load(str(plain[1]))
    node = model.graph.node[1]
    node.domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(convlens.ConvlensError) as err:
        convlens.cam(path, PIXELS, preprocess="raw")
    assert f"ONNX Runtime cannot run node {node.name!r} (op {node.op_type} of the custom domain 'com.example')" \
        in str(err.value)


class Ambiguous(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.a, self.b = torch.nn.Linear(8, 3), torch.nn.Linear(8, 4)

    def forward(self, x):
        f = self.body(x)
        return self.a(f), self.b(f)


def test_a_refused_evaluate_writes_nothing(tmp_path, capsys):
    path = tmp_path / "two_heads.onnx"
    torch.onnx.export(Ambiguous().eval(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["a", "b"])
    image = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    run = tmp_path / "run"
    assert main(["evaluate", str(path), str(image), "--preprocess", "raw", "-o", str(run)]) == 1
    assert "several outputs that could be its class scores" in capsys.readouterr().err
    assert not run.exists()  # no run.json to lock the folder
    assert main(["evaluate", str(path), str(tmp_path / "missing.png"), "--scores", "a", "-o", str(run)]) == 1
    assert f"Image file not found: {tmp_path / 'missing.png'}" in capsys.readouterr().err
    assert not run.exists()


def test_an_edge_pad_before_the_first_pool_is_differentiated_as_torch_does(tmp_path):
    """A Caffe ResNet converted through torch.onnx pads its first pool's input by replication."""
    torch.manual_seed(8)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.ReplicationPad2d((0, 1, 0, 1)),
                              torch.nn.MaxPool2d(3, 2), torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(8, 4, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = _export(net, tmp_path / "edge.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Pad"}
    x = _package_input(PIXELS)
    logits = net(x)
    cls = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, cls], x)
    (result,) = convlens.saliency(path, PIXELS, preprocess="raw")
    assert result.class_index == cls
    np.testing.assert_allclose(result.attribution.reshape(SIZE, SIZE, 3), grad[0].numpy().transpose(1, 2, 0),
                               rtol=1e-4, atol=1e-6 * float(grad.abs().max()))


def test_filters_run_a_fixed_size_graph_at_its_own_size(tmp_path, plain, capsys):
    """A foreign graph that holds its input size (a Flatten into a Linear layer): filters default to that size,
    and another --size is refused in a sentence instead of ONNX Runtime's error."""
    torch.manual_seed(9)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 12 * 12, 3)).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 24, 24),), str(tmp_path / "fixed.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["scores"])
    model = convlens.load(tmp_path / "fixed.onnx", preprocess="raw")
    layer = next(l.name for l in model.layers if l.kind == "dense")
    result = convlens.filters(model, layer, filters="0-1", steps=2)
    assert result.images[0].shape[:2] == (24, 24)
    with pytest.raises(convlens.ConvlensError) as err:
        convlens.filters(model, layer, filters="0", steps=2, size=150)
    assert str(err.value) == ("--size 150 does not apply: this model runs at its own input size 24x24 (the graph "
                              "holds its input size: it does not run at 150x150); leave --size out.")


def test_torchvision_models_convert_at_their_weights_own_size():
    from convlens.converters.torch_converter import _weights_crop_size

    assert _weights_crop_size("inception_v3") == (299, 299)  # its transforms crop 299, not 224
    assert _weights_crop_size("vgg16") == (224, 224)


def _blocky(shape, seed=12):
    """A photo of 6-pixel blocks: a misplaced crop shows at every block edge."""
    blocks = np.random.default_rng(seed).uniform(0, 255, (shape[0] // 6 + 1, shape[1] // 6 + 1, 3))
    return np.repeat(np.repeat(blocks, 6, 0), 6, 1)[:shape[0], :shape[1]].astype(np.float32)


def test_center_crop_is_torchvisions_resize_then_center_crop():
    import torchvision.transforms.v2 as T

    from convlens.engine.render.images import fit_image

    photo = _blocky((60, 90))
    fitted, _ = fit_image(photo, (28, 28), "center-crop", 0.875)  # short side to 28 / 0.875 = 32, then the centre
    ref = T.Compose([T.Resize(32, antialias=True), T.CenterCrop(28)])(torch.from_numpy(photo.transpose(2, 0, 1)))
    ref = ref.numpy().transpose(1, 2, 0)
    error = np.abs(fitted - ref).mean()
    shifted = np.abs(fitted[:, 2:] - ref[:, :-2]).mean()  # the same crop two pixels off
    assert error < 6 and shifted > 2 * error, (error, shifted)


def test_letterbox_is_the_detectors_padding():
    from convlens.engine.render.images import fit_image

    photo = _blocky((30, 60))
    fitted, place = fit_image(photo, (32, 32), "letterbox", pad_value=114)
    assert np.all(fitted[:8] == 114) and np.all(fitted[24:] == 114)  # 16 rows of photo, centred
    assert np.abs(fitted[8:24] - cv2_resize(photo, (16, 32))).max() < 1e-3
    assert place.box == (8, 0, 24, 32)


def cv2_resize(img, size):
    import cv2

    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("policy, visible", [("center-crop", (30, 90)), ("letterbox", (0, 120)), ("stretch", (0, 120))])
def test_maps_are_drawn_back_on_the_photo_given(tmp_path, policy, visible, capsys):
    """A hand-weighted model whose Grad-CAM is the brightness: on a dark photo with one bright square, the map
    written at the photo's size lights the square where it is in the photo, whatever the resize policy."""
    import cv2

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(1, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1 / 3)
        net[0].bias.fill_(-0.5)
        net[4].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[4].bias.zero_()
    path = _export(net, tmp_path / "bright.onnx")
    photo = np.zeros((60, 120, 3), np.uint8)
    photo[20:32, 50:66] = 255
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), photo)
    out = tmp_path / "cam"
    assert main(["cam", str(path), str(image), "--scale", "1/255", "--resize", policy, "--crop-fraction", "1",
                 "--class", "0", "--layer", next(l.name for l in convlens.load(path, scale="1/255").layers
                                                 if l.kind == "activation"), "-o", str(out)]) == 0
    heat = np.load(out / "photo_gradcam_0_image.npy")
    assert heat.shape == (60, 120)
    assert heat[23:29, 54:62].min() > 0.5  # the square, where it is in the photo
    assert heat[45:, :].max() < 0.1 and heat[:, visible[0]:40].max() < 0.1
    if policy == "center-crop":  # never seen by the model: nothing drawn there
        assert np.all(heat[:, :visible[0] - 1] == 0) and np.all(heat[:, visible[1] + 1:] == 0)


class ConvDecoderViT(torch.nn.Module):
    """A one-block ViT (a class token, 4x4 patches of 8 px) whose patch tokens go back onto their grid into a
    convolutional decoder before the head, as DINOv2-style backbones with dense heads do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(13)
        self.patch = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 16) * 0.5)
        self.pos = torch.nn.Parameter(torch.randn(1, 17, 16) * 0.5)
        self.norm1, self.norm2 = torch.nn.LayerNorm(16), torch.nn.LayerNorm(16)
        self.qkv, self.proj = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
        self.decoder = torch.nn.Sequential(torch.nn.ConvTranspose2d(16, 8, 2, stride=2), torch.nn.ReLU(),
                                           torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        n = x.shape[0]
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(n, -1, -1), t], 1) + self.pos
        q, k, v = self.qkv(self.norm1(t)).reshape(n, 17, 3, 2, 8).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
        t = t + self.proj((attention @ v).transpose(1, 2).reshape(n, 17, 16))
        t = t + self.mlp(self.norm2(t))
        grid = t[:, 1:].transpose(1, 2).reshape(n, 16, 4, 4)
        return self.head(self.decoder(grid).mean((2, 3)))


def test_a_vit_with_a_conv_decoder_reads_its_patch_grid_off_the_patch_embedding(tmp_path, capsys):
    import cv2

    net = ConvDecoderViT().eval()
    path = _export(net, tmp_path / "vit_decoder.onnx")
    model = convlens.load(path, preprocess="raw")
    token_layer = next(l for l in model.layers if l.kind == "norm" and l.layout == "tokens")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    assert main(["activations", str(path), str(image), "--preprocess", "raw", "--layers", token_layer.name,
                 "-o", str(tmp_path / "acts")]) == 0  # the 4x4 patch grid, not the decoder's 8x8
    # token Grad-CAM at norm1 against torch: class token dropped, patches on the 4x4 grid
    kept = {}
    hook = net.norm1.register_forward_hook(lambda _m, _i, out: kept.__setitem__("A", out))
    x = _package_input(PIXELS)
    logits = net(x)
    hook.remove()
    for cls in range(5):  # a class whose map is not all zero after the ReLU
        (grad,) = torch.autograd.grad(logits[0, cls], kept["A"], retain_graph=True)
        a, g = kept["A"][0, 1:].detach().numpy(), grad[0, 1:].numpy()
        ref = np.maximum((a * g.mean(0)).sum(1).reshape(4, 4), 0)
        if ref.max() > 0:
            break
    maps, _ = convlens.cam(model, PIXELS, layer=token_layer.name, target=cls)
    assert maps[0][0].cam.shape == (4, 4)
    np.testing.assert_allclose(maps[0][0].cam, ref / ref.max(), atol=1e-4)
    rollout, _ = convlens.cam(model, PIXELS, method="rollout")  # the global attention is found: 17 = 1 + 4x4 keys
    assert rollout[0][0].cam.shape == (4, 4)


def test_export_takes_the_input_size_a_dynamic_file_leaves_open(tmp_path, capsys):
    """A torch.onnx export with dynamic H and W: export refuses without a size and names --input-size; with
    --input-size 48,40 the explainer's cam equals torch's Grad-CAM at that size on an image of that size."""
    import onnxruntime as ort

    from helpers import torch_gradcam

    net = _net()
    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["scores"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    out = tmp_path / "explainer.onnx"
    assert main(["export", str(path), "--preprocess", "raw", "-o", str(out)]) == 1
    assert "give `convlens export` --input-size H,W" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(path), "--preprocess", "raw", "--input-size", "48,40", "--layer", "3.Relu",
                 "-o", str(out)]) == 0
    pixels = np.random.default_rng(1).uniform(0, 255, (48, 40, 3)).astype(np.uint8)
    session = ort.InferenceSession(str(out))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": pixels[None]})))
    ref, cls = torch_gradcam(net, net[3], _package_input(pixels.astype(np.float32)))
    assert int(got["explained_class"][0]) == cls
    np.testing.assert_allclose(got["cam"][0], ref, atol=1e-5)
