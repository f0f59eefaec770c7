"""Maps from a transformer's attention: attention rollout and gradient-weighted attention (GAE).

Both read every block's attention probabilities A (N, heads, T, T), found in the graph (model/attention.py), and
propagate a token-to-token relevance R (T x T) through the blocks; the map is the class token's row of R
over the patch tokens, laid out on the patch grid.

- rollout (Abnar and Zuidema 2020): per block the heads are fused (mean, max or min), optionally the
  `discard` fraction of lowest fused weights in each map is set to zero (except the class token's weight
  on itself, as in the widely used vit-explain implementation),
  the identity is added for the residual path and rows renormalized: B = (F + I) / rowsum(F + I);
  R = B_L ... B_2 B_1. No class enters: the map is the same for every target.
- gae (Chefer, Gur and Wolf 2021, "Generic Attention-model Explainability", eq. 5-6): per block
  Abar = mean_heads(relu(dS/dA * A)) for the target's score S (the logit), R <- R + Abar R from R = I.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from ..model.attention import Attention, global_attention
from ..model.model import Model
from ..model.tokens import TokenGrid
from ..runtime.objectives import OBJECTIVE_WEIGHTS, TOP_CLASS, one_hot
from ..runtime.program import program
from .common import prepare
from .gradients import gradient_program
from .targets import Target, score_values, single_class

HEAD_FUSIONS = ("mean", "max", "min")


def attention_blocks(model: Model, shapes: dict, what: str = "rollout and GAE do not apply; use --method gradcam"
                     ) -> tuple[list[Attention], TokenGrid]:
    """The global attention maps of a class-token transformer, or one sentence saying why there are none."""
    maps, tokens = global_attention(model, shapes)
    if not maps:
        raise ConvlensError("The model has no attention over its whole token sequence (a convnet, or a windowed "
                            f"transformer such as Swin or MaxViT), so {what}.")
    if tokens.prefix < 1:
        raise ConvlensError(f"The model's attention has no class token to read a map from, so {what}.")
    return maps, tokens


def _per_head(value: np.ndarray, att: Attention, n: int) -> np.ndarray:
    """(N, heads, T, T) whether or not the exporter folded the heads into the batch."""
    return value.reshape(n, -1, att.tokens, att.tokens).astype(np.float64)


def rollout_maps(attentions: list[np.ndarray], tokens: TokenGrid, fusion: str = "mean",
                 discard: float = 0.0) -> np.ndarray:
    """(N, h, w) rollout maps from per-block (N, heads, T, T) attention, before normalization."""
    if fusion not in HEAD_FUSIONS:
        raise ConvlensError(f"Unknown head fusion {fusion!r}; choose from {', '.join(HEAD_FUSIONS)}.")
    if not 0 <= discard < 1:
        raise ConvlensError(f"The discard ratio must be in [0, 1), not {discard}.")
    n, _, t, _ = attentions[0].shape
    eye = np.eye(t)
    result = np.broadcast_to(eye, (n, t, t)).copy()
    for a in attentions:
        fused = getattr(a, fusion)(axis=1)
        if discard > 0:
            flat = fused.reshape(n, -1).copy()
            k = int(flat.shape[1] * discard)
            lowest = np.argsort(flat, axis=1, kind="stable")[:, :k]
            for i in range(n):
                flat[i, lowest[i][lowest[i] != 0]] = 0
            fused = flat.reshape(n, t, t)
        b = fused + eye
        b = b / b.sum(axis=-1, keepdims=True)
        result = b @ result
    return tokens.patches(result[:, 0, :])


def gae_maps(attentions: list[np.ndarray], gradients: list[np.ndarray], tokens: TokenGrid) -> np.ndarray:
    """(N, h, w) GAE maps from per-block attention and d score / d attention, before normalization."""
    n, _, t, _ = attentions[0].shape
    r = np.broadcast_to(np.eye(t), (n, t, t)).copy()
    for a, g in zip(attentions, gradients):
        abar = np.maximum(g * a, 0).mean(axis=1)
        r = r + abar @ r
    return tokens.patches(r[:, 0, :])


def attention_run(model: Model, pixels: np.ndarray, shapes: dict, method: str, target="top", score: str = "logit",
                  fusion: str = "mean", discard: float = 0.0, extra=()):
    """(scores, classes (N,), raw maps (N, h, w), fetched tensors) for rollout or gae on a batch."""

    maps, tokens = attention_blocks(model, shapes)
    size = pixels.shape[1:3]
    tgt = Target(score=score)
    score_tensor, _ = tgt.tensor(model)
    names = [a.tensor for a in maps]
    n = len(pixels)
    if method == "rollout":
        fetch = list(dict.fromkeys([score_tensor, *names, *extra]))
        out = program(model, fetch, size).run(pixels)
        scores = score_values(model, out[score_tensor], score_tensor, score)
        one = single_class(model, target)
        classes = np.argmax(scores, axis=1) if one == "top" else np.full(n, one)
        raw = rollout_maps([_per_head(out[a.tensor], a, n) for a in maps], tokens, fusion, discard)
        return scores, classes, raw, out
    one = single_class(model, target)
    top = one == "top"
    fetch = tuple(dict.fromkeys((score_tensor, *names, *extra) + ((TOP_CLASS,) if top else ())))
    prog, channels = gradient_program(model, tgt, size, wrt=tuple(names), fetch=fetch, top=top)
    if not top and not 0 <= one < channels:
        raise ConvlensError(f"Class {one} is out of range; the model has {channels} classes.")
    out = prog.run(pixels, **({} if top else {OBJECTIVE_WEIGHTS: one_hot([one] * n, channels)}))
    classes = out[TOP_CLASS].astype(np.int64) if top else np.full(n, one)
    scores = score_values(model, out[score_tensor], score_tensor, score)
    raw = gae_maps([_per_head(out[a.tensor], a, n) for a in maps],
                   [_per_head(out[prog.grads[a.tensor]], a, n) for a in maps], tokens)
    return scores, classes, raw, out


def head_maps(model: Model, image, block: int, patch: tuple[int, int] | None = None) -> np.ndarray:
    """(heads, h, w): how much the class token (or the patch at (row, col)) attends to each patch, per head,
    in one block (0-based, in graph order)."""

    pixels = prepare(model, image)[:1]
    maps, tokens = attention_blocks(model, model.shapes.complete(pixels.shape[1:3]),
                                    "there are no class-token attention maps to show; use convlens cam")
    if not 0 <= block < len(maps):
        raise ConvlensError(f"--block {block} is out of range; the model has {len(maps)} attention blocks (0 to "
                            f"{len(maps) - 1}).")
    if patch is None:
        row = 0
    else:
        r, c = patch
        if not (0 <= r < tokens.height and 0 <= c < tokens.width):
            raise ConvlensError(f"--patch {r},{c} is outside the {tokens.height}x{tokens.width} patch grid.")
        row = tokens.prefix + r * tokens.width + c
    att = maps[block]
    value = program(model, [att.tensor], pixels.shape[1:3]).run(pixels)[att.tensor]
    return tokens.patches(_per_head(value, att, 1)[0, :, row, :]).astype(np.float32)
