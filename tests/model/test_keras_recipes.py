"""A Keras model trained on x / 255 (the most common Keras recipe), exported by tf2onnx: `--scale 1/255` states
it, and the numbers equal Keras's own on x / 255 (predictions and tf.GradientTape's pixel gradient). Converting a
saved 7-class Keras model never records the ImageNet names; `convert --labels` records the user's."""
import numpy as np
import pytest

import convlens
from convlens.cli import main

SIZE = 40
PIXELS = np.random.default_rng(11).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def keras_seven(tmp_path_factory):
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    folder = tmp_path_factory.mktemp("keras_seven")
    path = folder / "seven_tf2onnx.onnx"
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(net, input_signature=spec, opset=17, output_path=str(path))
    saved = folder / "seven.keras"
    net.save(saved)
    return net, path, saved


def test_scale_one_255_gives_kerass_own_numbers(keras_seven):
    import tensorflow as tf

    net, path, _ = keras_seven
    x = tf.constant(PIXELS[None] / 255.0)
    probs = net(x)
    cls = int(tf.argmax(probs[0]))
    model = convlens.load(path, scale="1/255")
    assert model.meta.probabilities is not None and model.meta.logits != model.meta.probabilities
    _, top5 = convlens.cam(model, PIXELS)
    np.testing.assert_allclose([p for _, _, p in top5[0]], np.sort(probs.numpy()[0])[::-1][:5], rtol=1e-4)
    assert top5[0][0][0] == cls
    # --score prob: d probability / d pixels = tf's gradient on x/255, divided by 255
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = net(x)[0, cls]
    grad = tape.gradient(p, x).numpy()[0] / 255.0
    (result,) = convlens.saliency(model, PIXELS, score="prob")
    np.testing.assert_allclose(result.attribution.reshape(SIZE, SIZE, 3), grad, rtol=2e-3,
                               atol=1e-5 * np.abs(grad).max())


def test_a_seven_class_keras_file_never_reads_as_imagenet(tmp_path, keras_seven, capsys):
    _, _, saved = keras_seven
    out = tmp_path / "seven.onnx"
    assert main(["convert", str(saved), "-o", str(out), "--scale", "1/255", "--json"]) == 0
    capsys.readouterr()
    model = convlens.load(out)
    assert model.labels is None and model.label(3) == "class 3"  # not "tiger shark"
    assert model.input_spec.scale == pytest.approx(1 / 255) and model.input_spec.preset is None
    names = tmp_path / "emotions.txt"
    names.write_text("\n".join(EMOTIONS))
    named = tmp_path / "named.onnx"
    assert main(["convert", str(saved), "-o", str(named), "--scale", "1/255", "--labels", str(names)]) == 0
    assert convlens.load(named).labels == EMOTIONS
    assert main(["convert", str(saved), "-o", str(tmp_path / "x.onnx"), "--labels", "imagenet"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "--labels gives the 1000 ImageNet names, but x.onnx scores 7 classes; give a list with one name per class.")
    assert not (tmp_path / "x.onnx").exists()


def test_a_keras_file_exports_an_explainer_at_its_nhwc_layer(tmp_path):
    """convlens's Keras files expose each layer as an NHWC relayout beside the NCHW path; export follows it back
    as cam does, and the explainer's map equals `convlens cam` at that layer."""
    import keras
    import onnxruntime as ort

    from convlens.converters.keras_converter import convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inputs, keras.layers.Dense(6, activation="softmax", name="head")(x))
    path = save_onnx(convert_keras_model(net, name="small", preprocess="tf", labels=None), tmp_path / "k.onnx")
    explainer = convlens.export(path, tmp_path / "k_gradcam.onnx", method="gradcam")
    assert explainer.layer == "c2"
    image = np.round(PIXELS).astype(np.uint8)
    outputs = ort.InferenceSession(str(tmp_path / "k_gradcam.onnx")).run(
        ["explained_class", "cam"], {"image": image[None]}
    )
    maps, _ = convlens.cam(path, image.astype(np.float32), layer="c2")
    assert int(outputs[0][0]) == maps[0][0].class_index
    np.testing.assert_allclose(outputs[1][0], maps[0][0].cam, atol=1e-5)
