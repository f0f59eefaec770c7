"""Filter ascent: the lesson's loop in tf.GradientTape, the same weights in torch, dead filters, lucid."""
import numpy as np
import pytest
import torch

from convlens.engine import load
from convlens.engine.errors import ConvlensError
from convlens.engine.techniques.filters import deprocess, parse_filters, visualize_filters

FILTERS = [0, 7, 21]


def lesson_port(keras_net, layer, filters, start, steps=40, step=1.0, engine_step=None):
    """Chollet's notebook 5.4 loop, written with tf.GradientTape on an include_top=False copy of the weights.

    With `engine_step`, each step's normalized gradient is also taken from the engine at the same image,
    and the largest difference (relative to the step's size) is returned too.
    """
    import keras
    import tensorflow as tf

    body = keras.applications.VGG16(weights=None, include_top=False)
    body.set_weights(keras_net.get_weights()[:26])
    sub = keras.Model(body.inputs, body.get_layer(layer).output)
    out, errors = [], []
    for k, f in enumerate(filters):
        img = tf.Variable(start[k:k + 1])
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(sub(img)[:, :, :, f])
            g = tape.gradient(loss, img)
            g = g / (tf.sqrt(tf.reduce_mean(tf.square(g))) + 1e-5)
            if engine_step is not None:
                mine = engine_step(img.numpy(), f)
                errors.append(float(np.linalg.norm(mine - g.numpy()) / (np.linalg.norm(g.numpy()) + 1e-12)))
            img.assign_add(g * step)
        out.append(img.numpy()[0])
    return np.stack(out), np.array(errors)


def test_chollet_recipe_matches_the_lessons_loop_exactly_before_pooling(keras_vgg16):
    """block1_conv2 has no max-pool upstream: the whole 40-step run matches the lesson's loop to 1e-3."""
    model = load(keras_vgg16["path"])
    res = visualize_filters(model, "block1_conv2", FILTERS, "chollet", seed=3)
    start = (np.random.default_rng(3).random((len(FILTERS), 150, 150, 3)) * 20 + 128).astype(np.float32)
    ref, _ = lesson_port(keras_vgg16["net"], "block1_conv2", FILTERS, start)
    moved = np.abs(ref - start).max()
    assert np.abs(res.raw - ref).max() <= 1e-3 * moved, np.abs(res.raw - ref).max() / moved
    for got, want in zip(res.images, ref):
        assert np.abs(got.astype(int) - deprocess(want).astype(int)).max() <= 1  # uint8 rounding


def test_chollet_recipe_follows_the_lessons_loop_through_pooling(keras_vgg16):
    """block3_conv1 sits behind two max-pools. On the lesson's gray-plus-noise start, neighbours differ by
    ~1e-6 relative, so float32 rounding in TF and in ORT can pick different maxima (both correct): each
    step is compared at the lesson's own image, with a bound that such flips stay within."""
    from convlens.engine.runtime.adapter import PIXELS
    from convlens.engine.runtime.objectives import one_hot
    from convlens.engine.techniques.gradients import gradient_program, run_gradient
    from convlens.engine.techniques.targets import Target

    model = load(keras_vgg16["path"])
    res = visualize_filters(model, "block3_conv1", FILTERS, "chollet", seed=3)
    start = (np.random.default_rng(3).random((len(FILTERS), 150, 150, 3)) * 20 + 128).astype(np.float32)
    prog, channels = gradient_program(
        model, Target(layer="block3_conv1"), (150, 150), spec=model.input_spec.with_preset("raw")
    )

    def engine_step(img, f):
        g = run_gradient(prog, img, one_hot([f], channels))[prog.grads[PIXELS]]
        return g / (np.sqrt(np.mean(np.square(g))) + 1e-5)

    ref, errors = lesson_port(keras_vgg16["net"], "block3_conv1", FILTERS, start, engine_step=engine_step)
    assert np.median(errors) <= 2e-2 and errors.max() <= 5e-2, (np.median(errors), errors.max())
    for got, want in zip(res.images, ref):
        assert psnr(got, deprocess(want)) >= 30


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_keras_and_torch_vgg16_give_the_same_filters(keras_vgg16, torch_vgg16):
    k = visualize_filters(load(keras_vgg16["path"]), "block2_conv1", [0, 5], "chollet", seed=1)
    t = visualize_filters(load(torch_vgg16["path"]), "features.6", [0, 5], "chollet", seed=1)
    for a, b in zip(k.images, t.images):
        assert psnr(a, b) >= 40


def test_dead_filter_gives_a_flat_image_and_a_warning(tmp_path):
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(0)  # a seeded init: an unseeded one leaves filter 1 dead in some runs
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with torch.no_grad():
        net[0].bias[1] = 1e3  # filter 1 fires everywhere on the gray start image
        net[0].bias[2] = -1e6  # filter 2 never fires
    model = load(
        save_onnx(convert_module(net, torch.zeros(1, 3, 32, 32), preprocess="raw", labels=None), tmp_path / "d.onnx")
    )
    with pytest.warns(UserWarning, match="dead"):
        res = visualize_filters(model, "1", [1, 2], "chollet", steps=5, size=32)
    assert res.dead == [2] and np.isfinite(res.raw).all()
    assert (res.images[1] == 128).all() and res.images[0].std() > 0


def test_lucid_recipe_raises_the_activation(torch_vgg16):
    model = load(torch_vgg16["path"])
    few = visualize_filters(model, "features.3", [4, 9], "lucid", steps=2, size=64, seed=0)
    more = visualize_filters(model, "features.3", [4, 9], "lucid", steps=24, size=64, seed=0)
    assert more.images.shape == (2, 64, 64, 3) and np.isfinite(more.raw).all()
    assert (more.objectives > few.objectives).all()


def test_seeds_and_init_images(torch_vgg16):
    """The seed sets the noise of the start image: equal seeds give equal filters, other seeds other ones;
    an init image replaces the noise (so the seed no longer matters) and changes the result."""
    model = load(torch_vgg16["path"])
    run = lambda **kw: visualize_filters(model, "features.1", [3], "chollet", steps=3, size=48, **kw).raw  # noqa: E731
    np.testing.assert_array_equal(run(seed=1), run(seed=1))
    assert np.abs(run(seed=1) - run(seed=2)).max() > 1e-3
    init = np.random.default_rng(7).uniform(100, 160, (48, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(init=init, seed=1), run(init=init, seed=2))
    assert np.abs(run(init=init, seed=1) - run(seed=1)).max() > 1e-3


def test_lucid_parameterization_gradient_is_its_adjoint():
    """FourierImage.gradient against a float64 central difference of sum(w * pixels) along a random direction."""
    from convlens.engine.techniques.lucid import FourierImage

    rng = np.random.default_rng(3)
    img = FourierImage(2, 12, 10, rng, sd=0.05)
    w = rng.normal(size=(2, 12, 10, 3))
    t_re, t_im = rng.normal(size=img.re.shape), rng.normal(size=img.im.shape)

    def objective(re, im):
        img.re, img.im = re, im
        return float(np.sum(w * 255.0 / (1.0 + np.exp(-img.linear()))))

    re0, im0 = img.re.copy(), img.im.copy()
    eps = 1e-6
    fd = (objective(re0 + eps * t_re, im0 + eps * t_im) - objective(re0 - eps * t_re, im0 - eps * t_im)) / (2 * eps)
    img.re, img.im = re0, im0
    s = 1.0 / (1.0 + np.exp(-img.linear()))
    g_re, g_im = img.gradient(w, s)
    analytic = float(np.sum(g_re * t_re) + np.sum(g_im * t_im))
    assert abs(analytic - fd) <= 1e-6 * abs(fd)


def test_lucid_jitter_adjoint_is_exact():
    """<T x, y> = <x, T' y> for a jitter (the random transform with no rotation or scaling)."""
    from convlens.engine.techniques.lucid import transform, transform_adjoint

    class Jitter:  # stands in for the random generator: angle 0, scale 1, a shift of (5, -3)
        def choice(self, options):
            return 0 if 0 in options else 1.0

        def integers(self, lo, hi, n):
            return np.array([5, -3])

    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 20, 24, 3)).astype(np.float32)
    y = rng.normal(size=(1, 20, 24, 3)).astype(np.float32)
    tx, state = transform(x, Jitter())
    # the transform pads with gray; the linear part is the transform of x minus that of a zero image
    t0, _ = transform(np.zeros_like(x), Jitter())
    lhs = float(np.sum((tx - t0).astype(np.float64) * y))
    rhs = float(np.sum(x.astype(np.float64) * transform_adjoint(y, state)))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


def test_filter_selection_refusals():
    assert parse_filters("0-3,7", 8) == [0, 1, 2, 3, 7] and parse_filters("all", 3) == [0, 1, 2]
    with pytest.raises(ConvlensError, match="Filter 9 is out of range; the layer has 8 channels"):
        parse_filters("9", 8)
    with pytest.raises(ConvlensError, match="--filters must look like"):
        parse_filters("a-b", 8)


@pytest.mark.parametrize("source,layer,pool", [("torch", "features.11", "features.4"),
                                               ("keras", "block3_conv1", "block1_pool")])
def test_one_channel_objective_equals_the_full_layer(torch_vgg16, keras_vgg16, source, layer, pool):
    """The faster objective (only the chosen filter's channel of the convolution) gives the objective and
    pixel gradient of the general one; layers that are not convolutions fall back to the general one."""
    from convlens.engine.techniques.filter_objective import FilterStep

    model = load((torch_vgg16 if source == "torch" else keras_vgg16)["path"])
    spec = model.input_spec.with_preset("raw")
    x = np.random.default_rng(0).uniform(100, 160, (3, 64, 64, 3)).astype(np.float32)
    fast = FilterStep(model, layer, (64, 64), spec)
    full = FilterStep(model, layer, (64, 64), spec, selected=False)
    assert fast.selected and not full.selected
    g_fast, obj_fast = fast(x, [5, 0, 200])
    g_full, obj_full = full(x, [5, 0, 200])
    np.testing.assert_allclose(obj_fast, obj_full, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(g_fast - g_full) <= 1e-5 * np.linalg.norm(g_full)
    assert not FilterStep(model, pool, (64, 64), spec).selected


def test_filters_from_the_one_channel_objective_match_the_general_one(torch_vgg16):
    model = load(torch_vgg16["path"])
    fast = visualize_filters(model, "features.6", [1, 9], "chollet", steps=5, size=64, seed=2)
    full = visualize_filters(model, "features.6", [1, 9], "chollet", steps=5, size=64, seed=2, selected=False)
    # after a max-pool, float rounding can flip near-tied maxima between the two graphs (as between
    # frameworks), so the images are compared as the cross-framework test does
    mse = np.mean((fast.images.astype(np.float64) - full.images) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= 40
    np.testing.assert_allclose(fast.objectives, full.objectives, rtol=1e-3)


def test_batching_does_not_change_the_filters(torch_vgg16):
    """Filters are independent batch items: batches of 2 (the last one of 1, its own program) give the
    images a single batch of 3 gives."""
    model = load(torch_vgg16["path"])
    one = visualize_filters(model, "features.8", [3, 4, 5], "chollet", steps=3, size=48, seed=5, batch=3)
    two = visualize_filters(model, "features.8", [3, 4, 5], "chollet", steps=3, size=48, seed=5, batch=2)
    np.testing.assert_allclose(two.raw, one.raw, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(two.objectives, one.objectives, rtol=1e-4)
