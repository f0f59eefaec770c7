"""LRP and concept-conditional relevance on Keras files (issue 23): the NHWC layouts tf2onnx writes, against
Zennit and zennit-crp on a torch twin that holds the same weights.

tf2onnx writes a Keras Conv2D + BatchNormalization with exposed layer outputs as Conv, Transpose to NHWC, then
the batch norm's Mul and Add; a conv followed by a separate activation layer is exposed as a Transpose beside
the NCHW path. Both must reach the rules as the torch file's layers do."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from zennit import composites as zc
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm

from helpers import rel_l2

from convlens import load
from convlens.converters.keras_converter import convert_keras_model
from convlens.engine.model.onnx_file import save_onnx
from convlens.engine.runtime.adapter import apply_numpy
from convlens.engine.techniques.saliency import saliency, zbox_bounds

SIZE = 32
# Keras layer -> the torch twin's module whose output holds the same values (BN merged into its conv, as
# Zennit's SequentialMergeBatchNorm and convlens's canonizer do; conv2d_2 has its ReLU inside the Keras layer)
TWIN_LAYERS = {"conv2d": "0", "conv2d_1": "4", "conv2d_2": "7"}


def _keras_net():
    import keras
    from keras import layers

    keras.utils.set_random_seed(31)
    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization(name="batch_norm")(layers.Conv2D(8, 3, padding="same",
                                                                                   name="conv2d")(inp)))
    x = layers.MaxPooling2D()(x)
    x = layers.ReLU()(layers.Conv2D(16, 3, padding="same", name="conv2d_1")(x))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2d_2")(x)
    out = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    net = keras.Model(inp, out)
    rng = np.random.default_rng(32)  # batch-norm statistics far from identity, so folding it (or not) shows
    bn = net.get_layer("batch_norm")
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.uniform(-0.2, 0.2, 8), rng.uniform(-0.5, 0.5, 8),
                    rng.uniform(0.5, 2.0, 8)])
    return net


def _torch_twin(net):
    twin = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        for module, name in ((twin[0], "conv2d"), (twin[4], "conv2d_1"), (twin[6], "conv2d_2")):
            kernel, bias = net.get_layer(name).get_weights()
            module.weight.copy_(torch.tensor(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
            module.bias.copy_(torch.tensor(bias))
        gamma, beta, mean, var = net.get_layer("batch_norm").get_weights()
        for t, v in ((twin[1].weight, gamma), (twin[1].bias, beta), (twin[1].running_mean, mean),
                     (twin[1].running_var, var)):
            t.copy_(torch.tensor(v))
        kernel, bias = net.get_layer("logits").get_weights()
        twin[10].weight.copy_(torch.tensor(kernel.T))
        twin[10].bias.copy_(torch.tensor(bias))
    return twin


@pytest.fixture(scope="module")
def keras_twins(tmp_path_factory):
    """The Keras net converted by convlens (layers exposed) and by tf2onnx's own command line from a SavedModel
    (which folds the batch norm itself), and its torch twin."""
    folder = tmp_path_factory.mktemp("keras_relevance")
    net = _keras_net()
    twin = _torch_twin(net)
    ours = save_onnx(convert_keras_model(net, name="keras_bn", preprocess="torch"), folder / "convlens.onnx")
    saved = folder / "savedmodel"
    net.export(str(saved), verbose=False)
    cli = folder / "tf2onnx_cli.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--opset", "17",
                    "--output", str(cli)], check=True, capture_output=True)
    pixels = np.random.default_rng(33).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    model = load(ours, preprocess="torch")
    x = torch.tensor(apply_numpy(pixels[None], model.input_spec).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        np.testing.assert_allclose(twin(x).numpy(), net(apply_numpy(pixels[None], model.input_spec)), atol=1e-4)
    return {"net": net, "twin": twin, "ours": model, "cli": load(cli, preprocess="torch"),
            "pixels": pixels, "x": x}


def _composite(name, spec):
    low, high = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in zbox_bounds(spec))
    canonizers = [SequentialMergeBatchNorm()]
    return {"lrp-epsilon-plus": lambda: zc.EpsilonPlus(1e-6, canonizers=canonizers),
            "lrp-epsilon-gamma-box": lambda: zc.EpsilonGammaBox(low=low, high=high, epsilon=1e-6, gamma=0.25,
                                                                canonizers=canonizers),
            "lrp-epsilon-alpha2-beta1-flat": lambda: zc.EpsilonAlpha2Beta1Flat(1e-6, canonizers=canonizers)}[name]()


@pytest.mark.parametrize("method", ["lrp-epsilon-plus", "lrp-epsilon-gamma-box", "lrp-epsilon-alpha2-beta1-flat"])
def test_keras_files_give_zennits_relevance(keras_twins, method):
    """Both Keras files (convlens's, with the batch norm as Mul/Add behind a Transpose; tf2onnx's command line)
    within 1e-4 of Zennit on the twin. Before the canonizer folded a norm behind a Transpose, convlens's file was
    0.39 away on lrp-epsilon-plus (the rules saw the conv alone)."""
    k, twin, x = keras_twins, keras_twins["twin"], keras_twins["x"]
    with torch.no_grad():
        logits = twin(x)
    c = int(logits.argmax())
    with Gradient(model=twin, composite=_composite(method, k["ours"].input_spec)) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(), torch.eye(10)[[c]] * logits[0, c])
    ref = relevance[0].permute(1, 2, 0).numpy()
    assert np.abs(ref).max() > 0
    for which in ("ours", "cli"):
        got = saliency(k[which], k["pixels"], target=c, method=method)[0].attribution
        assert rel_l2(got, ref) < 1e-4, (which, rel_l2(got, ref))


def _exposed_beside_the_path(path, tensor) -> bool:
    """The layer's tensor is a Transpose's output that no node reads (a graph output only)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    return producer[tensor].op_type == "Transpose" and not any(tensor in n.input for n in graph.node)


def test_concept_conditional_relevance_on_keras_layers_equals_zennit_crp(keras_twins):
    """--condition on each Keras conv, two of them exposed beside the path as tf2onnx writes them: the conditional
    heatmaps and each channel's relevance share equal zennit-crp's CondAttribution on the twin's modules.
    zennit-crp's own forward pass here gives 0.9995x the twin's logit (measured; the ratio 1/sqrt(1 + 1e-3) is the
    batch norm's eps, which its canonized net seems to keep), so its heatmaps are scaled by logit / its prediction
    before the comparison; Zennit's Gradient on the same net has no such factor (the test above)."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept

    k, twin = keras_twins, keras_twins["twin"]
    model = k["ours"]
    beside = [name for name in TWIN_LAYERS if _exposed_beside_the_path(model.path, model.layer(name).tensor)]
    assert beside == ["conv2d_1", "conv2d_2"]  # the case the test is about is in the file
    x = k["x"].clone().requires_grad_()
    with torch.no_grad():
        logits = twin(x)
    c = int(logits.argmax())
    attribution = CondAttribution(twin)
    composite = zc.EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    for name, module in TWIN_LAYERS.items():
        unconditioned = attribution(x, [{"y": [c]}], composite, record_layer=[module])
        scale = float(logits[0, c] / unconditioned.prediction[0, c])
        assert abs(scale - 1) < 1e-3
        recorded = unconditioned.relevances[module]
        ref_shares = ChannelConcept().attribute(recorded, abs_norm=True)[0].numpy()
        channel = int(np.argmax(np.abs(ref_shares)))
        ref = attribution(x, [{module: [channel], "y": [c]}], composite).heatmap[0].numpy() * scale
        got = saliency(model, k["pixels"], target=c, method="lrp-epsilon-plus-flat",
                       condition=f"{name}:{channel}")[0]
        assert np.abs(ref).max() > 0
        assert rel_l2(got.attribution.sum(axis=2), ref) < 1e-4, (name, rel_l2(got.attribution.sum(axis=2), ref))
        shares = dict(got.concept_shares)
        np.testing.assert_allclose([shares[j] for j in range(len(ref_shares))], ref_shares, atol=1e-5)
