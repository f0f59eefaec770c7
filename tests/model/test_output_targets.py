"""Explaining outputs that are not class scores: dense maps over a region, sequences, embeddings, single values.

Each target's objective is written here in torch (pytorch-grad-cam's SemanticSegmentationTarget for the dense
maps, on torchvision's LR-ASPP, DeepLabV3 and FCN) and differentiated by autograd; convlens's maps and
attributions on the exported files must equal them.
"""
import json

import cv2
import numpy as np
import pytest
import pytorch_grad_cam as gradcam_lib  # an outside reference: installed by the test command
import torch
from onnx import helper
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

import convlens
from convlens.cli import main
from convlens.engine.model.onnx_file import load_onnx, save_onnx

SIZE = 64
PIXELS = np.random.default_rng(21).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
X = torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy())


def _export(net, path, opset=17, outputs=("out",), width=SIZE):
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, width),), str(path), dynamo=False, opset_version=opset,
                      input_names=["image"], output_names=list(outputs))
    return path


def _input_gradient(objective_of, x=X):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective_of(x), x)
    return grad[0].numpy().transpose(1, 2, 0)


def _scaled(cam):
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    cam = cv2.resize(np.float32(cam), (SIZE, SIZE))
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


class Segmenter(torch.nn.Module):
    """A torchvision segmenter (LR-ASPP by default; random weights, 6 classes) returning its logits map, as
    deployed files do."""

    def __init__(self, builder: str = "lraspp_mobilenet_v3_large"):
        super().__init__()
        import torchvision

        torch.manual_seed(0)
        extra = {"aux_loss": False} if builder != "lraspp_mobilenet_v3_large" else {}
        self.net = getattr(torchvision.models.segmentation, builder)(weights=None, weights_backbone=None,
                                                                    num_classes=6, **extra)

    def forward(self, x):
        return self.net(x)["out"]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    net = Segmenter().eval()
    return net, _export(net, tmp_path_factory.mktemp("seg") / "lraspp.onnx")


def test_a_segmenters_class_is_explained_over_its_predicted_region_as_pytorch_grad_cam_does(segmenter):
    net, path = segmenter
    model = convlens.load(path, preprocess="raw")
    with torch.no_grad():
        out = net(X)[0]
    winners = out.argmax(0).numpy()
    cls = int(np.bincount(winners.ravel(), minlength=6).argmax())
    target = SemanticSegmentationTarget(cls, np.float32(winners == cls))
    layer = net.net.backbone["16"][0]
    with gradcam_lib.GradCAM(model=net, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=X, targets=[target])[0]
    maps, top = convlens.cam(model, PIXELS, target=cls, layer="net.backbone.16.0.Conv")
    assert model.target.kind == "dense" and maps[0][0].score == pytest.approx(float(target(out)), rel=1e-4)
    assert np.abs(_scaled(maps[0][0].cam) - theirs).max() < 1e-3
    (attribution,) = convlens.saliency(model, PIXELS, target=cls)
    np.testing.assert_allclose(attribution.attribution, _input_gradient(lambda x: target(net(x)[0])),
                               rtol=1e-3, atol=1e-4 * np.abs(attribution.attribution).max())


@pytest.mark.parametrize("builder", ["deeplabv3_mobilenet_v3_large", "fcn_resnet50"])
def test_deeplabv3_and_fcn_at_the_auto_layer_as_pytorch_grad_cam(builder, tmp_path):
    """DeepLabV3 and FCN: Grad-CAM at the layer `auto` picks (before the convolution that makes the class maps)
    equals pytorch-grad-cam's SemanticSegmentationTarget at the torch module with that output."""
    net = Segmenter(builder).eval()
    model = convlens.load(_export(net, tmp_path / f"{builder}.onnx"), preprocess="raw")
    with torch.no_grad():
        out = net(X)[0]
    winners = out.argmax(0).numpy()
    cls = int(np.bincount(winners.ravel(), minlength=6).argmax())
    target = SemanticSegmentationTarget(cls, np.float32(winners == cls))
    maps, _ = convlens.cam(model, PIXELS, target=cls)
    chosen = maps[0][0].layer
    mine = convlens.activations(model, PIXELS, [chosen])[chosen]
    outputs = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: outputs.__setitem__(name, o))
             for name, m in net.named_modules() if name]
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    same = [name for name, o in outputs.items() if isinstance(o, torch.Tensor) and tuple(o.shape) == mine.shape
            and np.abs(o.numpy() - mine).max() <= 1e-5 * np.abs(mine).max()]
    assert same, f"no module gives {chosen}'s output"
    with gradcam_lib.GradCAM(model=net, target_layers=[net.get_submodule(same[-1])]) as cam:
        theirs = cam(input_tensor=X, targets=[target])[0]
    assert maps[0][0].score == pytest.approx(float(target(out)), rel=1e-4)
    assert np.abs(_scaled(maps[0][0].cam) - theirs).max() < 1e-3


def test_a_box_region_and_the_whole_map(segmenter):
    net, path = segmenter
    box = np.zeros((SIZE, SIZE), np.float32)
    box[8:40, 16:48] = 1  # x1,y1,x2,y2 = 16,8,48,40 in the photo's pixels (the photo is the input's size)
    (a,) = convlens.saliency(path, PIXELS, target=2, preprocess="raw", region="16,8,48,40")
    np.testing.assert_allclose(a.attribution, _input_gradient(lambda x: (net(x)[0, 2] * torch.from_numpy(box)).sum()),
                               rtol=1e-3, atol=1e-4 * np.abs(a.attribution).max())
    (a,) = convlens.saliency(path, PIXELS, target=2, preprocess="raw", region="all")
    np.testing.assert_allclose(a.attribution, _input_gradient(lambda x: net(x)[0, 2].mean()),
                               rtol=1e-3, atol=1e-4 * np.abs(a.attribution).max())


class TextDetector(torch.nn.Module):
    """A one-channel probability map (a DBNet-style text detector): Conv -> ... -> Sigmoid, (N, 1, H, W)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.ConvTranspose2d(8, 1, 2, stride=2))

    def forward(self, x):
        return torch.sigmoid(self.body(x / 255 - 0.5))


def test_a_one_channel_sigmoid_map_explains_its_logit_where_it_predicts(tmp_path, capsys):
    net = TextDetector().eval()
    path = _export(net, tmp_path / "detector.onnx")
    image = tmp_path / "page.png"
    cv2.imwrite(str(image), PIXELS[..., ::-1].astype(np.uint8))
    pixels = PIXELS.astype(np.uint8).astype(np.float32)
    x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())

    def objective(x):
        logit = net.body(x / 255 - 0.5)[0, 0]
        return (logit * (logit > 0)).sum()

    assert main(["saliency", str(path), str(image), "--preprocess", "raw", "-o", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"]["kind"] == "dense" and "sigmoid exceeds 0.5" in result["target"]["objective"]
    got = np.load(tmp_path / "s" / "page_vanilla_0.npy")
    ref = _input_gradient(objective, x)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    with torch.no_grad():
        expected = float(objective(x))
    assert main(["cam", str(path), str(image), "--preprocess", "raw", "-o", str(tmp_path / "c"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"][0]["top5"][0]["prob"] == pytest.approx(expected, rel=1e-4)  # the objective, not "1.0"


class Recognizer(torch.nn.Module):
    """A CTC text recognizer: convolutions over a 32-px-high line, the width becomes T steps of C symbols, then
    a softmax over the symbols (the deployed files' last op)."""

    def __init__(self, symbols=7):
        super().__init__()
        torch.manual_seed(2)
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 16, (SIZE, 4), stride=(1, 4)), torch.nn.Tanh())
        self.fc = torch.nn.Linear(16, symbols)

    def logits(self, x):
        return self.fc(self.conv(x / 128 - 1).squeeze(2).transpose(1, 2))  # (N, T, C)

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=-1)


@pytest.mark.parametrize("opset", [17, 11])  # opset 11: upgraded inside, its softmax becomes Flatten/Softmax/Reshape
def test_a_sequence_is_explained_by_its_greedy_path_and_decoded_with_the_files_names(tmp_path, opset, capsys):
    net = Recognizer().eval()
    proto = load_onnx(_export(net, tmp_path / "plain.onnx", opset=opset, width=96))
    helper.set_model_props(proto, {"character": "a\nb\nc\nd\ne"})  # PaddleOCR's convention: blank, names, space
    path = save_onnx(proto, tmp_path / "rec.onnx")
    photo = np.random.default_rng(3).uniform(0, 255, (SIZE, 96, 3)).astype(np.float32)
    x = torch.from_numpy(photo.transpose(2, 0, 1)[None].copy())
    model = convlens.load(path, preprocess="raw")
    assert model.target.kind == "sequence"

    def greedy(x):
        log_p = torch.log_softmax(net.logits(x), -1)[0]
        return log_p.gather(1, log_p.argmax(1, keepdim=True)).sum()

    (a,) = convlens.saliency(model, photo)
    ref = _input_gradient(greedy, x)
    np.testing.assert_allclose(a.attribution, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    (a,) = convlens.saliency(path, photo, preprocess="raw", position=5, target=3)
    ref = _input_gradient(lambda x: net.logits(x)[0, 5, 3], x)
    np.testing.assert_allclose(a.attribution, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    with torch.no_grad():
        best = net.logits(x)[0].argmax(1).tolist()
    names = ["", "a", "b", "c", "d", "e", " "]
    text = "".join(names[s] for i, s in enumerate(best) if s and (i == 0 or s != best[i - 1]))
    assert convlens.api.decoded(model, [photo]) == [text]


class Embedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 12))

    def forward(self, x):
        return self.net(x / 255)


def test_an_embedding_is_explained_by_its_cosine_similarity_with_another_image_or_a_vector(tmp_path):
    net = Embedder().eval()
    path = _export(net, tmp_path / "embedder.onnx", outputs=("embedding",))
    other = np.random.default_rng(5).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        reference = net(torch.from_numpy(other.transpose(2, 0, 1)[None].copy()))[0]
    ref = _input_gradient(lambda x: torch.nn.functional.cosine_similarity(net(x)[0], reference, dim=0))
    (a,) = convlens.saliency(path, PIXELS, preprocess="raw", like=other)
    assert a.label == "cosine similarity"
    np.testing.assert_allclose(a.attribution, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    np.save(tmp_path / "v.npy", reference.numpy())
    (b,) = convlens.saliency(path, PIXELS, preprocess="raw", like=str(tmp_path / "v.npy"))
    np.testing.assert_allclose(b.attribution, a.attribution, rtol=1e-5, atol=1e-7)


def test_any_value_by_its_flat_index(tmp_path):
    net = Embedder().eval()  # a 12-value regression head
    path = _export(net, tmp_path / "regressor.onnx", outputs=("values",))
    (a,) = convlens.saliency(path, PIXELS, preprocess="raw", index=7)
    ref = _input_gradient(lambda x: net(x)[0, 7])
    assert a.class_index == 7
    np.testing.assert_allclose(a.attribution, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("argv, words", [
    (["--position", "2"], "--sequence and --position apply to (N, T, C) outputs"),
    (["--region", "0,0,100,10"], "--region box 0,0,100,10 is not inside the 64x64 photo"),
    (["--region", "nowhere"], "--region must be predicted, all, x1,y1,x2,y2"),
    (["--index", "99999999"], "--index 99999999 is out of range"),
    (["--like-vector", "v.npy", "--like", "x.png"], "Give --like IMAGE or --like-vector FILE.npy, not both."),
])
def test_target_options_that_do_not_fit_the_output_are_refused_in_a_sentence(segmenter, tmp_path, argv, words,
                                                                             capsys):
    _, path = segmenter
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), PIXELS.astype(np.uint8))
    rc = main(["saliency", str(path), str(image), "--preprocess", "raw", *argv, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_clip_vision_towers_similarity_with_a_text_embedding(tmp_path):
    """Hugging Face's CLIP vision tower with its projection, built from a config (seeded), exported by
    torch.onnx: the cosine similarity of its image embedding with a stored vector (as a CLIP text embedding would
    be) has convlens's input gradient equal to torch autograd's."""
    import transformers

    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=SIZE, patch_size=16, projection_dim=12)
    torch.manual_seed(7)
    tower = transformers.CLIPVisionModelWithProjection(config).eval()

    class Embeds(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = tower

        def forward(self, x):
            return self.tower(pixel_values=x / 255).image_embeds

    net = Embeds().eval()
    path = _export(net, tmp_path / "clip_vision.onnx", outputs=("image_embeds",))
    text = np.random.default_rng(12).normal(size=12).astype(np.float32)
    np.save(tmp_path / "text.npy", text)
    ref = _input_gradient(lambda x: torch.nn.functional.cosine_similarity(net(x)[0], torch.from_numpy(text), dim=0))
    (a,) = convlens.saliency(path, PIXELS, preprocess="raw", like=str(tmp_path / "text.npy"))
    np.testing.assert_allclose(a.attribution, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_evaluate_follows_the_targets_objective(segmenter, tmp_path, capsys):
    """`convlens evaluate --region predicted|all` on a segmenter: each deletion curve starts at the objective, the
    class's logit summed over its predicted pixels or averaged over the map, computed here in torch."""
    import pyarrow.parquet as pq

    net, path = segmenter
    folder = tmp_path / "set"
    folder.mkdir()
    photos = [np.random.default_rng(30 + k).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.uint8) for k in range(2)]
    for k, photo in enumerate(photos):
        cv2.imwrite(str(folder / f"{k}.png"), photo[..., ::-1])
    for region in ("predicted", "all"):
        run = tmp_path / region
        assert main(["evaluate", str(path), str(folder), "--preprocess", "raw", "--region", region, "--methods",
                     "vanilla", "--steps", "2", "-o", str(run)]) == 0
        capsys.readouterr()
        curves = pq.read_table(run / "curves.parquet").to_pandas()
        for k, photo in enumerate(photos):
            with torch.no_grad():
                out = net(torch.from_numpy(photo.astype(np.float32).transpose(2, 0, 1)[None].copy()))[0]
            if region == "all":
                scores = out.mean(dim=(1, 2)).numpy()
            else:
                winners = out.argmax(0)
                scores = np.array([float((out[c] * (winners == c)).sum()) for c in range(out.shape[0])])
            start = curves[(curves.path.str.endswith(f"{k}.png")) & (curves.method == "vanilla")
                           & (curves.metric == "deletion") & (curves.fraction == 0)].probability.item()
            assert start == pytest.approx(scores.max(), rel=1e-4, abs=1e-4)


def test_a_drawn_region_is_what_the_command_explains_and_says(segmenter, tmp_path, capsys):
    """`saliency --region x1,y1,x2,y2`: the file written is the box objective's attribution (torch autograd) and
    --json describes that objective, not the predicted region the file gets by default."""
    net, path = segmenter
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), PIXELS.astype(np.uint8)[..., ::-1])
    pixels = PIXELS.astype(np.uint8).astype(np.float32)
    box = np.zeros((SIZE, SIZE), np.float32)
    box[8:40, 16:48] = 1
    ref = _input_gradient(lambda x: (net(x)[0, 2] * torch.from_numpy(box)).sum(),
                          torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()))
    assert main(["saliency", str(path), str(image), "--preprocess", "raw", "--region", "16,8,48,40", "--class", "2",
                 "-o", str(tmp_path / "s"), "--json"]) == 0
    assert "given region" in json.loads(capsys.readouterr().out)["target"]["objective"]
    got = np.load(tmp_path / "s" / "x_vanilla_2.npy")
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
