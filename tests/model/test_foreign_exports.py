"""Files users export themselves: torch.onnx.export's default (dynamo) exporter, batch 1 baked in."""
import numpy as np
import pytest
import torch
from cam_references import reference_cam, torch_layer_and_grad

from convlens.engine import load
from convlens.engine.runtime.adapter import PIXELS
from convlens.engine.runtime.objectives import one_hot
from convlens.engine.techniques.cam import gradcam
from convlens.engine.techniques.gradients import gradient_program, run_gradient
from convlens.engine.techniques.targets import Target


@pytest.fixture(scope="module")
def dynamo_resnet(tmp_path_factory):
    pytest.importorskip("onnxscript")
    import torchvision

    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("dynamo") / "resnet18.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=True)
    return net, load(path, preprocess="torch")


def test_batch_one_export_runs_image_by_image_with_torchs_gradients(dynamo_resnet):
    net, model = dynamo_resnet
    assert model.single_image  # its flatten is a Reshape to [1, 512]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    prog, classes = gradient_program(model, Target(), (64, 64))
    out = run_gradient(prog, pixels, one_hot([3, 7], classes))
    xt = torch.tensor(pixels, requires_grad=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    y = net(((xt / 255 - mean) / std).permute(0, 3, 1, 2))
    (y[0, 3] + y[1, 7]).backward()
    ref = xt.grad.numpy()
    assert np.linalg.norm(out[prog.grads[PIXELS]] - ref) <= 1e-4 * np.linalg.norm(ref)
    np.testing.assert_allclose(out["objective_items"], [y[0, 3].item(), y[1, 7].item()], rtol=1e-4, atol=1e-5)


def test_gradcam_on_a_dynamo_export_matches_torch(dynamo_resnet):
    net, model = dynamo_resnet
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    got = gradcam(model, pixels, "top", "auto")
    for i in range(2):
        assert not got[i][0].zero
        A, G, logits = torch_layer_and_grad(net, model, pixels[i:i + 1], got[i][0].class_index)
        assert got[i][0].class_index == int(logits.argmax())  # picked in the graph, one image per run
        np.testing.assert_allclose(got[i][0].cam, reference_cam("gradcam", A, G), atol=1e-4)
