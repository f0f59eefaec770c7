"""Vision transformers through the same engine: token layers, the auto layer, Grad-CAM against pytorch-grad-cam,
attention rollout and GAE against references written here with torch hooks, and whole-model input gradients
against torch autograd.

Models are small where the property does not depend on size: timm's own architectures (DeiT-tiny, its
distilled twin with two special tokens, a register-token ViT) at 64 or 56 px, and torchvision's ViT, Swin
and MaxViT classes built with small configurations; weights are seeded random (none can be downloaded).
"""
import copy

import cv2
import numpy as np
import pytest
import timm  # a dev dependency: missing, it fails here instead of skipping
import torch

import convlens
from convlens.engine.errors import ConvlensError

RNG = np.random.default_rng(5)

# timm name, input size, prefix tokens (class, distillation, registers)
TIMM = {"deit": ("deit_tiny_patch16_224", 64, 1), "deit_distilled": ("deit_tiny_distilled_patch16_224", 64, 2),
        "vit_reg4": ("vit_small_patch14_reg4_dinov2", 56, 5), "vit_small": ("vit_small_patch16_224", 64, 1),
        "timm_resnet": ("resnet18", 64, 0)}  # timm's convnets come through the same route


def _pixels(size, n=1):
    return RNG.uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (torch module, convlens Model, input size, preprocess, prefix tokens)."""
    from safetensors.torch import save_file
    from torchvision.models.maxvit import MaxVit
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
    from torchvision.models.vision_transformer import VisionTransformer

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    folder = tmp_path_factory.mktemp("transformers")
    out = {}
    for key, (name, size, prefix) in TIMM.items():
        torch.manual_seed(3)
        net = timm.create_model(name, **({} if key == "timm_resnet" else {"img_size": size})).eval()
        weights = folder / f"{key}.safetensors"  # the timm route with a .safetensors state dict, as a user runs it
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
        path = convlens.convert(f"timm:{name}", folder / f"{key}.onnx", weights=str(weights), input_size=size)
        # the preprocessing timm's config gives the weights (mean and std), for the torch side
        out[key] = (net, convlens.load(path), size, (net.pretrained_cfg["mean"], net.pretrained_cfg["std"]), prefix)
    torch.manual_seed(4)
    built = {
        "torchvision_vit": (VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                              mlp_dim=64, num_classes=10), 32, 1),
        "swin": (SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                                 num_classes=10), 32, 0),
        # V2: cosine attention (ReduceL2) and a log-spaced position bias computed by a small MLP
        "swin_v2": (SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                    window_size=[4, 4], num_classes=10, block=SwinTransformerBlockV2,
                                    downsample_layer=PatchMergingV2), 32, 0),
        "maxvit": (MaxVit(input_size=(64, 64), stem_channels=16, partition_size=2, block_channels=[16, 32],
                          block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10), 64, 0),
    }
    for key, (net, size, prefix) in built.items():
        net.eval()
        if key == "torchvision_vit":  # torchvision zero-initializes the ViT head: every gradient would be zero
            torch.nn.init.normal_(net.heads.head.weight, std=0.5)
        path = folder / f"{key}.onnx"
        save_onnx(convert_module(net, torch.zeros(1, 3, size, size), name=key, preprocess="raw", labels=None), path)
        out[key] = (net, convlens.load(path), size, "raw", prefix)
    yield out
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("key", ["deit", "deit_distilled", "vit_reg4", "vit_small", "timm_resnet", "torchvision_vit",
                                 "swin", "swin_v2", "maxvit"])
def test_input_gradient_matches_torch_autograd(zoo, key):
    net, model, size, preprocess, _ = zoo[key]
    pixels = _pixels(size)
    x = torch.tensor(pixels, requires_grad=True)
    logits = net(_nchw_preprocessed(x, preprocess))
    cls = int(logits.argmax())
    logits[0, cls].backward()
    ref = x.grad.numpy()[0].astype(np.float64)
    got = convlens.saliency(model, pixels[0], target=cls)[0].attribution.astype(np.float64)
    assert np.abs(ref).max() > 0
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert err <= 1e-4, f"{key}: relative L2 {err:.2e}"


def _nchw_preprocessed(x, preprocess):
    """(N, H, W, 3) pixels -> the network's input: raw, or (x / 255 - mean) / std."""
    if preprocess != "raw":
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in preprocess)
        x = (x / 255 - mean) / std
    return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize("key,layer", [("deit", "blocks.11.norm1"), ("deit_distilled", "blocks.11.norm1"),
                                       ("vit_reg4", "blocks.11.norm1"),
                                       ("torchvision_vit", "encoder.layers.encoder_layer_1.ln_1")])
def test_auto_layer_on_class_token_models_is_the_last_blocks_first_norm(zoo, key, layer):
    _, model, size, _, _ = zoo[key]
    maps, _ = convlens.cam(model, _pixels(size)[0])
    assert maps[0][0].layer == layer
    assert maps[0][0].cam.shape == (size // (14 if key == "vit_reg4" else 16 if key != "torchvision_vit" else 8),) * 2


def test_windowed_models_keep_spatial_layers_and_refuse_rollout(zoo):
    for key in ("swin", "swin_v2", "maxvit"):
        _, model, size, _, _ = zoo[key]
        maps, _ = convlens.cam(model, _pixels(size)[0])
        assert maps[0][0].cam.shape[0] > 1 and not maps[0][0].zero
        for method in ("rollout", "gae"):
            with pytest.raises(ConvlensError, match="gradcam"):
                convlens.cam(model, _pixels(size)[0], method=method)


def _scaled(cam, size):
    """pytorch-grad-cam's output steps: min-max, OpenCV's resize to the input, min-max again."""
    def minmax(c):
        c = c - c.min()
        return c / (1e-7 + c.max())
    return minmax(cv2.resize(np.float32(minmax(cam)), (size, size)))


@pytest.mark.parametrize("key,method", [("deit", "gradcam"), ("deit_distilled", "gradcam"), ("vit_reg4", "gradcam"),
                                        ("deit", "layercam"), ("deit", "hirescam")])
def test_token_cam_matches_pytorch_grad_cam_with_reshape_transform(zoo, key, method):
    import pytorch_grad_cam as gradcam_lib  # an outside reference: installed by the test command
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, model, size, preprocess, prefix = zoo[key]
    side = size // net.patch_embed.patch_size[0]

    def reshape_transform(t):  # the transform users write by hand today
        return t[:, prefix:, :].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

    pixels = _pixels(size)
    x = _nchw_preprocessed(torch.tensor(pixels), preprocess).detach()
    cls = int(net(x).argmax())
    lib = {"gradcam": "GradCAM", "layercam": "LayerCAM", "hirescam": "HiResCAM"}[method]
    with getattr(gradcam_lib, lib)(model=net, target_layers=[net.blocks[-1].norm1],
                                   reshape_transform=reshape_transform) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    ours = convlens.cam(model, pixels[0], target=cls, method=method)[0][0][0]
    assert ours.layer == "blocks.11.norm1"
    corr = np.corrcoef(_scaled(ours.cam, size).ravel(), theirs.ravel())[0, 1]
    assert corr >= 0.999, corr


def _timm_attention(net, x, cls):
    """Per block (attention (N, heads, T, T), its gradient for the class logit), from timm's explicit path."""
    kept = []
    hooks = []
    for blk in net.blocks:
        blk.attn.fused_attn = False  # the explicit path: softmax(q k^T * scale), then attn_drop

        def keep(_m, inputs, _out):
            a = inputs[0]
            a.retain_grad()
            kept.append(a)
        hooks.append(blk.attn.attn_drop.register_forward_hook(keep))
    try:
        logits = net(x)
        logits[0, cls].backward()
    finally:
        for h in hooks:
            h.remove()
        for blk in net.blocks:
            blk.attn.fused_attn = timm.layers.use_fused_attn()
    return [(a.detach().double(), a.grad.double()) for a in kept]


def _reference_rollout(blocks, prefix, side, fusion="mean", discard=0.0):
    t = blocks[0][0].shape[-1]
    result = torch.eye(t, dtype=torch.float64)
    for a, _ in blocks:
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[fusion][0]
        if discard:
            flat = fused.flatten().clone()
            drop = flat.topk(int(flat.numel() * discard), largest=False).indices
            flat[drop[drop != 0]] = 0
            fused = flat.reshape(t, t)
        b = fused + torch.eye(t, dtype=torch.float64)
        result = (b / b.sum(-1, keepdim=True)) @ result
    return result[0, prefix:].reshape(side, side).numpy()


def _reference_gae(blocks, prefix, side):
    t = blocks[0][0].shape[-1]
    r = torch.eye(t, dtype=torch.float64)
    for a, g in blocks:
        r = r + (g * a).clamp(min=0).mean(1)[0] @ r
    return r[0, prefix:].reshape(side, side).numpy()


def _normalized(m):
    m = np.maximum(m, 0)
    assert m.max() > 0, "the reference map is zero: the comparison would say nothing"
    return m / m.max()


@pytest.mark.parametrize("key", ["deit", "deit_distilled", "vit_reg4"])
@pytest.mark.parametrize("method,options", [("rollout", {}), ("rollout", {"head_fusion": "max", "discard": 0.25}),
                                            ("rollout", {"head_fusion": "min"}), ("gae", {})])
def test_rollout_and_gae_match_references_from_torch_hooks(zoo, key, method, options):
    net, model, size, preprocess, prefix = zoo[key]
    side = size // net.patch_embed.patch_size[0]
    pixels = _pixels(size)
    x = _nchw_preprocessed(torch.tensor(pixels), preprocess).detach()
    cls = int(net(x).argmax())
    blocks = _timm_attention(net, x, cls)
    assert len(blocks) == 12 and blocks[0][0].shape[-1] == prefix + side * side
    if method == "rollout":
        ref = _reference_rollout(blocks, prefix, side, options.get("head_fusion", "mean"), options.get("discard", 0.0))
    else:
        ref = _reference_gae(blocks, prefix, side)
    got = convlens.cam(model, pixels[0], target=cls, method=method, **options)[0][0][0]
    assert got.class_index == cls and got.layer == "attention blocks"
    np.testing.assert_allclose(got.cam, _normalized(ref), atol=1e-4)


def test_rollout_options_and_targets_are_checked(zoo):
    _, model, size, _, _ = zoo["deit"]
    image = _pixels(size)[0]
    with pytest.raises(ConvlensError, match="head fusion"):
        convlens.cam(model, image, method="rollout", head_fusion="median")
    with pytest.raises(ConvlensError, match="discard ratio"):
        convlens.cam(model, image, method="rollout", discard=1.0)
    with pytest.raises(ConvlensError, match="--layer does not apply"):
        convlens.cam(model, image, method="gae", layer="blocks.3.norm1")
    with pytest.raises(ConvlensError, match="one class per image"):
        convlens.cam(model, image, method="gae", target="top3")


def test_gae_batches_give_each_image_its_own_map(zoo):
    _, model, size, _, _ = zoo["deit"]
    pixels = _pixels(size, 3)
    batch = convlens.cam(model, list(pixels), method="gae")[0]
    for i in range(3):
        alone = convlens.cam(model, pixels[i], method="gae")[0][0][0]
        np.testing.assert_allclose(batch[i][0].cam, alone.cam, atol=1e-5)
        assert batch[i][0].class_index == alone.class_index


def test_a_layer_without_patch_tokens_is_refused(zoo):
    _, model, size, _, _ = zoo["deit"]
    with pytest.raises(ConvlensError, match="no spatial output"):
        convlens.cam(model, _pixels(size)[0], layer="head")


def test_lrp_on_a_transformer_is_refused_naming_the_methods_that_apply(zoo):
    """LRP for attention is not built: the attention's MatMul of two computed tensors has no rule; the sentence
    names the methods that do apply, and each of them runs on the same model."""
    _, model, size, _, _ = zoo["deit"]
    image = _pixels(size)[0]
    with pytest.raises(ConvlensError, match=r"multiplies two computed tensors \(attention\).*explain this model with "
                                            r"input-x-gradient, integrated-gradients, deconvnet or a CAM method"):
        convlens.saliency(model, image, method="lrp-epsilon-plus")
    for method in ("input-x-gradient", "integrated-gradients", "deconvnet"):
        (a,) = convlens.saliency(model, image, method=method, steps=4)
        assert np.isfinite(a.attribution).all() and np.abs(a.attribution).max() > 0, method


def test_token_filters_rise_and_a_dead_unit_is_reported(zoo, tmp_path):
    """The lucid recipe on an MLP hidden unit of a block (mean over the patch tokens of one channel)."""
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    net, model, _, _, _ = zoo["torchvision_vit"]
    layer = "encoder.layers.encoder_layer_1.mlp.0"
    short = convlens.filters(model, layer, filters="0-3", recipe="lucid", steps=2, seed=1)
    long = convlens.filters(model, layer, filters="0-3", recipe="lucid", steps=40, seed=1)
    assert long.images.shape[1:3] == (32, 32)  # a transformer runs at its own input size
    assert np.all(long.objectives > short.objectives), (short.objectives, long.objectives)
    with torch.no_grad():  # unit 2 of that layer: zero weights and bias, a constant zero output
        dead = copy.deepcopy(net).eval()
        dead.encoder.layers[1].mlp[0].weight[2] = 0
        dead.encoder.layers[1].mlp[0].bias[2] = 0
    path = tmp_path / "dead.onnx"
    save_onnx(convert_module(dead, torch.zeros(1, 3, 32, 32), preprocess="raw", labels=None), path)
    with pytest.warns(UserWarning, match="dead"):
        result = convlens.filters(path, layer, filters="1-3", recipe="lucid", steps=3)
    assert result.dead == [2]


def test_size_other_than_the_transformers_own_is_refused(zoo):
    _, model, _, _, _ = zoo["torchvision_vit"]
    with pytest.raises(ConvlensError, match="its own input size 32x32"):
        convlens.filters(model, "encoder.layers.encoder_layer_1.mlp.0", filters="0", recipe="lucid", steps=1, size=64)


def test_attention_head_maps_are_the_class_tokens_row(zoo):
    net, model, size, preprocess, prefix = zoo["deit_distilled"]
    side = size // 16
    pixels = _pixels(size)
    x = _nchw_preprocessed(torch.tensor(pixels), preprocess).detach()
    blocks = _timm_attention(net, x, int(net(x).argmax()))
    heads = convlens.attention(model, pixels[0], block=5)
    ref = blocks[5][0][0, :, 0, prefix:].reshape(-1, side, side).numpy()
    np.testing.assert_allclose(heads, ref, atol=1e-5)
    patch = convlens.attention(model, pixels[0], block=5, patch=(1, 2))
    np.testing.assert_allclose(patch, blocks[5][0][0, :, prefix + side + 2, prefix:].reshape(-1, side, side).numpy(),
                               atol=1e-5)
    with pytest.raises(ConvlensError, match="out of range; the model has 12 attention blocks"):
        convlens.attention(model, pixels[0], block=12)
    with pytest.raises(ConvlensError, match="outside the 4x4 patch grid"):
        convlens.attention(model, pixels[0], block=0, patch=(4, 0))


def test_cli_lists_attention_maps_and_writes_head_grids(zoo, tmp_path, capsys):
    from convlens.cli import main

    _, model, size, _, _ = zoo["deit"]
    image = tmp_path / "img.png"
    wide = cv2.resize(_pixels(size)[0].astype(np.uint8), (size * 3 // 2, size))  # a photo of another shape
    cv2.imwrite(str(image), wide)
    assert main(["layers", str(model.path), "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["layers"]
    attention = [r for r in rows if r["kind"] == "attention"]
    assert [r["name"] for r in attention] == [f"attention.{k}" for k in range(12)]
    assert attention[0]["shape"] == [1, 3, 17, 17]
    assert (
        main(["attention", str(model.path), str(image), "--block", "11", "-o", str(tmp_path / "att"), "--quiet"]) == 0
    )
    heads = np.load(tmp_path / "att" / "attention_block11_class.npy")
    assert heads.shape == (3, 4, 4)
    tiles = cv2.imread(str(tmp_path / "att" / "attention_block11_class.png"))
    # three heads side by side, each over the photo at its own 3:2 shape (224 x 149 tiles, 4 px apart)
    assert tiles.shape[:2] == (149, 3 * 224 + 2 * 4)
    first = tiles[40:, :224].astype(int)  # below the label: the photo shows through the blended map
    assert np.corrcoef(first.mean(2).ravel(), cv2.resize(wide, (224, 149))[40:].mean(2).ravel())[0, 1] > 0.3
    assert main(["attention", str(model.path), str(image), "--block", "1", "--patch", "x", "-o",
                 str(tmp_path / "att2")]) == 1
    assert "--patch must look like ROW,COL" in capsys.readouterr().err


def test_hugging_face_vit_from_a_config(tmp_path):
    """transformers' ViTForImageClassification (its own module names, an output object instead of a tensor):
    input gradient against autograd, the auto layer, and rollout against its own output_attentions."""
    import transformers

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(6)
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
        attn_implementation="eager",
    )
    net = transformers.ViTForImageClassification(cfg).eval()
    path = tmp_path / "hf_vit.onnx"
    save_onnx(convert_module(net, torch.zeros(1, 3, 32, 32), preprocess="raw", labels=None), path)
    model = convlens.load(path)
    pixels = _pixels(32)
    x = torch.tensor(pixels.transpose(0, 3, 1, 2), requires_grad=True)
    out = net(x, output_attentions=True)
    cls = int(out.logits.argmax())
    out.logits[0, cls].backward()
    ref = x.grad[0].numpy().transpose(1, 2, 0)
    got = convlens.saliency(model, pixels[0], target=cls)[0].attribution
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-4
    maps = convlens.cam(model, pixels[0], target=cls)[0][0][0]
    assert maps.layer.endswith("1.layernorm_before") and not maps.zero
    blocks = [(a.detach().double(), None) for a in out.attentions]
    rollout = convlens.cam(model, pixels[0], method="rollout")[0][0][0]
    np.testing.assert_allclose(rollout.cam, _normalized(_reference_rollout(blocks, 1, 4)), atol=1e-4)
