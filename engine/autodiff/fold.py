"""Values that exporters compute in the graph but that are constants once the input size is fixed.

torch.onnx writes a slice's bounds as Unsqueeze(Gather(Shape(x), 2)) where the model code read `x.shape`
(Swin's shifted windows, MaxViT's partitions). With the static shapes known at build time such a chain
is a constant: it is evaluated here, twice, with batch sizes 1 and 2, and kept only when both agree (a
value that depends on the batch is not a constant of the program).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

# integer and shape arithmetic; anything else (a float activation) is not folded
FOLDABLE = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Mod",
            "Slice", "Identity", "Reshape", "Floor", "Ceil", "Min", "Max", "Equal", "Where", "Range", "Constant",
            "ConstantOfShape", "ReduceProd", "Abs", "Transpose"}


def fold_value(name: str, producers: dict, constant, shapes: dict, opset: int) -> np.ndarray | None:
    """The value of `name` when it depends only on constants and static shapes, else None.
    `constant(t)` gives a tensor's constant value or None; `producers` maps tensors to (position, node)."""
    nodes, leaves, shaped = [], {}, {}
    stack, seen = [name], set()
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        value = constant(t)
        if value is not None:
            leaves[t] = value
            continue
        found = producers.get(t)
        if found is None or found[1].op_type not in FOLDABLE:
            return None
        node = found[1]
        nodes.append(found)
        if node.op_type == "Shape":
            shape = shapes.get(node.input[0])
            if shape is None or any(not isinstance(d, int) for d in shape[1:]):
                return None
            shaped[node.input[0]] = list(shape)
            continue
        stack.extend(node.input)
    if not nodes:
        return None
    ordered = [n for _, n in sorted(nodes, key=lambda p: p[0])]
    results = [_evaluate(name, ordered, leaves, shaped, batch, opset) for batch in (1, 2)]
    if results[0] is None or results[1] is None or results[0].shape != results[1].shape \
            or not np.array_equal(results[0], results[1]):
        return None
    return results[0]


def _evaluate(name, nodes, leaves, shaped, batch, opset):
    from onnx.reference import ReferenceEvaluator

    feeds = dict(leaves)
    for t, shape in shaped.items():
        feeds[t] = np.zeros([batch] + shape[1:], np.float32)
    inputs = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
              for t, v in feeds.items()]
    graph = helper.make_graph(
        nodes, "fold", inputs, [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)]
    )
    try:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return np.asarray(ReferenceEvaluator(model).run(None, {k: np.asarray(v) for k, v in feeds.items()})[0])
    except Exception:  # an op the reference cannot run here: the value stays unknown
        return None


