"""One-node gradient checks: the engine's backward graph against float64 finite differences.

The forward pass for finite differences runs in float64 through onnx's reference evaluator, so the
check measures the rule, not float32 noise. The backward graph runs in ONNX Runtime, as users run it.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from convlens.engine.autodiff import build_backward
from convlens.engine.graph import infer_shapes

OPSET = 17


def _graph(nodes, inputs, consts, outputs, dtype):
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    vis = [helper.make_tensor_value_info(k, elem, list(v.shape)) for k, v in inputs.items()]
    inits = [numpy_helper.from_array(v.astype(dtype) if v.dtype.kind == "f" else v, k) for k, v in consts.items()]
    outs = [helper.make_tensor_value_info(o, elem, None) for o in outputs]
    return helper.make_model(helper.make_graph(nodes, "rule", vis, outs, initializer=inits),
                             opset_imports=[helper.make_opsetid("", OPSET)])


def engine_gradients(nodes, inputs: dict, consts: dict, wrt: list[str], seed_weights: np.ndarray,
                     overrides=()) -> dict[str, np.ndarray]:
    """Gradients of sum(y * seed_weights) w.r.t. `wrt`, y being the first output of the last node."""
    y = nodes[-1].output[0]
    obj = [
        helper.make_node("Mul", [y, "seed_w"], ["seed_yw"]),
        helper.make_node("ReduceSum", ["seed_yw"], ["obj"], keepdims=0),
    ]
    consts = {**consts, "seed_w": seed_weights.astype(np.float32)}
    all_nodes = list(nodes) + obj
    inits = {
        k: numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in consts.items()
    }
    vis = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()]
    shapes = infer_shapes(all_nodes, inits, vis, [helper.make_opsetid("", OPSET)])
    back = build_backward(all_nodes, "obj", wrt, shapes, {}, inits, tuple(overrides))
    outs = [back.grads[w] for w in wrt]
    out_infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(inputs[w].shape)) for o, w in zip(outs, wrt)]
    graph = helper.make_graph(back.nodes, "bw", vis, out_infos,
                              initializer=list(inits.values()) + list(back.inits.values())
                              + [numpy_helper.from_array(v, k) for k, v in back.weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(outs, {k: v.astype(np.float32) for k, v in inputs.items()})
    return dict(zip(wrt, values))


def forward64(nodes, inputs: dict, consts: dict) -> np.ndarray:
    model = _graph(nodes, inputs, consts, [nodes[-1].output[0]], np.float64)
    return ReferenceEvaluator(model).run(None, {k: v.astype(np.float64) for k, v in inputs.items()})[0]


def check_directional(nodes, inputs: dict, consts: dict | None = None, wrt=None, eps=1e-4, rtol=2e-3, seed=0):
    """<engine gradient, t> against the central difference of sum(y * w) along a random direction t."""
    consts = consts or {}
    wrt = wrt or list(inputs)
    rng = np.random.default_rng(seed)
    y = forward64(nodes, inputs, consts)
    w = rng.standard_normal(y.shape)
    grads = engine_gradients(nodes, inputs, consts, wrt, w)
    t = {k: rng.standard_normal(inputs[k].shape) for k in wrt}
    plus = {k: v + eps * t[k] if k in t else v for k, v in inputs.items()}
    minus = {k: v - eps * t[k] if k in t else v for k, v in inputs.items()}
    fd = (np.sum(forward64(nodes, plus, consts) * w) - np.sum(forward64(nodes, minus, consts) * w)) / (2 * eps)
    analytic = sum(float(np.sum(grads[k].astype(np.float64) * t[k])) for k in wrt)
    scale = max(abs(fd), sum(np.abs(grads[k]).sum() * np.abs(t[k]).mean() for k in wrt) * 1e-3, 1e-6)
    assert abs(analytic - fd) <= rtol * scale, f"directional derivative {analytic} != finite difference {fd}"
    for k in wrt:
        assert grads[k].shape == inputs[k].shape, f"gradient of {k} has shape {grads[k].shape}, not {inputs[k].shape}"
    return grads, w
