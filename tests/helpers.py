"""Comparison helpers for tests."""
import numpy as np

from convlens.engine.render.images import SAMPLE_PATH

IMAGE = SAMPLE_PATH  # the bundled photo, from the installed package


def assert_close(got, ref, rtol=1e-4, what=""):
    """|got - ref| <= rtol * |ref| + rtol * max|ref|: relative, with an absolute floor scaled to the tensor."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = np.abs(ref).max() + 1e-30
    excess = np.abs(got - ref) - rtol * (np.abs(ref) + scale)
    worst = np.abs(got - ref).max() / scale
    assert excess.max() <= 0, f"{what}: max error {worst:.2e} of the tensor's scale exceeds rtol {rtol:.0e}"


def rel_l2(got, ref) -> float:
    """The relative L2 distance |got - ref| / |ref|."""
    return float(np.linalg.norm(np.asarray(got) - np.asarray(ref)) / np.linalg.norm(ref))


def nchw(arr, layout):
    return arr.transpose(0, 3, 1, 2) if arr.ndim == 4 and layout == "NHWC" else arr


def normalized(cam):
    """ReLU, then divide by the max (how convlens normalizes a CAM)."""
    cam = np.maximum(cam, 0)
    return cam / cam.max() if cam.max() > 0 else cam


def torch_gradcam(net, module, x):
    """Grad-CAM by torch autograd at `module`, for the top class of x: (normalized map, class)."""
    import torch

    kept = {}
    hook = module.register_forward_hook(lambda _m, _i, out: kept.__setitem__("A", out))
    logits = net(x)
    hook.remove()
    cls = int(logits.argmax(1))
    (grad,) = torch.autograd.grad(logits[0, cls], kept["A"])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * kept["A"]).sum(1)[0].detach().numpy()
    return normalized(cam), cls
