"""CAM methods and attributions against references written here with each framework's autograd."""
import numpy as np
import pytest
import torch
from cam_references import reference_cam, torch_layer_and_grad
from cam_references import torch_input as _torch_input
from helpers import assert_close

from convlens.engine import load
from convlens.engine.errors import ConvlensError
from convlens.engine.techniques.cam import gradcam, normalize
from convlens.engine.techniques.saliency import saliency


def test_gradcam_matches_the_lessons_gradient_tape_port(keras_vgg16, image):
    """The lesson's Grad-CAM (softmax score, block5_conv3, class 386) in tf.GradientTape, on the same weights."""
    import keras
    import tensorflow as tf
    from keras.applications.vgg16 import preprocess_input

    net = keras_vgg16["net"]
    x = preprocess_input(image[None].copy())
    grad_model = keras.Model(net.inputs, [net.get_layer("block5_conv3").output, net.output])
    with tf.GradientTape() as tape:
        conv, preds = grad_model(x)
        loss = preds[:, 386]
    grads = tape.gradient(loss, conv)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2)).numpy()
    conv = conv.numpy()[0] * pooled
    heat = np.maximum(np.mean(conv, axis=-1), 0)
    heat /= np.max(heat)
    got = gradcam(load(keras_vgg16["path"]), image, 386, "block5_conv3", "gradcam", score="prob")[0][0]
    assert got.cam.shape == (14, 14) and not got.zero and got.label == "African elephant"
    assert np.abs(got.cam - heat).max() <= 1e-4
    assert got.heatmap.shape == (224, 224)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(7)
    net = torchvision.models.resnet18(weights=None).eval()
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 96, 96), name="resnet18"),
                     tmp_path_factory.mktemp("cam") / "resnet18.onnx")
    return net, load(path)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"])
def test_gradient_cam_methods_match_torch_reference(resnet, method):
    net, model = resnet
    pixels = np.random.default_rng(3).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    A, G, _ = torch_layer_and_grad(net, model, pixels, 17)
    got = gradcam(model, pixels, 17, "layer4", method)[0][0]
    np.testing.assert_allclose(got.cam, reference_cam(method, A, G), atol=1e-4)


def test_cam_inside_a_residual_block(resnet):
    """With several classes per image each runs only the head; the head from layer4.1.conv1 to the scores
    also needs the block's skip branch, so the head program recomputes it from the pixels, and every
    class's map still matches torch's."""
    net, model = resnet
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    got = gradcam(model, pixels, "top2", "layer4.1.conv1")
    for i in range(2):
        for res in got[i]:
            A, G, _ = torch_layer_and_grad(net, model, pixels[i:i + 1], res.class_index, module=net.layer4[1].conv1)
            np.testing.assert_allclose(res.cam, reference_cam("gradcam", A, G), atol=1e-4)


def test_top_class_cam_is_one_run_that_picks_torchs_top_class(resnet):
    """'top' picks the class inside the gradient program; it is torch's arg-max and its map matches
    torch's and the per-class path's (top2's first map)."""
    net, model = resnet
    pixels = np.random.default_rng(8).uniform(0, 255, (3, 96, 96, 3)).astype(np.float32)
    top = gradcam(model, pixels, "top", "layer4")
    two = gradcam(model, pixels, "top2", "layer4")
    for i in range(3):
        p, x = _torch_input(model, pixels[i:i + 1])
        cls = int(net(x).argmax())
        assert top[i][0].class_index == two[i][0].class_index == cls
        A, G, _ = torch_layer_and_grad(net, model, pixels[i:i + 1], cls)
        np.testing.assert_allclose(top[i][0].cam, reference_cam("gradcam", A, G), atol=1e-4)
        np.testing.assert_allclose(top[i][0].cam, two[i][0].cam, atol=1e-5)
        assert top[i][0].score == pytest.approx(two[i][0].score, rel=1e-5)


def test_cam_runs_give_the_same_top5_as_predictions(resnet):
    """The CLI's top-5 list comes from the CAM's own runs: equal to a separate predictions() pass for
    the single-run path (top, named class) and the per-class path (top2, eigencam)."""
    from convlens.engine.techniques.activations import predictions
    from convlens.engine.techniques.cam import gradcam_with_predictions

    _, model = resnet
    pixels = np.random.default_rng(10).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    expected = predictions(model, pixels)
    for target, method in (("top", "gradcam"), (7, "gradcam"), ("top2", "gradcam"), ("top", "eigencam")):
        maps, preds = gradcam_with_predictions(model, pixels, target, "layer4", method)
        assert [[c for c, _, _ in row] for row in preds] == [[c for c, _, _ in row] for row in expected]
        np.testing.assert_allclose([[p for _, _, p in row] for row in preds],
                                   [[p for _, _, p in row] for row in expected], rtol=1e-5)
        assert [len(m) for m in maps] == [2 if target == "top2" else 1] * 2


def test_eigencam_is_the_first_principal_component(resnet):
    net, model = resnet
    pixels = np.random.default_rng(4).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    A, _, _ = torch_layer_and_grad(net, model, pixels, 0)
    flat = A.reshape(A.shape[0], -1).T
    flat = flat - flat.mean(0)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vh[0]).reshape(A.shape[1:]).numpy()
    # the SVD's sign is arbitrary; convlens's rule, applied here on torch's numbers: correlate with the channel mean
    sign = 1.0 if np.corrcoef(proj.ravel(), A.mean(0).numpy().ravel())[0, 1] >= 0 else -1.0
    expected = np.maximum(sign * proj, 0)
    got = gradcam(model, pixels, 0, "layer4", "eigencam")[0][0].cam
    np.testing.assert_allclose(got, expected / expected.max(), atol=1e-4)


def test_scorecam_matches_masked_forward_passes(resnet):
    import torch.nn.functional as F

    net, model = resnet
    pixels = np.random.default_rng(5).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    A, _, logits = torch_layer_and_grad(net, model, pixels, 3)
    cls = int(torch.argmax(logits[0]))
    up = F.interpolate(A[None].float(), size=(96, 96), mode="bilinear", align_corners=False)[0].double()
    lo = up.flatten(1).min(1).values[:, None, None]
    hi = up.flatten(1).max(1).values[:, None, None]
    masks = torch.where(hi > lo, (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi)), torch.zeros_like(up))
    with torch.no_grad():
        _, base_x = _torch_input(model, np.zeros_like(pixels))
        base = torch.softmax(net(base_x), 1)[0, cls].double()
        weights = []
        for s in range(0, len(masks), 64):
            masked = torch.tensor(pixels).double() * masks[s:s + 64, :, :, None]
            _, x = _torch_input(model, masked.float().numpy())
            weights.append(torch.softmax(net(x), 1)[:, cls].double() - base)
    ref = (torch.cat(weights)[:, None, None] * A).sum(0).numpy()  # before ReLU and normalization
    from convlens.engine.techniques.cam import score_cam

    got = score_cam(model, pixels, A[None].numpy(), [cls], "logit")[0]
    assert_close(got, ref, rtol=2e-3, what="Score-CAM raw map")  # masks resized by OpenCV here, by torch there
    res = gradcam(model, pixels, cls, "layer4", "scorecam")[0][0]
    assert res.zero == (ref.max() <= 0)


def test_zero_map_says_so_and_never_divides_by_zero(tmp_path):
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    cam, zero = normalize(np.full((4, 4), -2.0))
    assert zero and not cam.any() and np.isfinite(cam).all()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[0].bias.fill_(-1e4)  # every activation is zero: nothing to explain
    model = load(
        save_onnx(convert_module(net, torch.zeros(1, 3, 16, 16), preprocess="raw", labels=None), tmp_path / "dead.onnx")
    )
    res = gradcam(model, np.full((16, 16, 3), 100, np.float32), 1, "1", "gradcam")[0][0]
    assert res.zero and np.isfinite(res.heatmap).all() and not res.heatmap.any()


def test_top_k_targets_and_labels(resnet):
    _, model = resnet
    pixels = np.random.default_rng(6).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    res = gradcam(model, pixels, "top3", "auto")
    assert [len(r) for r in res] == [3, 3]
    assert res[0][0].layer == "layer4.1.relu"  # the last block's output (also exposed as layer4.1 and layer4)
    assert res[0][0].score >= res[0][1].score >= res[0][2].score
    by_name = gradcam(model, pixels[:1], "tabby", "layer4")[0][0]
    assert by_name.class_index == 281
    for bad, message in (("top0", "Target 'top0' is not understood"), ("topx", "Target 'topx' is not understood"),
                         (1000, "Class 1000 is out of range; the model has 1000 classes")):
        for method in ("gradcam", "eigencam"):  # the single-run path and the per-class path
            with pytest.raises(ConvlensError, match=message):
                gradcam(model, pixels[:1], bad, "layer4", method)


def test_vanilla_smoothgrad_and_guided_backprop_match_torch(resnet):
    net, model = resnet
    pixels = np.random.default_rng(8).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)

    def torch_grad(px, guided=False):
        hooks = []
        if guided:
            for m in net.modules():
                if isinstance(m, torch.nn.ReLU):
                    hooks.append(m.register_full_backward_hook(lambda mod, gi, go: (torch.clamp(gi[0], min=0),)))
        inplace = [(m, m.inplace) for m in net.modules() if isinstance(m, torch.nn.ReLU)]
        for m, _ in inplace:
            m.inplace = False
        p, x = _torch_input(model, px)
        net(x)[:, 42].sum().backward()
        for h in hooks:
            h.remove()
        for m, f in inplace:
            m.inplace = f
        return p.grad.numpy()

    got = saliency(model, pixels, 42, "vanilla")[0]
    assert_close(got.attribution, torch_grad(pixels)[0], what="vanilla")
    got = saliency(model, pixels, 42, "guided-backprop")[0]
    assert_close(got.attribution, torch_grad(pixels, guided=True)[0], what="guided backprop")
    got = saliency(model, pixels, 42, "smoothgrad", samples=6, seed=11)[0]
    x = pixels[0]
    noisy = x[None] + np.random.default_rng(11).normal(0, 0.15 * (x.max() - x.min()), (6,) + x.shape).astype(np.float32)
    assert_close(got.attribution, torch_grad(noisy).mean(0), what="smoothgrad")


def test_top_class_saliency_is_the_named_top_class(resnet):
    """vanilla and guided backprop on 'top' pick the class inside the gradient run: the same class and
    attribution as naming that class."""
    net, model = resnet
    pixels = np.random.default_rng(9).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    for method in ("vanilla", "guided-backprop"):
        top = saliency(model, pixels, "top", method)
        for i in range(2):
            cls = int(net(_torch_input(model, pixels[i:i + 1])[1]).argmax())
            named = saliency(model, pixels[i:i + 1], cls, method)[0]
            assert top[i].class_index == cls
            np.testing.assert_allclose(top[i].attribution, named.attribution, rtol=1e-5, atol=1e-9)


def test_integrated_gradients_completeness(tmp_path):
    """On a smooth network the attributions sum to F(x) - F(baseline), closer with more steps."""
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(12)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Tanh(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.Softplus(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 4)).eval()
    model = load(save_onnx(convert_module(net, torch.zeros(1, 3, 24, 24), labels=None), tmp_path / "smooth.onnx"))
    pixels = np.random.default_rng(9).uniform(0, 255, (1, 24, 24, 3)).astype(np.float32)
    errors = [saliency(model, pixels, 2, "integrated-gradients", steps=n)[0].completeness_error for n in (4, 16, 64)]
    assert errors[2] < 1e-3 and errors[2] < errors[0], errors


def test_guided_gradcam_matches_captum(tmp_path):
    """Captum's GuidedGradCam (guided backprop times the layer's Grad-CAM, upsampled bilinearly) on a plain
    convnet; convlens normalizes the map to [0, 1] and differentiates raw pixels, so the two agree up to one
    positive factor per image and the preprocessing's per-channel scale / std."""
    from captum.attr import GuidedGradCam

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()
    model = load(save_onnx(convert_module(net, torch.zeros(1, 3, 32, 32), labels=None, preprocess="torch"),
                           tmp_path / "plain.onnx"))
    pixels = np.random.default_rng(10).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    got = saliency(model, pixels, 3, "guided-gradcam")[0].attribution  # (H, W, 3), d/d pixels
    _, x = _torch_input(model, pixels)
    ref = GuidedGradCam(net, net[4]).attribute(x.detach().requires_grad_(), target=3, interpolate_mode="bilinear")
    spec = model.input_spec
    ref = ref[0].permute(1, 2, 0).detach().numpy() * (spec.scale / np.asarray(spec.std))  # d/d pixels
    assert np.abs(ref).max() > 0
    factor = np.sum(got * ref) / np.sum(ref * ref)
    assert factor > 0
    np.testing.assert_allclose(got, factor * ref, rtol=1e-4, atol=1e-6 * np.abs(got).max())


def test_cam_and_saliency_on_a_foreign_file(tmp_path, resnet):
    """A file with no convlens metadata: layers inferred, preprocessing from the flag, same maps."""
    import onnx

    net, model = resnet
    proto = onnx.load(model.path)
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    foreign = load(path, preprocess="torch")
    pixels = np.random.default_rng(13).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
    layer = next(l for l in foreign.layers if l.tensor == model.layer("layer4").tensor)
    got = gradcam(foreign, pixels, 17, layer.name)[0][0].cam
    np.testing.assert_allclose(got, gradcam(model, pixels, 17, "layer4")[0][0].cam, atol=1e-6)
    auto = gradcam(foreign, pixels, 17, "auto")[0][0]
    assert auto.cam.shape == (3, 3) and not auto.zero
    sal = saliency(foreign, pixels, 17, "vanilla")[0].attribution
    np.testing.assert_allclose(sal, saliency(model, pixels, 17, "vanilla")[0].attribution, rtol=1e-5, atol=1e-9)
