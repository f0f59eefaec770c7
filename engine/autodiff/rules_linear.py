"""Rules for MatMul and Gemm."""
from __future__ import annotations


import numpy as np

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
        bt = e.const(np.ascontiguousarray(np.swapaxes(bv, -1, -2))) if bv is not None and bv.ndim >= 2 else _swap_last(e, b)
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
