"""References for the CAM tests, written with torch autograd: the model's input from pixels by its recipe, a
layer's activation and gradient, and each gradient CAM method's formula from its paper (float64)."""
import torch


def torch_input(model, pixels):
    spec = model.input_spec
    p = torch.tensor(pixels, requires_grad=True)
    x = ((p * spec.scale - torch.tensor(spec.mean, dtype=torch.float32)) / torch.tensor(spec.std, dtype=torch.float32))
    return p, x.permute(0, 3, 1, 2)


def torch_layer_and_grad(net, model, pixels, cls, module=None):
    store = {}

    def keep(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    h = (module or net.layer4).register_forward_hook(keep)
    p, x = torch_input(model, pixels)
    logits = net(x)
    logits[0, cls].backward()
    h.remove()
    return store["a"].detach().double()[0], store["a"].grad.double()[0], logits.detach()


def reference_cam(method, A, G):
    """Independent formulas (torch, float64) for each method, from the papers."""
    if method == "gradcam":
        raw = (G.mean(dim=(1, 2))[:, None, None] * A).mean(0)
    elif method == "gradcam++":
        num = G ** 2
        den = 2 * G ** 2 + A.sum(dim=(1, 2))[:, None, None] * G ** 3
        alpha = torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))
        raw = ((alpha * torch.relu(G)).sum(dim=(1, 2))[:, None, None] * A).sum(0)
    elif method == "hirescam":
        raw = (G * A).sum(0)
    elif method == "xgradcam":
        raw = (((G * A).sum(dim=(1, 2)) / (A.sum(dim=(1, 2)) + 1e-7))[:, None, None] * A).sum(0)
    elif method == "layercam":
        raw = (torch.relu(G) * A).sum(0)
    else:
        raise ValueError(method)
    raw = torch.relu(raw)
    return (raw / raw.max()).numpy()
