"""float16 models are computed in float32: every technique then runs the same code and gradients do not
underflow. The weights keep their float16 values (widened exactly); only the arithmetic is wider, so
results can differ from a float16 run by float16's rounding, never by a different model."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def widen_float16(model: onnx.ModelProto) -> bool:
    """Rewrite a float16 graph to float32 in place; returns whether anything was float16."""
    changed = False
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT16:
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
            )
            changed = True
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT16:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            changed = True
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
                changed = True
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
                changed = True
    return changed
