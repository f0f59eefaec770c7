"""Rules for MatMul, Gemm and Einsum."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from .emitter import attrs
from .registry import rule


# --- linear algebra ------------------------------------------------------------------------------
def _swap_last(e, name):
    rank = len(e.shape(name) or [0, 0])
    perm = list(range(rank))
    perm[-2:] = perm[-1], perm[-2]
    return e.op("Transpose", name, perm=perm)


@rule("MatMul")
def matmul(e, node, dy, needs):
    """da = dy @ b^T, db = a^T @ dy (batch dimensions of b summed when b is 2-D)"""
    a, b = node.input
    da = db = None
    if needs[0]:
        bv = e.value(b)
        folded = bv is not None and bv.ndim >= 2 and e.copy_weights
        bt = e.const(np.ascontiguousarray(np.swapaxes(bv, -1, -2))) if folded else _swap_last(e, b)
        da = e.op("MatMul", dy[0], bt)
    if needs[1]:
        db = e.op("MatMul", _swap_last(e, a), dy[0])
        extra = len(e.shape(db) or e.shape(node.output[0])) - len(e.shape(b))
        if extra > 0:
            db = e.op("ReduceSum", db, e.ints(list(range(extra))), keepdims=0)
    return [da, db]


@rule("Gemm")
def gemm(e, node, dy, needs):
    """Y = alpha op(A) op(B) + beta C: dA = alpha dY op(B)^T (transposed back), dB likewise, dC = beta dY"""
    # With op(A) = A or A^T: dop(A) = alpha dY op(B)^T. Untransposed A takes that as it is (Gemm(dY, B) with
    # transB flipped); a transposed A needs its transpose, (dY op(B)^T)^T = op(B) dY^T = Gemm(B, dY) with
    # transA = transB and transB = 1. B is symmetric: dop(B) = alpha op(A)^T dY, transposed back when transB.
    a_ = attrs(node)
    alpha, beta = a_.get("alpha", 1.0), a_.get("beta", 1.0)
    ta, tb = a_.get("transA", 0), a_.get("transB", 0)
    A, B = node.input[0], node.input[1]
    g = dy[0]
    out = [None, None, None]
    if needs[0]:
        out[0] = (e.op("Gemm", g, B, alpha=alpha, transB=0 if tb else 1) if not ta
                  else e.op("Gemm", B, g, alpha=alpha, transA=tb, transB=1))
    if needs[1]:
        out[1] = (e.op("Gemm", A, g, alpha=alpha, transA=0 if ta else 1) if not tb
                  else e.op("Gemm", g, A, alpha=alpha, transA=1, transB=ta))
    if len(node.input) > 2 and needs[2]:
        cg = e.op("Mul", g, e.const(beta))
        cshape = e.shape(node.input[2])
        oshape = e.shape(node.output[0])
        out[2] = e.unbroadcast(cg, cshape, oshape)
    return out


def _einsum_terms(equation: str) -> tuple[list[list[str]], list[str]]:
    """('ab,bc->ac') -> ([['a','b'], ['b','c']], ['a','c']); '...' is one token. Implicit output (no '->'):
    the indices that occur once, in alphabetical order, after the ellipsis (the ONNX and NumPy rule)."""
    def tokens(term):
        return ["..."] + list(term.replace("...", "", 1)) if term.startswith("...") else \
            list(term.split("...")[0]) + (["..."] + list(term.split("...")[1]) if "..." in term else [])
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = [tokens(t) for t in lhs.split(",")]
    if not arrow:
        letters = [c for t in terms for c in t if c != "..."]
        out = (["..."] if any("..." in t for t in terms) else []) + sorted(
            c for c in set(letters) if letters.count(c) == 1
        )
    else:
        out = tokens(rhs)
    return terms, out


@rule("Einsum")
def einsum(e, node, dy, needs):
    """Y = einsum(X_1, ..., X_n): dX_i = einsum(dY, X_j (j != i) -> term_i)"""
    # Every index of X_i is either in the output (dY carries it), shared with another operand (the einsum
    # sums or pairs it again), or summed within X_i alone: then dY does not depend on where along it, and
    # the gradient is the reduced one broadcast back (Unsqueeze + Expand). Repeated indices inside one term
    # (diagonals) are refused.
    terms, out = _einsum_terms(attrs(node)["equation"].decode() if isinstance(attrs(node)["equation"], bytes)
                               else attrs(node)["equation"])
    if any(len(set(t)) != len(t) for t in terms + [out]):
        raise ConvlensError(f"Einsum node {node.name!r}: repeated indices in one term (a diagonal) have no rule.")
    grads = []
    for i, term in enumerate(terms):
        if not needs[i]:
            grads.append(None)
            continue
        others = [t for j, t in enumerate(terms) if j != i]
        kept = [c for c in term if c in out or any(c in t for t in others)]
        dropped = [k for k, c in enumerate(term) if c not in kept]
        if dropped and "..." in term:
            raise ConvlensError(f"Einsum node {node.name!r}: an index summed inside one operand next to an "
                                "ellipsis has no rule.")
        equation = ",".join("".join(t) for t in [out] + others) + "->" + "".join(kept)
        g = e.op("Einsum", dy[0], *[x for j, x in enumerate(node.input) if j != i], equation=equation)
        if dropped:
            g = e.op("Expand", e.op("Unsqueeze", g, e.ints(dropped)), e.op("Shape", node.input[i]))
        grads.append(g)
    return grads
