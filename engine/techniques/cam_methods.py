"""The CAM family as one table: a method is a row (name -> how its map is formed from the layer).

A = the layer's activations, G = d score / d A, both (N, C, h, w) float64; each formula returns the raw
map (N, h, w) before ReLU and normalization. The CLI's choices, the sanity check, the report and the docs
read this table, so a new method is one row here. Gradient rows also carry their formula as ONNX nodes
(`onnx_map(e, A, G) -> raw map`, written with the autodiff Emitter), which exported explainers
(engine/export/explainer.py) put in their graph; tests check each ONNX row against its numpy twin. Kinds (each a row of
cam.py's CAM_KINDS): "gradient" maps need G (one backward pass per
class), "activation" maps need A alone, "score" maps run masked forward passes (Score-CAM, in cam.py),
"attention" maps read a transformer's attention blocks instead of one layer (attention_maps.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CamMethod:
    name: str
    kind: str  # gradient, activation or score
    formula: str
    raw_map: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None
    onnx_map: Callable | None = None  # (emitter, A, G tensor names, NCHW) -> raw map tensor (N, h, w)

    @property
    def reads_layer(self) -> bool:
        """Whether the map is formed at one layer (--layer applies); attention maps read every block."""
        return self.kind != "attention"


def _gradcam(A, G):
    return (G.mean(axis=(2, 3), keepdims=True) * A).mean(axis=1)


def _gradcam_pp(A, G):
    g2, g3 = G ** 2, G ** 3
    denom = 2 * g2 + A.sum(axis=(2, 3), keepdims=True) * g3
    alpha = np.where(G != 0, g2 / np.where(denom != 0, denom, 1.0), 0.0)
    return ((alpha * np.maximum(G, 0)).sum(axis=(2, 3), keepdims=True) * A).sum(axis=1)


def _hirescam(A, G):
    return (G * A).sum(axis=1)


def _xgradcam(A, G):
    w = (G * A).sum(axis=(2, 3), keepdims=True) / (A.sum(axis=(2, 3), keepdims=True) + 1e-7)
    return (w * A).sum(axis=1)


def _layercam(A, G):
    return (np.maximum(G, 0) * A).sum(axis=1)


# the same formulas as ONNX nodes (float32, where the numpy rows compute in float64)
def _gradcam_onnx(e, A, G):
    return e.reduce("ReduceMean", e.op("Mul", e.reduce("ReduceMean", G, [2, 3]), A), [1], keepdims=0)


def _gradcam_pp_onnx(e, A, G):
    g2 = e.op("Mul", G, G)
    g3 = e.op("Mul", g2, G)
    denom = e.op("Add", e.op("Mul", g2, e.const(2.0)), e.op("Mul", e.reduce("ReduceSum", A, [2, 3]), g3))
    safe = e.op("Where", e.op("Equal", denom, e.const(0.0)), e.const(1.0), denom)
    alpha = e.op("Where", e.op("Equal", G, e.const(0.0)), e.const(0.0), e.op("Div", g2, safe))
    weights = e.reduce("ReduceSum", e.op("Mul", alpha, e.op("Relu", G)), [2, 3])
    return e.reduce("ReduceSum", e.op("Mul", weights, A), [1], keepdims=0)


def _hirescam_onnx(e, A, G):
    return e.reduce("ReduceSum", e.op("Mul", G, A), [1], keepdims=0)


def _xgradcam_onnx(e, A, G):
    num = e.reduce("ReduceSum", e.op("Mul", G, A), [2, 3])
    den = e.op("Add", e.reduce("ReduceSum", A, [2, 3]), e.const(1e-7))
    return e.reduce("ReduceSum", e.op("Mul", e.op("Div", num, den), A), [1], keepdims=0)


def _layercam_onnx(e, A, G):
    return e.reduce("ReduceSum", e.op("Mul", e.op("Relu", G), A), [1], keepdims=0)


def _eigencam(A, _G):
    return np.stack([_first_component(a) for a in A])


def _first_component(a: np.ndarray) -> np.ndarray:
    """Projection of each position's channel vector on the first principal direction, signed so that it
    correlates positively with the channel mean (the SVD's sign is arbitrary)."""
    c, h, w = a.shape
    flat = a.reshape(c, -1).T
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = flat @ vt[0]
    if np.corrcoef(proj, a.reshape(c, -1).mean(axis=0))[0, 1] < 0:
        proj = -proj
    return proj.reshape(h, w)


CAM_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in [
        CamMethod(
            "gradcam",
            "gradient",
            "mean_c(mean_hw(G) * A) (Selvaraju et al. 2017; channels averaged as in the lesson)",
            _gradcam,
            _gradcam_onnx,
        ),
        CamMethod(
            "gradcam++",
            "gradient",
            "sum_c(sum_hw(alpha * relu(G)) * A), alpha = G^2 / (2 G^2 + sum_hw(A) G^3) "
            "(Chattopadhyay et al. 2018, exponential score form)",
            _gradcam_pp,
            _gradcam_pp_onnx,
        ),
        CamMethod("hirescam", "gradient", "sum_c(G * A) (Draelos and Carin 2020)", _hirescam, _hirescam_onnx),
        CamMethod(
            "xgradcam", "gradient", "sum_c(sum_hw(G * A) / sum_hw(A) * A) (Fu et al. 2020)", _xgradcam, _xgradcam_onnx
        ),
        CamMethod("layercam", "gradient", "sum_c(relu(G) * A) (Jiang et al. 2021)", _layercam, _layercam_onnx),
        CamMethod(
            "scorecam",
            "score",
            "sum_c(w_c * A), w_c = p(class | image * upsampled normalized A_c) - p(class | 0) (Wang et al. 2020)",
            None,
        ),
        CamMethod(
            "rollout",
            "attention",
            "class token's row of prod_blocks rownorm(fuse_heads(A) + I) over the patches "
            "(Abnar and Zuidema 2020; transformers with a class token)",
            None,
        ),
        CamMethod(
            "gae",
            "attention",
            "class token's row of R, R <- R + mean_heads(relu(dS/dA * A)) R from R = I "
            "(Chefer et al. 2021; transformers with a class token)",
            None,
        ),
        CamMethod(
            "eigencam",
            "activation",
            "A's positions projected on their first principal component (Muhammad and Yeasin 2020)",
            _eigencam,
        ),
    ]
}
