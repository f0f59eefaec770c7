"""The CAM family against pytorch-grad-cam (the `grad-cam` package), method by method, on one torch model.

Where the definitions match, the maps match: pytorch-grad-cam min-max scales each map, resizes it with
OpenCV and scales again, so convlens's map is put through the same steps. Where they differ, the test says how:
- Grad-CAM: convlens averages the weighted channels (the lesson), pytorch-grad-cam sums them: a constant
  factor that the scaling removes.
- EigenCAM: both project on the first principal component of the centered activations; the SVD's sign is
  arbitrary, and convlens picks the sign that correlates with the channel mean, so maps agree up to sign.
- Grad-CAM++: pytorch-grad-cam adds 1e-6 to alpha's denominator, convlens guards only a zero one; the
  model's class scores are scaled up so that 1e-6 is negligible against the squared gradients.
- Score-CAM: pytorch-grad-cam weights channels by a softmax over channels of the masked images' logits;
  convlens (Wang et al.'s paper) by each masked image's class probability minus the baseline's. Not compared.
"""
import cv2
import numpy as np
import pytest
import pytorch_grad_cam as gradcam_lib  # an outside reference: installed by the test command
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import convlens

SIZE = 128
PIXELS = np.random.default_rng(11).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
LIBRARY = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM", "xgradcam": "XGradCAM",
           "layercam": "LayerCAM", "eigencam": "EigenCAM"}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.manual_seed(12)
    net = torchvision.models.resnet18(weights=None).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():  # large class scores: Grad-CAM++'s alpha then does not depend on the library's 1e-6
        net.fc.weight *= 1000
    path = tmp_path_factory.mktemp("gc") / "resnet18.onnx"
    save_onnx(convert_module(net, torch.zeros(1, 3, SIZE, SIZE), name="resnet18", preprocess="raw"), path)
    return net, convlens.load(path)


def _minmax(cam):
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


def _scaled(cam):
    """pytorch-grad-cam's output steps: min-max, OpenCV's resize to the input, min-max again (it aggregates
    the target layers' maps and scales the result)."""
    return _minmax(cv2.resize(np.float32(_minmax(cam)), (SIZE, SIZE)))


@pytest.mark.parametrize("method", list(LIBRARY))
def test_cam_methods_match_pytorch_grad_cam(resnet, method):
    net, model = resnet
    x = torch.from_numpy(PIXELS.transpose(2, 0, 1)[None].copy())
    cls = int(net(x).argmax())
    with getattr(gradcam_lib, LIBRARY[method])(model=net, target_layers=[net.layer4[-1]]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    ours = convlens.cam(model, PIXELS, target=cls, layer="layer4", method=method)[0][0][0].cam
    mine = _scaled(ours)
    if method == "eigencam":
        from convlens.engine.techniques.cam_methods import CAM_METHODS

        acts = convlens.activations(model, PIXELS, ["layer4"])["layer4"].astype(np.float64)
        flipped = _scaled(np.maximum(-CAM_METHODS["eigencam"].raw_map(acts, None)[0], 0))
        mine = min((mine, flipped), key=lambda m: np.abs(m - theirs).max())
    assert np.abs(mine - theirs).max() < 1e-3, np.abs(mine - theirs).max()
