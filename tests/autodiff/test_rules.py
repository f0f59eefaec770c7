"""Every gradient rule on one-node graphs: float64 finite differences, and torch autograd where it applies."""
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from rule_harness import check_directional, engine_gradients

from convlens.engine.autodiff import RULES, build_backward
from convlens.engine.errors import ConvlensError
from convlens.engine.graph import infer_shapes

rng = np.random.default_rng(42)


def off_kinks(shape, margin=0.1):
    """Random values at least `margin` away from 0 (no ReLU-style kinks)."""
    u = rng.standard_normal(shape)
    return np.sign(u) * (margin + np.abs(u))


def distinct(shape):
    """Values with no ties (pooling windows have a unique max)."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) * 4 - 2).astype(np.float64)


def node(op, inputs, **attrs):
    return helper.make_node(op, inputs, ["y"], name=f"{op.lower()}_node", **attrs)


UNARY = [
    ("Relu", {}, off_kinks), ("LeakyRelu", {"alpha": 0.2}, off_kinks), ("Sigmoid", {}, None), ("Tanh", {}, None),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, off_kinks), ("HardSwish", {}, lambda s: off_kinks(s) * 2),
    ("Elu", {"alpha": 0.7}, off_kinks), ("Erf", {}, None), ("Softplus", {}, None), ("Neg", {}, None),
    ("Exp", {}, None), ("Identity", {}, None), ("Abs", {}, off_kinks),
    ("Softmax", {"axis": 1}, None), ("LogSoftmax", {"axis": -1}, None), ("Flatten", {"axis": 1}, None),
    ("Transpose", {"perm": [0, 2, 3, 1]}, None), ("GlobalAveragePool", {}, None), ("GlobalMaxPool", {}, distinct),
]


@pytest.mark.parametrize("op,attrs,make", UNARY, ids=[u[0] for u in UNARY])
def test_unary(op, attrs, make):
    x = (make or rng.standard_normal)((2, 3, 4, 5))
    check_directional([node(op, ["x"], **attrs)], {"x": x})


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal"])
def test_positive_domain(op):
    check_directional([node(op, ["x"])], {"x": rng.uniform(0.5, 2.0, (2, 3, 4))})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20_as_formula(approximate):
    # Gelu is opset 20; check the rule's formula by comparing with torch directly
    from rule_harness import engine_gradients as eg  # noqa: F401
    x = rng.standard_normal((3, 7)).astype(np.float32)
    import onnxruntime as ort
    from onnx import TensorProto

    from convlens.engine.autodiff.emitter import Emitter
    from convlens.engine.autodiff.rules import gelu
    e = Emitter({}, {}, {})
    n = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    out = gelu(e, n, ["dy"], [True])[0]
    g = helper.make_graph(
        e.nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 7]),
            helper.make_tensor_value_info("dy", TensorProto.FLOAT, [3, 7]),
        ],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=list(e.new_inits.values()),
    )
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    dy = rng.standard_normal((3, 7)).astype(np.float32)
    got = sess.run(None, {"x": x, "dy": dy})[0]
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(xt, approximate=approximate).backward(torch.tensor(dy))
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


BINARY_SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (1, 3, 1, 1)),
    ((2, 3, 4, 5), (5,)),
    ((2, 1, 4, 1), (2, 3, 1, 5)),
]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_binary_broadcasting(op, shapes):
    a = distinct(shapes[0]) + 0.05
    b = rng.uniform(0.5, 1.5, shapes[1]) if op == "Div" else off_kinks(shapes[1])
    check_directional([node(op, ["a", "b"])], {"a": a, "b": b})


def test_pow_base_and_exponent():
    check_directional([node("Pow", ["a", "b"])], {"a": rng.uniform(0.5, 2, (2, 3)), "b": rng.uniform(0.5, 2, (2, 3))})


def test_where_and_variadic():
    cond = rng.random((2, 3, 4)) > 0.5
    check_directional(
        [node("Where", ["c", "a", "b"])],
        {"a": rng.standard_normal((2, 3, 4)), "b": rng.standard_normal((3, 4))},
        consts={"c": cond},
        wrt=["a", "b"],
    )
    check_directional([node("Sum", ["a", "b", "c"])], {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal((3,)),
                                                      "c": rng.standard_normal((2, 1))})
    check_directional([node("Mean", ["a", "b"])], {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal((2, 3))})


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0)])
def test_gemm(ta, tb, alpha, beta):
    a = rng.standard_normal((3, 4) if not ta else (4, 3))
    b = rng.standard_normal((4, 5) if not tb else (5, 4))
    c = rng.standard_normal((5,))
    check_directional([node("Gemm", ["a", "b", "c"], transA=ta, transB=tb, alpha=alpha, beta=beta)],
                      {"a": a, "b": b, "c": c})


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5))])
def test_matmul(shapes):
    check_directional(
        [node("MatMul", ["a", "b"])], {"a": rng.standard_normal(shapes[0]), "b": rng.standard_normal(shapes[1])}
    )


@pytest.mark.parametrize("attrs_", [dict(axes=[-1], keepdims=1), dict(axes=[1], keepdims=0), dict(keepdims=0)])
def test_reduce_l2(attrs_):
    check_directional([node("ReduceL2", ["x"], **attrs_)], {"x": rng.standard_normal((2, 3, 4))})


def test_reduce_l2_of_a_zero_group_has_a_zero_gradient():
    x = rng.standard_normal((2, 3))
    x[1] = 0
    grads = engine_gradients([node("ReduceL2", ["x"], axes=[1], keepdims=0)], {"x": x}, {}, ["x"], np.ones(2))
    assert np.all(np.isfinite(grads["x"])) and np.all(grads["x"][1] == 0)


@pytest.mark.parametrize("equation,shapes", [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),  # attention scores (Keras MultiHeadAttention)
    ("bhqk,bkhd->bqhd", [(2, 3, 4, 6), (2, 6, 3, 5)]),  # attention times values
    ("abc,cd->abd", [(2, 3, 4), (4, 5)]),  # a dense layer over tokens
    ("ij,jk", [(3, 4), (4, 5)]),  # implicit output
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),  # ellipsis
    ("abc,c->a", [(2, 3, 4), (4,)]),  # b summed inside the first operand alone: broadcast back
    ("ij->ji", [(3, 4)]),
])
def test_einsum(equation, shapes):
    names = ["a", "b", "c"][:len(shapes)]
    check_directional([node("Einsum", names, equation=equation)],
                      {n: rng.standard_normal(s) for n, s in zip(names, shapes)})


def test_einsum_diagonal_is_refused():
    with pytest.raises(ConvlensError, match="diagonal"):
        check_directional([node("Einsum", ["a"], equation="ii->i")], {"a": rng.standard_normal((3, 3))})


def test_matmul_constant_weight_is_folded():
    w = rng.standard_normal((4, 5)).astype(np.float32)
    grads, _ = check_directional([node("MatMul", ["a", "w"])], {"a": rng.standard_normal((2, 4))}, consts={"w": w})
    assert grads["a"].shape == (2, 4)
    # the backward graph holds w's transpose as a constant: no node transposes w at run time
    nodes = [helper.make_node("MatMul", ["a", "w"], ["y"]), helper.make_node("ReduceSum", ["y"], ["obj"], keepdims=0)]
    inits = {"w": numpy_helper.from_array(w, "w")}
    vis = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4])]
    back = build_backward(nodes, "obj", ["a"], infer_shapes(nodes, inits, vis, [helper.make_opsetid("", 17)]), {},
                          inits, ())
    backward = back.nodes[len(nodes):]
    assert not any("w" in n.input for n in backward if n.op_type == "Transpose"), [n.op_type for n in backward]
    constants = [numpy_helper.to_array(t) for t in back.inits.values()] + list(back.weights.values())
    assert any(c.shape == (5, 4) and np.array_equal(c, w.T) for c in constants)


CONVS = [
    dict(), dict(strides=[2, 2]), dict(pads=[1, 1, 1, 1]), dict(pads=[0, 1, 2, 1], strides=[2, 1]),
    dict(dilations=[2, 2], pads=[2, 2, 2, 2]), dict(group=2), dict(group=4, pads=[1, 1, 1, 1]),  # depthwise
    dict(auto_pad="SAME_UPPER", strides=[2, 2]), dict(auto_pad="SAME_LOWER"), dict(auto_pad="VALID", strides=[3, 3]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1], dilations=[2, 1]), dict(pads=[3, 3, 3, 3]),
]


def _torch_conv(x, w, b, a):
    n = 2
    pads = a.get("pads", [0] * 4)
    xt = torch.tensor(x, requires_grad=True)
    xp = torch.nn.functional.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
    y = torch.nn.functional.conv2d(xp, torch.tensor(w), torch.tensor(b), stride=a.get("strides", [1] * n),
                                   dilation=a.get("dilations", [1] * n), groups=a.get("group", 1))
    return xt, y


@pytest.mark.parametrize("channels", [4, 16])  # below 16 input channels the rule writes a ConvTranspose
@pytest.mark.parametrize("attrs", CONVS, ids=[str(c) for c in CONVS])
def test_conv(attrs, channels):
    attrs = dict(attrs, group=channels) if attrs.get("group") == 4 else attrs  # depthwise stays depthwise
    group = attrs.get("group", 1)
    x = rng.standard_normal((2, channels, 9, 8))
    w = rng.standard_normal((6 if group != channels else channels, channels // group, 3, 3))
    b = rng.standard_normal((w.shape[0],))
    grads, seed = check_directional([node("Conv", ["x", "w", "b"], **attrs)], {"x": x}, consts={"w": w, "b": b})
    if "auto_pad" not in attrs:  # torch reference, same float32 weights
        xt, y = _torch_conv(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), attrs)
        y.backward(torch.tensor(seed, dtype=torch.float32))
        np.testing.assert_allclose(grads["x"], xt.grad.numpy(), rtol=1e-4, atol=1e-4 * np.abs(xt.grad.numpy()).max())


@pytest.mark.parametrize(
    "attrs", [dict(), dict(strides=[2, 2], pads=[1, 0, 1, 0]), dict(dilations=[2, 2], pads=[1, 1, 1, 1])]
)
def test_conv_transpose(attrs):
    group = attrs.get("group", 1)
    w = rng.standard_normal((4, 6 // group, 3, 3))
    check_directional(
        [node("ConvTranspose", ["x", "w"], **attrs)], {"x": rng.standard_normal((2, 4, 5, 5))}, consts={"w": w}
    )


POOLS = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[2, 1], pads=[1, 0, 0, 1]),
    # windows that do not overlap take the MaxUnpool path
    dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 2], strides=[3, 2], pads=[1, 1, 0, 0]),
]


@pytest.mark.parametrize("attrs", POOLS, ids=[str(p) for p in POOLS])
def test_max_pool(attrs):
    x = distinct((2, 3, 9, 8))
    grads, seed = check_directional([node("MaxPool", ["x"], **attrs)], {"x": x})
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    pads = attrs.get("pads", [0] * 4)
    xp = torch.nn.functional.pad(xt, (pads[1], pads[3], pads[0], pads[2]), value=-1e9)
    y = torch.nn.functional.max_pool2d(
        xp, attrs["kernel_shape"], attrs["strides"], ceil_mode=bool(attrs.get("ceil_mode"))
    )
    y.backward(torch.tensor(seed, dtype=torch.float32))
    np.testing.assert_allclose(grads["x"], xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("attrs", POOLS, ids=[str(p) for p in POOLS])
def test_average_pool(attrs, include):
    check_directional(
        [node("AveragePool", ["x"], count_include_pad=include, **attrs)], {"x": rng.standard_normal((2, 3, 9, 8))}
    )


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
@pytest.mark.parametrize("axes,keep", [([2, 3], 1), ([1], 0), (None, 0)])
def test_reductions(op, axes, keep):
    x = distinct((2, 3, 4, 5))
    if axes is None:
        check_directional([node(op, ["x"], keepdims=keep)], {"x": x})
    elif op != "ReduceSum":  # opset 17: axes is an attribute of ReduceMean and ReduceMax
        check_directional([node(op, ["x"], axes=axes, keepdims=keep)], {"x": x})
    else:
        check_directional([node(op, ["x", "axes"], keepdims=keep)], {"x": x}, consts={"axes": np.array(axes, np.int64)})


def test_shape_ops():
    x = rng.standard_normal((2, 3, 4, 5))
    check_directional([node("Reshape", ["x", "s"])], {"x": x}, consts={"s": np.array([2, -1], np.int64)})
    check_directional(
        [node("Squeeze", ["x", "a"])], {"x": rng.standard_normal((2, 1, 4))}, consts={"a": np.array([1], np.int64)}
    )
    check_directional([node("Unsqueeze", ["x", "a"])], {"x": x}, consts={"a": np.array([0], np.int64)})
    check_directional(
        [node("Expand", ["x", "s"])], {"x": rng.standard_normal((3, 1))}, consts={"s": np.array([2, 3, 4], np.int64)}
    )
    check_directional(
        [node("Tile", ["x", "r"])], {"x": rng.standard_normal((2, 3, 4))}, consts={"r": np.array([1, 2, 3], np.int64)}
    )


def test_concat_split_slice_pad_gather():
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    check_directional([node("Concat", ["a", "b"], axis=1)], {"a": a, "b": b})
    split = helper.make_node("Split", ["x", "sizes"], ["p", "q"], axis=1)
    check_directional(
        [split, node("Mul", ["p", "p"])],
        {"x": rng.standard_normal((2, 5, 3))},
        consts={"sizes": np.array([2, 3], np.int64)},
    )
    x = rng.standard_normal((2, 6, 7))
    check_directional(
        [node("Slice", ["x", "s", "e", "a"])],
        {"x": x},
        consts={"s": np.array([1, -5], np.int64), "e": np.array([5, 100], np.int64), "a": np.array([1, 2], np.int64)},
    )
    check_directional([node("Slice", ["x", "s", "e", "a", "st"])], {"x": x},
                      consts={"s": np.array([0], np.int64), "e": np.array([7], np.int64), "a": np.array([2], np.int64),
                              "st": np.array([2], np.int64)})
    check_directional([node("Pad", ["x", "p"])], {"x": x}, consts={"p": np.array([0, 1, 2, 0, 3, 1], np.int64)})
    # pads computed at run time, as exporters write "same" padding
    computed = [helper.make_node("Add", ["p0", "one"], ["p"]), node("Pad", ["x", "p"])]
    check_directional(
        computed, {"x": x}, consts={"p0": np.array([0, 0, 1, 0, 2, 0], np.int64), "one": np.array(1, np.int64)}
    )
    check_directional([node("Gather", ["x", "i"], axis=1)], {"x": x}, consts={"i": np.array([4, 0, 4], np.int64)})
    check_directional(
        [node("Gather", ["x", "i"], axis=2)], {"x": x}, consts={"i": np.array([6, 5, 4, 3, 2, 1, 0], np.int64)}
    )
    check_directional([node("Gather", ["x", "i"], axis=1)], {"x": x}, consts={"i": np.array(2, np.int64)})
    # multi-dimensional indices, repeated entries (the dynamo exporter's as_strided)
    check_directional([node("Gather", ["x", "i"], axis=1)], {"x": x},
                      consts={"i": np.array([[4, 0], [4, 1]], np.int64)})
    check_directional([node("GatherND", ["x", "i"])], {"x": x},
                      consts={"i": np.array([[0, 4], [1, 0], [0, 4]], np.int64)})


def test_clip_prelu_cast_dropout():
    x = off_kinks((2, 3, 4)) * 3
    check_directional([node("Clip", ["x", "lo", "hi"])], {"x": x}, consts={"lo": np.array(0.0), "hi": np.array(6.0)})
    check_directional([node("PRelu", ["x", "s"])], {"x": x}, consts={"s": rng.uniform(0.1, 0.3, (3, 1))})
    check_directional([node("Cast", ["x"], to=1)], {"x": x})
    check_directional([node("Dropout", ["x"])], {"x": x})


def test_norms():
    x = rng.standard_normal((2, 3, 4, 5))
    consts = {
        "s": rng.uniform(0.5, 2, (3,)),
        "b": rng.standard_normal(3),
        "m": rng.standard_normal(3),
        "v": rng.uniform(0.5, 2, (3,)),
    }
    check_directional([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], {"x": x}, consts=consts)
    check_directional([node("LayerNormalization", ["x", "g", "b"], axis=-1, epsilon=1e-5)], {"x": x},
                      consts={"g": rng.uniform(0.5, 2, (5,)), "b": rng.standard_normal(5)})


@pytest.mark.parametrize("mode,ctm", [("nearest", "asymmetric"), ("linear", "half_pixel"), ("linear", "align_corners"),
                                      ("cubic", "half_pixel")])
def test_resize(mode, ctm):
    check_directional([node("Resize", ["x", "", "sc"], mode=mode, coordinate_transformation_mode=ctm)],
                      {"x": rng.standard_normal((2, 3, 4, 5))}, consts={"sc": np.array([1, 1, 2, 1.5], np.float32)})


def test_chain_fan_in_and_broadcast_once():
    # y = relu(x) * sigmoid(mean_hw(x)) : x fans out into two paths, one broadcasting
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["r", "s"], ["y"])]
    check_directional(nodes, {"x": off_kinks((2, 3, 4, 4))})


def test_guided_relu_override_passes_only_positive_gradients():
    x = off_kinks((2, 8))
    w = rng.standard_normal((2, 8))
    g = engine_gradients([node("Relu", ["x"])], {"x": x}, {}, ["x"], w, overrides=("guided",))["x"]
    np.testing.assert_allclose(g, np.where((x > 0) & (w > 0), w, 0), rtol=1e-6)


def test_missing_rule_names_the_op_and_node():
    n = helper.make_node("Det", ["x"], ["y"], name="my_det")  # an op convlens has no rule for
    with pytest.raises(ConvlensError, match=r"No gradient rule for op Det \(node 'my_det'\); rules exist for: .*Conv"):
        check_directional([n], {"x": rng.standard_normal((3, 3))})


def test_rule_docstrings_state_formulas():
    """Each rule's first docstring line is its formula: it names a gradient (dx, dy, dA...) and says `=`."""
    import re

    for op, fn in RULES.items():
        first = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        assert re.search(r"\bd[a-zA-Z_]+\w*\s*=", first), f"rule for {op}: first docstring line {first!r} is no formula"


def test_shape_only_ops_pass_as_constants():
    # y = reshape(x, shape(x)) * 2: Shape carries no gradient, Reshape does
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Mul", ["r", "two"], ["y"])]
    check_directional(nodes, {"x": rng.standard_normal((2, 3))}, consts={"two": np.array(2.0)})


def test_relu_then_max_pool_masks_the_pooled_gradient():
    """ReLU followed by a max-pool: the ReLU mask is applied before unpooling; same gradient as torch."""
    # both signs, so some windows are entirely inactive; the offset keeps every value >= 0.003 from the ReLU kink
    # (distinct values are spaced 4/432 apart, and one of them would be 0 exactly with an offset of 0.5)
    x = distinct((2, 3, 9, 8)) - 0.503
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    grads, seed = check_directional(nodes, {"x": x})
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    torch.nn.functional.max_pool2d(torch.relu(xt), 2, 2).backward(torch.tensor(seed, dtype=torch.float32))
    np.testing.assert_allclose(grads["x"], xt.grad.numpy(), rtol=1e-5, atol=1e-6)


# --- ties: who gets the gradient when several inputs hold the extreme value --------------------------
def _tie_grads(nodes, inputs, consts, wrt, seed):
    return engine_gradients(nodes, inputs, consts, wrt, seed)


def test_elementwise_max_and_min_split_ties_equally_like_torch():
    a = np.array([[1.0, 2.0, 3.0, 5.0]], np.float32)
    b = np.array([[1.0, 0.5, 3.0, 5.0]], np.float32)
    c = np.array([[1.0, 0.0, 0.0, 5.0]], np.float32)
    w = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    for op, fn in (("Max", torch.maximum), ("Min", torch.minimum)):
        node = helper.make_node(op, ["a", "b", "c"], ["y"])
        got = _tie_grads([node], {"a": a, "b": b, "c": c}, {}, ["a", "b", "c"], w)
        ta, tb, tc = (torch.tensor(v, requires_grad=True) for v in (a, b, c))
        (fn(fn(ta, tb), tc) * torch.tensor(w)).sum().backward()
        if op == "Max":  # torch's nested maximum splits pairwise; one three-way Max splits in thirds
            np.testing.assert_allclose(got["a"] + got["b"] + got["c"], w)  # the whole gradient, once
            np.testing.assert_allclose(got["a"][0, 3], w[0, 3] / 3)
        np.testing.assert_allclose(got["a"][0, 1] + got["b"][0, 1] + got["c"][0, 1], w[0, 1])
    node = helper.make_node("Max", ["a", "b"], ["y"])
    got = _tie_grads([node], {"a": a, "b": b}, {}, ["a", "b"], w)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (torch.maximum(ta, tb) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(got["a"], ta.grad.numpy())
    np.testing.assert_allclose(got["b"], tb.grad.numpy())


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_gives_ties_to_the_first_like_torch_max_dim(op):
    x = np.array([[[3.0, 1.0, 3.0], [0.0, 0.0, -1.0]], [[2.0, 2.0, 2.0], [-4.0, 5.0, -4.0]]], np.float32)
    w = np.array([[1.5], [2.0]], np.float32)[..., None] * np.ones((2, 2, 1), np.float32)
    node = helper.make_node(op, ["x"], ["y"], axes=[2], keepdims=1)
    got = _tie_grads([node], {"x": x}, {}, ["x"], w)["x"]
    tx = torch.tensor(x, requires_grad=True)
    values = (tx.max if op == "ReduceMax" else tx.min)(dim=2, keepdim=True).values
    (values * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy())
    # over two axes: one first element per group, in row-major order
    node = helper.make_node(op, ["x"], ["y"], axes=[1, 2], keepdims=0)
    got = _tie_grads([node], {"x": x}, {}, ["x"], np.ones(2, np.float32))["x"]
    assert (got != 0).sum(axis=(1, 2)).tolist() == [1, 1]
    flat = x.reshape(2, -1)
    first = (flat.argmax if op == "ReduceMax" else flat.argmin)(axis=1)
    assert got.reshape(2, -1)[[0, 1], first].tolist() == [1.0, 1.0]


def test_max_pool_and_global_max_pool_give_ties_to_the_first_like_torch():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, :2, :2] = 7.0  # a tie in the first 2x2 window
    w = np.ones((1, 1, 2, 2), np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    got = _tie_grads([node], {"x": x}, {}, ["x"], w)["x"]
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2, 2).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy())
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"])
    got = _tie_grads([node], {"x": x}, {}, ["x"], np.ones((1, 1, 1, 1), np.float32))["x"]
    assert got.sum() == 1.0 and got[0, 0, 0, 0] == 1.0


def test_relu_before_max_pool_is_masked_before_unpooling():
    """passes.py moves the ReLU mask behind MaxUnpool (a quarter the size); the gradient stays torch's."""
    from onnx import TensorProto

    from convlens.engine.autodiff import build_backward
    from convlens.engine.graph import infer_shapes

    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    got = engine_gradients(nodes, {"x": x}, {}, ["x"], w)["x"]
    tx = torch.tensor(x, requires_grad=True)
    (torch.nn.functional.max_pool2d(torch.relu(tx), 2, 2) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy())
    obj = [helper.make_node("ReduceSum", ["y"], ["obj"], keepdims=0)]
    vis = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    shapes = infer_shapes(nodes + obj, {}, vis, [helper.make_opsetid("", 17)])
    back = build_backward(nodes + obj, "obj", ["x"], shapes, {}, {})
    made_by = {o: n for n in back.nodes for o in n.output}
    final = made_by[back.grads["x"]]
    while final.op_type == "Identity":  # the x_grad name
        final = made_by[final.input[0]]
    assert final.op_type == "MaxUnpool" and made_by[final.input[0]].op_type == "Mul"


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 3, 1], [0, 0, 2, 0, 0, 0, 0, 3], [0, 1, 1, 0, 0, 0, 2, 1]])
def test_copying_pads_add_the_border_back_onto_its_source(mode, pads):
    """edge / reflect / wrap padding (a Caffe ResNet's first pool; PaddleOCR): finite differences, and torch's
    replicate / reflect / circular padding where torch has the same pads."""
    x = rng.standard_normal((2, 3, 5, 6))
    grads, w = check_directional([node("Pad", ["x", "p"], mode=mode)], {"x": x},
                                 consts={"p": np.array(pads, np.int64)})
    if pads[:2] == [0, 0] and pads[4:6] == [0, 0] and min(pads) >= 0:
        xt = torch.tensor(x, requires_grad=True)
        torch_mode = {"edge": "replicate", "reflect": "reflect", "wrap": "circular"}[mode]
        y = torch.nn.functional.pad(xt, (pads[3], pads[7], pads[2], pads[6]), mode=torch_mode)
        (ref,) = torch.autograd.grad((y * torch.tensor(w)).sum(), xt)
        np.testing.assert_allclose(grads["x"], ref.numpy(), rtol=1e-5, atol=1e-6)
