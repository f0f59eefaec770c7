"""Which output holds the class scores, on files convlens did not write: dense outputs, several outputs,
files that end in Softmax; each against torch's own computation or an exact refusal."""
import numpy as np
import pytest
import torch
from helpers import normalized

import convlens

SIZE = 96
PIXELS = np.random.default_rng(2).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
X = torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy())


def _export(net, path, outputs):
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=outputs)
    return path


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                     num_classes=21).eval()

    class Out(torch.nn.Module):  # torchvision returns {"out": ...}
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)["out"]

    wrapped = Out().eval()
    return wrapped, _export(wrapped, tmp_path_factory.mktemp("seg") / "lraspp.onnx", ["out"])


def test_dense_outputs_score_each_class_by_its_mean_logit_over_the_whole_map(segmentation):
    """--region all (the default region, predicted, is checked in test_output_targets.py)."""
    net, path = segmentation
    with torch.no_grad():
        mean_logits = net(X).mean(dim=(2, 3))[0].numpy()
    expected_top = list(np.argsort(-mean_logits)[:3])
    maps, top5 = convlens.cam(path, PIXELS, preprocess="raw", target="top3", layer="net.backbone.16.0.Conv",
                              region="all")
    assert [m.class_index for m in maps[0]] == expected_top  # classes 0..20, never a flattened pixel index
    assert [t[0] for t in top5[0]][:3] == expected_top and max(t[0] for t in top5[0]) < 21
    np.testing.assert_allclose([m.score for m in maps[0]], mean_logits[expected_top], rtol=1e-4, atol=1e-5)
    # Grad-CAM of the mean-over-pixels logit, against torch autograd at the same layer
    kept = {}
    layer = net.net.backbone["16"][0]
    hook = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("A", out))
    out = net(X)
    hook.remove()
    (grad,) = torch.autograd.grad(out[0, expected_top[0]].mean(), kept["A"])
    ref = normalized((grad.mean(dim=(2, 3), keepdim=True) * kept["A"]).sum(1)[0].detach().numpy())
    assert np.abs(maps[0][0].cam - ref).max() < 1e-3


class TwoOutputs(torch.nn.Module):
    def __init__(self, chained: bool):
        super().__init__()
        self.chained = chained
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
                                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.embed = torch.nn.Linear(8, 40)
        self.classify = torch.nn.Linear(40 if chained else 8, 5)

    def forward(self, x):
        f = self.features(x)
        embedding = self.embed(f)
        return embedding, self.classify(embedding if self.chained else f)


def test_an_embedding_the_logits_come_from_is_not_the_scores(tmp_path):
    torch.manual_seed(0)
    net = TwoOutputs(chained=True).eval()
    path = _export(net, tmp_path / "two.onnx", ["embedding", "logits"])
    model = convlens.load(path, preprocess="raw")
    assert model.meta.logits == "logits"
    maps, _ = convlens.cam(model, PIXELS)
    assert maps[0][0].class_index == int(net(X)[1].argmax())


def test_two_independent_heads_are_refused_unless_chosen(tmp_path):
    torch.manual_seed(0)
    net = TwoOutputs(chained=False).eval()
    path = _export(net, tmp_path / "heads.onnx", ["embedding", "logits"])
    with pytest.raises(convlens.ConvlensError, match=r"several outputs that could be its class scores .*--scores"):
        convlens.load(path)
    model = convlens.load(path, preprocess="raw", scores="logits")
    maps, _ = convlens.cam(model, PIXELS)
    assert maps[0][0].class_index == int(net(X)[1].argmax())
    with pytest.raises(convlens.ConvlensError, match="--scores 'nope' is not a tensor of this model"):
        convlens.load(path, scores="nope")


def test_a_file_ending_in_softmax_has_its_logits_before_it(tmp_path):
    torch.manual_seed(0)
    body = TwoOutputs(chained=False).eval()
    net = torch.nn.Sequential(body.features, body.classify, torch.nn.Softmax(dim=1)).eval()
    logits_net = torch.nn.Sequential(body.features, body.classify).eval()
    probs = convlens.load(_export(net, tmp_path / "softmax.onnx", ["probs"]), preprocess="raw")
    logits = convlens.load(_export(logits_net, tmp_path / "logits.onnx", ["logits"]), preprocess="raw")
    assert probs.meta.probabilities == "probs" and probs.meta.logits != "probs"
    a = convlens.cam(probs, PIXELS, score="logit")[0][0][0]
    b = convlens.cam(logits, PIXELS, score="logit")[0][0][0]
    assert a.class_index == b.class_index and abs(a.score - b.score) < 1e-5
    np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)
