"""Feature-visualization objectives against Lucent's own definitions (its objectives.py: channel, neuron,
direction, diversity; Lucid's deepdream, which Lucent lacks, written here in torch): on the same small torch
model, the objective's value and its input gradient equal convlens's (convlens maximizes what Lucent's losses
minimize, so the signs are flipped), within 1e-5."""
import json

import lucent.optvis.objectives as lucent  # an outside reference: installed by the test command (--no-deps)
import numpy as np
import pytest
import torch

import convlens
from convlens.cli import main
from convlens.engine.techniques.unit_objectives import UnitStep

SIZE = 32


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4)).eval()
    path = save_onnx(convert_module(net, torch.zeros(1, 3, SIZE, SIZE), name="small", preprocess="raw"),
                     tmp_path_factory.mktemp("obj") / "small.onnx")
    return net, convlens.load(path)


def _lucent(net, pixels, loss_of):
    """(Lucent's loss, its gradient with respect to the pixels), on the net's layer "3" (the second ReLU)."""
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    act = net[:4](x)
    loss = loss_of(lambda name: act)
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss), grad.numpy().transpose(0, 2, 3, 1)


def _ours(model, pixels, kind, units, **options):
    step = UnitStep(model, "3", (SIZE, SIZE), model.input_spec, kind, **options)
    grad, _ = step(pixels, units)
    return step.total, grad


PIXELS = np.random.default_rng(9).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
DIRECTION = np.random.default_rng(10).normal(size=6).astype(np.float32)


@pytest.mark.parametrize("kind, lucent_objective, options", [
    ("channel", lucent.channel("3", 2), {}),
    ("neuron", lucent.neuron("3", 4), {}),  # the centre: row 8, column 8 of the 16 x 16 grid
    ("direction", lucent.direction("3", torch.from_numpy(DIRECTION)), {"direction": DIRECTION}),
])
def test_one_image_objectives_equal_lucents(small, kind, lucent_objective, options):
    net, model = small
    pixels = PIXELS[:1]
    loss, reference = _lucent(net, pixels, lucent_objective)
    total, grad = _ours(model, pixels, kind, [2] if kind == "channel" else [4], **options)
    assert total == pytest.approx(-loss, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, -reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_deepdream_is_lucids_mean_square(small):
    net, model = small
    loss, reference = _lucent(net, PIXELS[:1], lambda T: -(T("3") ** 2).mean())  # Lucid: reduce_mean(T(layer)**2)
    total, grad = _ours(model, PIXELS[:1], "deepdream", [0])
    assert total == pytest.approx(-loss, rel=1e-5)
    np.testing.assert_allclose(grad, -reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_diversity_over_a_batch_equals_lucents(small):
    """channel(3, 2) on three images with Lucent's diversity at weight 100: Lucent's loss averages the channel
    over the batch, convlens sums it over the images, so its objective is -3 * channel + 100 * diversity."""
    net, model = small
    loss, reference = _lucent(net, PIXELS, lambda T: 3 * lucent.channel("3", 2)(T)
                              - 100 * lucent.diversity("3")(T))
    total, grad = _ours(model, PIXELS, "channel", [2, 2, 2], diversity_weight=100.0)
    assert total == pytest.approx(-loss, rel=1e-5)
    np.testing.assert_allclose(grad, -reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_filters_cli_objectives_and_diversity(small, tmp_path, capsys):
    _, model = small
    np.save(tmp_path / "d.npy", DIRECTION)
    runs = [(["--objective", "neuron", "--filters", "1,2", "--position", "3,5"], 2),
            (["--objective", "direction", "--direction", str(tmp_path / "d.npy")], 1),
            (["--objective", "deepdream", "--diversity", "2"], 2),
            (["--filters", "0", "--diversity", "3"], 3)]
    for k, (argv, images) in enumerate(runs):
        assert main(["filters", str(model.path), "--layer", "3", "--steps", "3", "--size", str(SIZE), *argv,
                     "-o", str(tmp_path / f"f{k}"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert len(result["objectives"]) == images, argv
    diverse = np.load(tmp_path / "f3" / "3.npy")
    assert diverse.shape[0] == 3 and np.abs(diverse[0] - diverse[1]).max() > 0  # three different images
    assert main(["filters", str(model.path), "--layer", "3", "--objective", "direction", "-o",
                 str(tmp_path / "x")]) == 1
    assert "needs a vector: give --direction FILE.npy" in capsys.readouterr().err
