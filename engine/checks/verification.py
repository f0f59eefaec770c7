"""`convlens verify`: the engine against the source framework's own forward pass and autograd.

Same weights, same image: logits, every exposed layer the framework can name, the input gradient, a
Grad-CAM map at the `auto` layer and one filter-ascent step, each with pass or fail. The framework's side
comes in as arrays (converters/framework_reference.py); this module never imports a framework.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..runtime.adapter import PIXELS
from ..runtime.objectives import one_hot
from ..runtime.program import program
from ..techniques.cam import auto_layer, cam_maps, gradcam, normalize
from ..techniques.cam_layer import grid_view
from ..techniques.common import prepare, to_nchw
from ..techniques.gradients import gradient_program, run_gradient
from ..techniques.targets import Target
from .tables import figure_row, figures_table

TOLERANCES = {"activation_rtol": 1e-4, "logits_rtol": 1e-4, "gradient_l2": 1e-2, "cam_max_abs": 1e-3, "step_rtol": 1e-3}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30))


def _rel_l2(a, b) -> float:
    """|a - b| / |b|; 0 when both are zero, inf when only the reference is (a ratio of zeros is no answer)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref, diff = np.linalg.norm(b), np.linalg.norm(a - b)
    return diff / ref if ref > 0 else (0.0 if diff == 0 else float("inf"))


def verify(model: Model, fw, image, tolerances: dict | None = None) -> list[dict]:
    """Rows of {figure, value, limit, ok} comparing the engine with `fw`, the source framework's model on the
    same weights (converters/framework_reference.py: run() and layer_names(), numpy in and out)."""
    tol = {**TOLERANCES, **(tolerances or {})}
    pixels = prepare(model, image)
    model = model.placed()  # from here on it takes these pixels as they are (no second center crop)
    rows = []

    def row(figure, value, limit, ok=None):
        rows.append(figure_row(figure, value, limit, ok))

    # only layers the framework can name: a file exported by another tool (torch.onnx, tf2onnx) names its
    # layers after graph nodes, so it is checked on its logits and input gradient alone
    known = fw.layer_names()
    layers = [l for l in model.layers if l.kind in ("conv", "activation", "pool", "dense") and l.name in known]
    tensor = model.meta.logits
    # Grad-CAM is checked where it means something: the layer `--layer auto` picks (a grid larger than 1x1),
    # never a pooled 1x1 tensor, where every map is the same whatever the weights
    try:
        cam_layer = auto_layer(model, pixels.shape[1:3])
    except ConvlensError:
        cam_layer = None
    if cam_layer is not None and cam_layer.name not in known:
        cam_layer = None
    if cam_layer is not None and cam_layer.name not in {l.name for l in layers}:
        layers.append(cam_layer)
    eng = program(model, [l.tensor for l in layers] + [tensor], pixels.shape[1:3]).run(pixels)
    cls = int(np.argmax(eng[tensor][0]))
    values, scores, g_pix, g_layer = fw.run(
        pixels, [l.name for l in layers], cls, cam_layer.name if cam_layer else None
    )
    row("logits max relative difference", _rel(eng[tensor], scores), tol["logits_rtol"])
    worst = max(layers, key=lambda l: _rel(eng[l.tensor], values[l.name])) if layers else None
    if worst is not None:
        row(
            f"activations, worst layer ({worst.name})",
            _rel(eng[worst.tensor], values[worst.name]),
            tol["activation_rtol"],
        )
    prog, channels = gradient_program(model, Target(), pixels.shape[1:3])
    mine = run_gradient(prog, pixels, one_hot([cls], channels))[prog.grads[PIXELS]]
    # relative L2, not elementwise: a max-pool near-tie that float rounding breaks the other way in the
    # framework moves the gradient of the pixels under that window (both answers are right); on VGG16
    # this measured 3.5e-3 (torch) here, while models without max-pooling agree to ~1e-6
    figure = "input gradient relative L2 difference"
    if not np.any(g_pix):  # e.g. torchvision's ViT with random weights: its head is initialized to zero
        figure += " (the framework's gradient is zero: nothing is explained by these weights)"
    row(
        figure,
        _rel_l2(mine, g_pix),
        tol["gradient_l2"],
        ok=bool(np.any(g_pix)) and _rel_l2(mine, g_pix) <= tol["gradient_l2"],
    )
    if cam_layer is not None:
        view = grid_view(model, cam_layer, model.shapes.complete(pixels.shape[1:3]))
        ref, _ = normalize(cam_maps(view(values[cam_layer.name]), view(g_layer), "gradcam")[0])
        got = gradcam(model, pixels, cls, cam_layer.name)[0][0].cam
        row(f"Grad-CAM max abs difference ({cam_layer.name})", float(np.abs(got - ref).max()), tol["cam_max_abs"])
    first = next((l for l in layers if l.kind == "conv"), None)
    if first is not None:
        raw = model.input_spec.with_preset("raw")
        h, w = pixels.shape[1:3]  # the model's own size: Keras models with a top fix it
        start = (np.random.default_rng(0).random((1, h, w, 3)) * 20 + 128).astype(np.float32)
        act = program(model, [first.tensor], (h, w), raw).run(start)[first.tensor]
        f = int(np.argmax(to_nchw(act, first.layout)[0].mean(axis=(1, 2))))  # a live filter: nonzero gradient
        fprog, fch = gradient_program(model, Target(layer=first.name), (h, w), spec=raw)
        g = run_gradient(fprog, start, one_hot([f], fch))[fprog.grads[PIXELS]]
        _, _, gt, _ = fw.run(start, [], channel=(first.name, f), spec=raw)
        step = g / (np.sqrt(np.mean(g ** 2)) + 1e-5)
        ref = gt / (np.sqrt(np.mean(gt ** 2)) + 1e-5)
        row(f"filter-ascent step ({first.name}, filter {f}) relative L2", _rel_l2(step, ref),
            tol["step_rtol"])
    return rows


def markdown(rows: list[dict]) -> str:
    return figures_table(rows, digits=3)
