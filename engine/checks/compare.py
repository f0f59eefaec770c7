"""Two models, one image: per-layer activation differences and the techniques side by side.

Used to show that a Keras and a PyTorch file give the same pictures, and to gate deployments: every
figure has a tolerance, and `passed` is False as soon as one is exceeded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..runtime.adapter import PIXELS
from ..runtime.objectives import one_hot
from ..runtime.program import program
from ..techniques.activations import activations, rank_predictions
from ..techniques.cam import gradcam
from ..techniques.common import class_probabilities, prepare, to_nchw
from ..techniques.filters import own_size, visualize_filters
from ..techniques.gradients import gradient_program, run_gradient
from ..techniques.targets import Target
from .align import align
from .tables import cell, figures_table, markdown_table, verdict

TOLERANCES = {"activation_rtol": 1e-4, "logits_rtol": 1e-4, "probabilities_atol": 1e-4, "cam_max_abs": 1e-3,
              "gradient_rtol": 1e-3, "filter_psnr": 40.0}
# the input-gradient limit is the larger of gradient_rtol and NOISE_FACTOR times the gradient's float32 noise
NOISE_STEP, NOISE_DRAWS, NOISE_FACTOR = 2.0 ** -21, 2, 3.0


@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)  # per layer: names, max abs diff, relative diff, ok
    figures: dict = field(default_factory=dict)  # model-level figures: name -> {value, limit, ok}
    first_failure: str | None = None
    pictures: dict = field(default_factory=dict)  # name -> (picture of a, picture of b)

    @property
    def passed(self) -> bool:
        return self.first_failure is None


def _fail(c: Comparison, what: str):
    if c.first_failure is None:
        c.first_failure = what


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def compare(a: Model, b: Model, image, layers: list[tuple[str, str]] | None = None, target="top",
            tolerances: dict | None = None, filters: int = 2, filter_steps: int = 40) -> Comparison:
    """Compare model a and model b on one image; both receive the same preprocessing (a's)."""
    own = b.input_spec  # the same numbers into both: a's preprocessing, b's own input name, layout and size
    b = b.with_input_spec(dataclasses.replace(a.input_spec, name=own.name, layout=own.layout, size=own.size,
                                              channels=own.channels))
    return _compare(a, b, image, layers, target, {**TOLERANCES, **(tolerances or {})}, filters, filter_steps)


def _compare(a, b, image, layers, target, tol, filters, filter_steps) -> Comparison:
    pixels = prepare(a, image)
    a, b = a.placed(), b.placed()  # from here on, both take these pixels as they are (no second center crop)
    size = tuple(pixels.shape[1:3])
    pairs = layers or align(a, b, a.shapes.static(size), b.shapes.static(size))
    if not pairs:
        raise ConvlensError("No layers of the two models could be aligned; pass --layers A1:B1,A2:B2.")
    out = Comparison()
    acts_a = activations(a, pixels, [x for x, _ in pairs])
    acts_b = activations(b, pixels, [y for _, y in pairs])
    for x, y in pairs:
        va = to_nchw(acts_a[x], a.layer(x).layout)
        vb = to_nchw(acts_b[y], b.layer(y).layout)
        if va.shape != vb.shape:
            raise ConvlensError(
                f"Layers {x} and {y} have different shapes {va.shape} and {vb.shape}; they do not correspond."
            )
        diff = np.abs(va.astype(np.float64) - vb)
        rel = float(diff.max() / (np.abs(va).max() + 1e-30))
        ok = rel <= tol["activation_rtol"]
        out.rows.append({"a": x, "b": y, "max_abs": float(diff.max()), "relative": rel, "ok": ok})
        if not ok:
            _fail(out, f"layer {x} / {y}")
    if a.meta.logits and b.meta.logits:
        la, lb = _compare_outputs(a, b, pixels, tol, out)
        top_a = [i for i, _, _ in rank_predictions(a, a.meta.logits, la)[0]]
        top_b = [i for i, _, _ in rank_predictions(b, b.meta.logits, lb)[0]]
        same = top_a == top_b
        out.figures["top5 agreement"] = {"value": same, "limit": True, "ok": same}
        if not same:
            _fail(out, "top-5 predictions")
        # Grad-CAM at the last aligned pair with a grid larger than 1x1 (a pooled 1x1 map is always equal)
        spatial = [p for p in pairs if len(acts_a[p[0]].shape) == 4
                   and np.prod(to_nchw(acts_a[p[0]], a.layer(p[0]).layout).shape[2:]) > 1]
        if spatial:
            la, lb = spatial[-1]
            cls = top_a[0] if target == "top" else a.class_index(target)
            ca = gradcam(a, pixels, cls, la)[0][0]
            cb = gradcam(b, pixels, cls, lb)[0][0]
            d = float(np.abs(ca.cam - cb.cam).max())
            corr = float(np.corrcoef(ca.cam.ravel(), cb.cam.ravel())[0, 1]) if ca.cam.std() and cb.cam.std() else 1.0
            out.figures["Grad-CAM max abs difference"] = {
                "value": d,
                "limit": tol["cam_max_abs"],
                "ok": d <= tol["cam_max_abs"],
            }
            out.figures["Grad-CAM correlation"] = {"value": corr, "limit": None, "ok": True}
            if d > tol["cam_max_abs"]:
                _fail(out, "Grad-CAM map")
            out.pictures["gradcam"] = (ca.heatmap, cb.heatmap)
            ga = _input_gradient(a, pixels, cls)
            gb = _input_gradient(b, pixels, cls)
            rel = _relative(ga, gb)
            noise = max(_gradient_noise(a, pixels, cls, ga), _gradient_noise(b, pixels, cls, gb))
            limit = max(tol["gradient_rtol"], NOISE_FACTOR * noise)
            out.figures["input gradient float32 noise"] = {"value": noise, "limit": None, "ok": True}
            out.figures["input gradient relative difference"] = {"value": rel, "limit": limit, "ok": rel <= limit}
            if rel > limit:
                _fail(out, "input gradient")
    conv_pairs = [p for p in pairs if len(acts_a[p[0]].shape) == 4]
    if filters and conv_pairs:
        la, lb = conv_pairs[0]
        size = None if own_size(a) else 64  # transformers run at their own size
        fa = visualize_filters(a, la, list(range(filters)), "chollet", steps=filter_steps, size=size)
        fb = visualize_filters(b, lb, list(range(filters)), "chollet", steps=filter_steps, size=size)
        worst = min(psnr(x, y) for x, y in zip(fa.images, fb.images))
        ok = worst >= tol["filter_psnr"]
        out.figures[f"filter PSNR ({la}, {filters} filters, dB)"] = {
            "value": worst,
            "limit": tol["filter_psnr"],
            "ok": ok,
        }
        if not ok:
            _fail(out, "filter images")
        out.pictures["filters"] = (fa.images, fb.images)
    return out


def _compare_outputs(a: Model, b: Model, pixels: np.ndarray, tol: dict, out: Comparison):
    """The scores themselves, always: a shift that keeps the top 5 is still a different model.
    Returns both models' logits (float64), which also give the top-5 comparison."""
    size = pixels.shape[1:3]
    la = program(a, [a.meta.logits], size).run(pixels)[a.meta.logits].astype(np.float64)
    lb = program(b, [b.meta.logits], size).run(pixels)[b.meta.logits].astype(np.float64)
    if la.shape != lb.shape:
        raise ConvlensError(f"The two models score different numbers of classes ({la.shape[-1]} and {lb.shape[-1]}).")
    rel = float(np.abs(la - lb).max() / (np.abs(la).max() + 1e-30))
    out.figures["logits max relative difference"] = {"value": rel, "limit": tol["logits_rtol"],
                                                     "ok": rel <= tol["logits_rtol"]}
    if rel > tol["logits_rtol"]:
        _fail(out, "logits")
    pa, pb = class_probabilities(a, la), class_probabilities(a, lb)
    d = float(np.abs(pa - pb).max())
    out.figures["probabilities max abs difference"] = {"value": d, "limit": tol["probabilities_atol"],
                                                       "ok": d <= tol["probabilities_atol"]}
    if d > tol["probabilities_atol"]:
        _fail(out, "probabilities")
    return la, lb


def _relative(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(x.astype(np.float64) - y) / (np.linalg.norm(x) + 1e-30))


def _gradient_noise(model: Model, pixels: np.ndarray, cls: int, grad: np.ndarray) -> float:
    """How far the input gradient moves when each pixel moves by a few float32 roundings (2^-21 relative,
    random signs, seeded): the float32 noise floor of this gradient on this image. Deep nets with kinks
    (ReLU6, max-pool) flip a kink under such noise, and two exports of one model differ by that much."""
    rng = np.random.default_rng(0)
    moved = [(pixels * (1 + NOISE_STEP * rng.choice([-1, 1], pixels.shape))).astype(np.float32)
             for _ in range(NOISE_DRAWS)]
    return max(_relative(grad, _input_gradient(model, x, cls)) for x in moved)


def _input_gradient(model: Model, pixels: np.ndarray, cls: int) -> np.ndarray:
    prog, channels = gradient_program(model, Target(), pixels.shape[1:3])
    return run_gradient(prog, pixels, one_hot([cls], channels))[prog.grads[PIXELS]]


def markdown(c: Comparison, name_a: str, name_b: str) -> str:
    layers = markdown_table([name_a, name_b, "max abs diff", "relative", "ok"],
                            [[r["a"], r["b"], cell(r["max_abs"], 3), cell(r["relative"], 3), verdict(r["ok"])]
                             for r in c.rows])
    figures = figures_table([{"figure": k, **f} for k, f in c.figures.items()])
    return "\n".join(
        [layers, "", figures, "", "PASSED" if c.passed else f"FAILED: first difference at {c.first_failure}"]
    )
