"""ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods").

Removed pixels are filled by noisy linear imputation: each removed pixel equals the weighted mean of its 8
neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals, over the neighbours inside the image), which
is one sparse linear system per mask, solved for all channels at once, plus Gaussian noise.

The system is solved directly in a nested-dissection order of the pixel grid (separator lines first split
the image, recursively): for these grid-shaped systems it roughly halves the factorization's fill and time
against SuperLU's own column ordering (224 x 224, 90 % removed: 0.23 s against 0.45 s).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (row offset, column offset, weight); the weights of all 8 add up to 1
NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
              (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def removal_masks(heat: np.ndarray) -> dict[str, list[np.ndarray]]:
    """{"morf": [...], "lerf": [...]}: per fraction f in FRACTIONS, a boolean (H, W) mask of the pixels removed.

    MoRF removes the pixels at or above the map's (1 - f) percentile, LeRF those at or above the (1 - f)
    percentile of (1 - map): the percentile thresholds of the reference implementation (pytorch-grad-cam's,
    numpy's linear interpolation), so a map without ties removes round(f * H * W) pixels either way."""
    heat = heat.astype(np.float32)
    inverse = (np.float32(1) - heat).astype(np.float32)
    masks = {"morf": [], "lerf": []}
    for f in FRACTIONS:
        kept = round(100 * (1 - f))
        masks["morf"].append(heat >= np.percentile(heat, kept))
        masks["lerf"].append(inverse >= np.percentile(inverse, kept))
    return masks


def impute(x: np.ndarray, removed: np.ndarray, noise: float, rng: np.random.Generator | None) -> np.ndarray:
    """`x` (H, W, C) with the pixels of `removed` (H, W) replaced by their linear imputation (+ noise)."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    h, w, c = x.shape
    flat_removed = removed.ravel()
    unknown = np.flatnonzero(flat_removed)
    if len(unknown) == 0:
        return x.copy()
    # number the unknowns in nested-dissection order
    unknown = unknown[np.argsort(_dissection_rank(h, w)[unknown], kind="stable")]
    n = len(unknown)
    var = np.full(h * w, -1, np.int64)
    var[unknown] = np.arange(n)
    values = x.reshape(-1, c).astype(np.float64)
    r, col = np.divmod(unknown, w)
    diag = np.ones(n)
    rhs = np.zeros((n, c))
    rows, cols, weights = [np.arange(n)], [np.arange(n)], []
    for dr, dc, weight in NEIGHBOURS:
        rr, cc = r + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        diag[~inside] -= weight
        at = np.flatnonzero(inside)
        neighbour = rr[inside] * w + cc[inside]
        missing = flat_removed[neighbour]
        rhs[at[~missing]] += weight * values[neighbour[~missing]]
        rows.append(at[missing])
        cols.append(var[neighbour[missing]])
        weights.append(np.full(int(missing.sum()), -weight))
    # diag * x_i - sum(w_ij x_j over removed neighbours) = sum(w_ik x_k over kept neighbours)
    matrix = csc_matrix((np.concatenate([diag] + weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solution = splu(matrix, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}).solve(rhs)
    if noise and rng is not None:
        solution = solution + noise * rng.standard_normal(solution.shape)
    out = values.copy()
    out[unknown] = solution
    return out.reshape(h, w, c).astype(x.dtype)


@lru_cache(maxsize=8)
def _dissection_rank(h: int, w: int, leaf: int = 8) -> np.ndarray:
    """Each pixel's position in a nested-dissection order of the h x w grid (separators last)."""
    order: list[np.ndarray] = []
    stack = [(np.arange(h * w).reshape(h, w), False)]
    while stack:  # iterative post-order: a block's halves, then its separator line
        block, emit = stack.pop()
        bh, bw = block.shape
        if emit or bh * bw <= leaf * leaf or min(bh, bw) < 3:
            order.append(block.ravel())
            continue
        if bh >= bw:
            m = bh // 2
            parts = (block[:m], block[m + 1:], block[m:m + 1])
        else:
            m = bw // 2
            parts = (block[:, :m], block[:, m + 1:], block[:, m:m + 1])
        stack.append((parts[2], True))
        stack.append((parts[1], False))
        stack.append((parts[0], False))
    rank = np.empty(h * w, np.int64)
    rank[np.concatenate(order)] = np.arange(h * w)
    return rank
