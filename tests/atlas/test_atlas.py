"""convlens atlas: each unit's top images equal a brute-force computation over the set's activations (torch, ties
broken by path); a run killed with SIGKILL and resumed, and a Ray run (a local 2-CPU cluster), give the same data
as one uninterrupted run in process; receptive
field boxes are the support of the unit's input gradient (torch autograd, on a small net and on
EfficientNet-Lite0's real weights); every page, link and picture of the site exists; auto layers are the
lesson's five VGG16 layers."""
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
import torch

import convlens
from convlens.cli import main

SIZE = 32


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """14 images: random ones, a flipped copy and an exact duplicate (a tie that the path must break)."""
    folder = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(3)
    pictures = [rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.uint8) for _ in range(12)]
    pictures += [pictures[4][:, ::-1].copy(), pictures[7].copy()]
    for k, p in enumerate(pictures):
        cv2.imwrite(str(folder / f"{k:02d}.png"), p)
    return folder


def _brute_force_top(net, folder, module_end, k, spec):
    """Per unit of net[:module_end]: the k images of largest maximum activation, ties by path (torch, on the
    model's preprocessing written out: (pixels / 255 - mean) / std)."""
    paths = sorted(folder.iterdir())
    maxima = []
    with torch.no_grad():
        for path in paths:
            rgb = cv2.imread(str(path))[..., ::-1].astype(np.float64)
            x = (rgb * spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)
            act = net[:module_end](torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).float())
            maxima.append(act[0].flatten(1).max(1).values.numpy())
    maxima = np.stack(maxima)  # (images, units)
    return maxima, [sorted(range(len(paths)), key=lambda i: (-maxima[i, u], i))[:k] for u in range(maxima.shape[1])]


def test_top_images_equal_brute_force_with_ties_by_path(tiny_torch, image_set, tmp_path):
    data = convlens.atlas(tiny_torch["path"], image_set, tmp_path / "site", layers="0,3", units="all", top=4,
                          steps=2, shard_size=5)
    for layer, end in zip(data["layers"], (1, 4)):
        maxima, expected = _brute_force_top(tiny_torch["net"], image_set, end, 4,
                                            convlens.load(tiny_torch["path"]).input_spec)
        for unit in layer["units"]:
            assert [t["index"] for t in unit["top"]] == expected[unit["unit"]], (layer["name"], unit["unit"])
            np.testing.assert_allclose([t["value"] for t in unit["top"]],
                                       maxima[expected[unit["unit"]], unit["unit"]], rtol=1e-5, atol=1e-6)
    duplicate = [u for u in data["layers"][0]["units"] if 7 in [t["index"] for t in u["top"]]]
    for unit in duplicate:  # image 13 is image 7 again: it ranks right after it
        order = [t["index"] for t in unit["top"]]
        assert 13 not in order or order.index(13) == order.index(7) + 1


def test_a_killed_run_resumed_and_a_ray_run_give_the_same_data(tiny_torch, image_set, tmp_path):
    args = [sys.executable, "-m", "convlens.cli", "atlas", str(tiny_torch["path"]), str(image_set), "--layers", "0,3",
            "--units", "0-3", "--top", "3", "--steps", "2", "--shard-size", "2", "-o", str(tmp_path / "killed")]
    shards = tmp_path / "killed" / ".atlas" / "shards"
    run = subprocess.Popen(args, env={**os.environ, "CONVLENS_ATLAS_SHARD_PAUSE": "0.5"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*.npz"))) < 2:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done_before = len(list(shards.glob("*.npz")))
    assert 2 <= done_before < 7  # killed between shards: the rest are missing
    assert subprocess.run(args, capture_output=True).returncode == 0  # resumes the same folder
    whole = convlens.atlas(tiny_torch["path"], image_set, tmp_path / "whole", layers="0,3", units="0-3", top=3,
                           steps=2, shard_size=7)  # in process, other shards
    resumed = json.loads((tmp_path / "killed" / "data.json").read_text())
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:  # a Ray run: two actors, shards of 3
        on_ray = convlens.atlas(tiny_torch["path"], image_set, tmp_path / "ray", layers="0,3", units="0-3", top=3,
                                steps=2, shard_size=3, ray="auto", workers=2)
    finally:
        ray.shutdown()
    for other in (resumed, on_ray):
        for a, b in zip(other["layers"], whole["layers"]):
            assert [[t["index"] for t in u["top"]] for u in a["units"]] == [[t["index"] for t in u["top"]]
                                                                            for u in b["units"]]
            assert [[t["value"] for t in u["top"]] for u in a["units"]] == [[t["value"] for t in u["top"]]
                                                                            for u in b["units"]]
    for layer in ("0", "3"):  # the Ray run's feature visualizations (one task per layer) are the in-process ones
        for u in range(4):
            here, there = (cv2.imread(str(tmp_path / run / "img" / layer / f"{u}_vis.png")).astype(int)
                           for run in ("whole", "ray"))
            assert np.abs(here - there).max() <= 1, (layer, u)


def _gradient_support(net, layer, x, channel, y, xx):
    """(row0, col0, row1, col1) of the pixels whose gradient of layer's output at (channel, y, xx) is nonzero."""
    kept = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("A", out))
    x = x.clone().requires_grad_(True)
    net(x)
    hook.remove()
    (grad,) = torch.autograd.grad(kept["A"][0, channel, y, xx], x)
    rows, cols = np.nonzero(np.abs(grad[0].numpy()).sum(0))
    return rows.min(), cols.min(), rows.max(), cols.max()


def test_receptive_field_boxes_contain_the_gradient_support(tiny_torch, lite0):
    from convlens.engine.atlas.receptive_field import receptive_fields
    from convlens.converters.pretrained import efficientnet_lite0

    net = tiny_torch["net"]
    model = convlens.load(tiny_torch["path"])
    fields = receptive_fields(model, (SIZE, SIZE))
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    for y, xx in [(0, 0), (5, 9), (15, 15)]:
        y0, x0, y1, x1 = fields[model.layer("3").tensor].box(y, xx, SIZE, SIZE)
        r0, c0, r1, c1 = _gradient_support(net, net[3], x, 2, y, xx)
        assert (y0, x0, y1, x1) == (r0, c0, r1 + 1, c1 + 1)  # the field is the support, no wider
    # EfficientNet-Lite0 (real weights, 'same' padding the graph computes): a unit of _blocks.3 (28x28 grid)
    torch_net = efficientnet_lite0().eval()
    fields = receptive_fields(lite0, (224, 224))
    x = (torch.rand(1, 3, 224, 224) - 0.5) * 2
    for y, xx in [(0, 0), (13, 20), (27, 27)]:
        box = fields[lite0.layer("_blocks.3").tensor].box(y, xx, 224, 224)
        r0, c0, r1, c1 = _gradient_support(torch_net, torch_net._blocks[3], x, 5, y, xx)
        assert box == (r0, c0, r1 + 1, c1 + 1), (box, (r0, c0, r1, c1))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "img" and "src" in attrs:
            self.images.append(attrs["src"])


def test_every_page_link_and_picture_of_the_site_exists(tiny_torch, image_set, tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["atlas", str(tiny_torch["path"]), str(image_set), "--layers", "0,3", "--units", "0-5", "--steps", "2",
                 "--diversity", "2", "-o", str(site)]) == 0
    assert "atlas of 12 units in 2 layers over 14 images" in capsys.readouterr().out
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + 2 + 12
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text())
        for link in parser.links:
            assert (page.parent / link).resolve().exists(), (page, link)
        for src in parser.images:
            assert cv2.imread(str((page.parent / src).resolve())) is not None, (page, src)
    unit = (site / "units" / "3" / "2.html").read_text()
    assert "previous (3 1)" in unit and "next (3 3)" in unit and "top 9" in unit
    assert "feature visualization 1" in unit  # --diversity 2: two images, pushed apart
    first, second = (cv2.imread(str(site / "img" / "3" / name)) for name in ("2_vis.png", "2_vis1.png"))
    assert first is not None and second is not None and np.abs(first.astype(int) - second).max() > 0
    assert "const units=" in (site / "index.html").read_text()  # the search box's list


def test_refusals_keep_the_users_files(tiny_torch, image_set, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["atlas", str(tiny_torch["path"]), str(image_set), "-o", str(mine)]) == 1
    assert "is a folder with other files in it" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    assert main(["atlas", str(tiny_torch["path"]), str(image_set), "--layers", "7", "-o", str(tmp_path / "a")]) == 1
    assert "has no channel grid" in capsys.readouterr().err
    assert main(["atlas", str(tiny_torch["path"]), str(image_set), "--layers", "0", "--units", "20", "-o",
                 str(tmp_path / "b")]) == 1  # layer 0 has 8 units: no unit 0 in its place
    assert "--units 20 names no unit of a layer with 8 channels" in capsys.readouterr().err
    assert main(["atlas", str(tiny_torch["path"]), str(image_set), "--workers", "2", "-o", str(tmp_path / "c")]) == 1
    assert "--workers applies to Ray runs" in capsys.readouterr().err


def test_auto_layers_are_the_lessons_five_vgg16_layers(keras_vgg16):
    from convlens.engine.atlas.stages import stage_layers

    assert stage_layers(convlens.load(keras_vgg16["path"])) == [f"block{b}_conv1" for b in range(1, 6)]


def test_the_classes_a_unit_pushes_up_equal_torch_autograd(tiny_torch, image_set, tmp_path):
    """Per unit and class: the derivative of the class logit with respect to a shift of the unit's whole map (the
    sum over positions of d logit / d A), averaged over the images; the unit page lists its top classes and the
    index's search finds the units pushing a class up."""
    net = tiny_torch["net"]
    data = convlens.atlas(tiny_torch["path"], [str(image_set)], tmp_path / "site", layers="0,3", units="0-5",
                          steps=2)
    spec = convlens.load(tiny_torch["path"]).input_spec
    paths = sorted(image_set.iterdir())
    assert data["pushes"]["images"] == len(paths)  # 14 images: all sampled
    classes = data["pushes"]["classes"]
    expected = {0: np.zeros((6, len(classes))), 3: np.zeros((6, len(classes)))}
    predicted = set()
    for path in paths:
        rgb = cv2.imread(str(path))[..., ::-1].astype(np.float64)
        x = torch.from_numpy(((rgb * spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)
                             [None].copy()).float()
        with torch.no_grad():
            predicted |= set(torch.argsort(net(x)[0], descending=True)[:3].tolist())
        for end in expected:
            a = net[:end + 1](x).detach().requires_grad_(True)
            logits = net[end + 1:](a)[0]
            for j, c in enumerate(classes):
                (g,) = torch.autograd.grad(logits[c], a, retain_graph=True)
                expected[end][:, j] += g[0, :6].sum(dim=(1, 2)).double().numpy() / len(paths)
    assert sorted(predicted) == classes
    for layer in data["layers"]:
        for unit in layer["units"]:
            row = expected[int(layer["name"])][unit["unit"]]
            best = np.argsort(-row, kind="stable")[:5]
            assert [p["class"] for p in unit["pushes"]] == [classes[c] for c in best]
            np.testing.assert_allclose([p["value"] for p in unit["pushes"]], row[best], rtol=1e-4,
                                       atol=1e-6 * np.abs(row).max())
    page = (tmp_path / "site" / "units" / "3" / "2.html").read_text()
    assert "classes it pushes up most" in page and data["layers"][1]["units"][2]["pushes"][0]["label"] in page
    index = (tmp_path / "site" / "index.html").read_text()
    assert "const pushers=" in index and "pushes up" in index


def test_a_transformers_token_layers(image_set, tmp_path):
    """A small torchvision ViT: `--layers auto` adds its blocks' MLP activations (token layers) after the patch
    embedding; a token unit's top images are its largest maxima over the patch tokens (torch hooks, the class
    token left out), its pushes the autograd sum over the patch tokens; the last block's units push nothing (the
    head reads the class token only) and their pages say so."""
    from torchvision.models.vision_transformer import VisionTransformer

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(4)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10).eval()
    torch.nn.init.normal_(net.heads.head.weight, std=0.5)
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 32, 32), name="vit", preprocess="raw", labels=None),
                     tmp_path / "vit.onnx")
    data = convlens.atlas(path, [str(image_set)], tmp_path / "site", units="0-3", steps=2, top=3)
    blocks = [f"encoder.layers.encoder_layer_{k}.mlp.1" for k in range(2)]
    assert [l["name"] for l in data["layers"]] == ["conv_proj", *blocks]
    paths = sorted(image_set.iterdir())
    acts = {k: [] for k in range(2)}
    grads = {k: 0.0 for k in range(2)}
    classes = data["pushes"]["classes"]
    for image in paths:
        x = torch.from_numpy(cv2.imread(str(image))[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None].copy())
        kept = {}
        hooks = [net.encoder.layers[k].mlp[1].register_forward_hook(lambda _m, _i, o, k=k: kept.__setitem__(k, o))
                 for k in range(2)]
        logits = net(x)[0]
        for h in hooks:
            h.remove()
        for k in range(2):
            acts[k].append(kept[k][0, 1:, :4].max(0).values.detach().numpy())  # patch tokens, units 0-3
            rows = [torch.autograd.grad(logits[c], kept[k], retain_graph=True)[0][0, 1:, :4].sum(0) for c in classes]
            grads[k] = grads[k] + torch.stack(rows, 1).double().numpy() / len(paths)
    for k, layer in enumerate(data["layers"][1:]):
        maxima = np.stack(acts[k])
        for unit in layer["units"]:
            u = unit["unit"]
            expected = sorted(range(len(paths)), key=lambda i: (-maxima[i, u], i))[:3]
            assert [t["index"] for t in unit["top"]] == expected
            kept_pushes = [(c, v) for c, v in zip(classes, grads[k][u]) if v != 0]
            best = sorted(kept_pushes, key=lambda cv: -cv[1])[:5]
            assert [p["class"] for p in unit["pushes"]] == [c for c, _ in best]
            np.testing.assert_allclose([p["value"] for p in unit["pushes"]], [v for _, v in best], rtol=1e-4,
                                       atol=1e-7)
    assert all(not u["pushes"] for u in data["layers"][2]["units"])  # the last block's patch tokens
    assert "no path to the class scores" in (tmp_path / "site" / "units" / blocks[1] / "0.html").read_text()
