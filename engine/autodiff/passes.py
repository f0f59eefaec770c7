"""Rewrites of a finished backward graph: cheaper forms of what the rules wrote, same values.

fuse_relu_into_unpool: a ReLU right before a max-pool gets dx = MaxUnpool(dy) * (y > 0). The unpooled
gradient is nonzero only at each window's argmax, where y equals the pooled value, so the same result is
MaxUnpool(dy * (pooled > 0)): the mask is applied on a tensor a quarter the size (2x2 pools), and one full
size Greater/Cast/Mul disappears. The rules write the plain form; this pass finds the pattern afterwards.
"""
from __future__ import annotations

import onnx
from ..writer import GraphWriter


def fuse_relu_into_unpool(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    made_by = {o: n for n in nodes for o in n.output if o}
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    pool_of_indices = {n.output[1]: n for n in nodes if n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1]}
    rewrites: dict[int, list[onnx.NodeProto]] = {}
    for mul in nodes:
        if mul.op_type != "Mul":
            continue
        chain = [mul.input[0]]  # the walker names gradients through Identity nodes (`r_grad`)
        while chain[-1] in made_by and made_by[chain[-1]].op_type == "Identity":
            chain.append(made_by[chain[-1]].input[0])
        unpool, cast = made_by.get(chain[-1]), made_by.get(mul.input[1])
        if unpool is None or cast is None or unpool.op_type != "MaxUnpool" or cast.op_type != "Cast":
            continue
        greater = made_by.get(cast.input[0])
        pool = pool_of_indices.get(unpool.input[1])
        if greater is None or greater.op_type != "Greater" or pool is None or any(uses.get(t) != 1 for t in chain):
            continue
        if greater.input[0] != pool.input[0]:  # the mask must be the ReLU output the pool read
            continue
        base = mul.output[0]
        w = GraphWriter(scope=base)
        mask = w.op("Greater", pool.output[0], greater.input[1], out=f"{base}_fused_gt")
        masked = w.op("Mul", unpool.input[0], w.op("Cast", mask, out=f"{base}_fused_mask", to=onnx.TensorProto.FLOAT),
                      out=f"{base}_fused")
        moved = onnx.NodeProto()
        moved.CopyFrom(unpool)
        moved.input[0], moved.output[0], moved.name = masked, base, base
        rewrites[id(mul)] = w.nodes + [moved]
    out = []
    for n in nodes:
        out.extend(rewrites.get(id(n), [n]))  # the old MaxUnpool, Greater and Cast are left for the cut
    return out
