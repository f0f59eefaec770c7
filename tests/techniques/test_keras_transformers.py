"""Keras transformers and exact GELU through tf2onnx: a small ViT written with MultiHeadAttention and
LayerNormalization (its graph differs from torch's: LayerNorm decomposed, attention from Einsum), checked
against tf.GradientTape; and keras.applications' ConvNeXtTiny, whose exact GELU (Erfc) and grouped depthwise
convolutions (an XLA function call) tf2onnx could not convert before, checked by `convlens verify`."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import convlens

layers = keras.layers

SIZE, PATCH, WIDTH = 32, 8, 32


class ClassToken(layers.Layer):
    """Prepends a learned class token and adds learned position embeddings."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="token")
        self.position = self.add_weight(
            shape=(1, shape[1] + 1, shape[-1]), initializer="random_normal", name="position"
        )

    def call(self, x):
        token = keras.ops.broadcast_to(self.token, (keras.ops.shape(x)[0], 1, x.shape[-1]))
        return keras.ops.concatenate([token, x], axis=1) + self.position


def tiny_keras_vit(blocks=2):
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(WIDTH, PATCH, strides=PATCH, name="patch_embed")(inp)
    x = layers.Reshape(((SIZE // PATCH) ** 2, WIDTH))(x)
    x = ClassToken(name="tokens")(x)
    for b in range(blocks):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_norm1")(x)
        h = layers.MultiHeadAttention(num_heads=2, key_dim=WIDTH // 2, name=f"block{b}_attn")(h, h)
        x = layers.Add(name=f"block{b}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_norm2")(x)
        h = layers.Dense(2 * WIDTH, activation="gelu", name=f"block{b}_fc1")(h)  # exact GELU: Erfc in TF
        x = layers.Add(name=f"block{b}_add2")([x, layers.Dense(WIDTH, name=f"block{b}_fc2")(h)])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.Flatten(name="class_token")(x[:, :1])
    return keras.Model(inp, layers.Dense(10, name="head")(x))


@pytest.fixture(scope="module")
def keras_vit(tmp_path_factory):
    from convlens.converters.keras_converter import convert_keras_model
    from convlens.engine.model.onnx_file import save_onnx

    net = tiny_keras_vit()
    path = tmp_path_factory.mktemp("keras_vit") / "vit.onnx"
    save_onnx(convert_keras_model(net, name="tiny_vit", preprocess="raw", labels=None), path)
    return net, convlens.load(path)


def test_keras_vit_gradients_match_gradient_tape(keras_vit):
    net, model = keras_vit
    pixels = np.random.default_rng(1).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    x = tf.Variable(pixels)
    with tf.GradientTape() as tape:
        logits = net(x)
        cls = int(tf.argmax(logits[0]))
        score = logits[0, cls]
    ref = tape.gradient(score, x).numpy()[0]
    got = convlens.saliency(model, pixels[0], target=cls)[0].attribution
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-4


def test_keras_vit_grad_cam_at_the_auto_layer_matches_gradient_tape(keras_vit):
    """The auto layer is the last block's first norm; the map is Grad-CAM on its patch tokens, laid out on the
    4x4 grid, computed here in TensorFlow."""
    net, model = keras_vit
    pixels = np.random.default_rng(2).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    inner = keras.Model(net.input, [net.get_layer("block1_norm1").output, net.output])
    with tf.GradientTape() as tape:
        acts, logits = inner(pixels)
        cls = int(tf.argmax(logits[0]))
        score = logits[0, cls]
    grads = tape.gradient(score, acts).numpy()[0, 1:]  # patch tokens
    acts = acts.numpy()[0, 1:]
    ref = np.maximum((acts * grads.mean(axis=0)).mean(axis=1), 0).reshape(4, 4)
    got = convlens.cam(model, pixels[0], target=cls)[0][0][0]
    assert got.layer == "block1_norm1"
    np.testing.assert_allclose(got.cam, ref / ref.max(), atol=1e-4)


def test_keras_vit_rollout_and_gae_find_the_attention(keras_vit):
    _, model = keras_vit
    rows = convlens.layers(model)
    assert [r["name"] for r in rows if r["kind"] == "attention"] == ["attention.0", "attention.1"]
    pixels = np.random.default_rng(3).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    for method in ("rollout", "gae"):
        result = convlens.cam(model, pixels, method=method)[0][0][0]
        assert result.cam.shape == (4, 4) and not result.zero


def test_convnext_tiny_converts_and_verifies(tmp_path):
    """ConvNeXt's exact GELU and grouped depthwise convolutions, against Keras itself (small input, seeded
    random weights saved to a file, as a user would pass theirs)."""
    from convlens.converters.keras_converter import applications_model

    keras.utils.set_random_seed(4)
    weights = tmp_path / "convnext.weights.h5"
    applications_model("ConvNeXtTiny", "none", True, (64, 64)).save_weights(weights)
    path = convlens.convert("keras:ConvNeXtTiny", tmp_path / "convnext.onnx", weights=str(weights), input_size=64)
    rows = convlens.verify(path, source="keras:ConvNeXtTiny", weights=str(weights))
    assert len(rows) == 5 and all(r["ok"] for r in rows), rows
