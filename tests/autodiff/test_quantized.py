"""QDQ-quantized files: gradients straight through each quantize/dequantize pair inside its range and zero
where it saturates, the gradient torch's fake quantization (quantization-aware training) uses."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import convlens

RNG = np.random.default_rng(5)
W = RNG.normal(0, 0.05, (6, 3, 3, 3)).astype(np.float32)
B = RNG.normal(0, 0.1, 6).astype(np.float32)
WF = RNG.normal(0, 0.5, (4, 6)).astype(np.float32)
BF = RNG.normal(0, 0.1, 4).astype(np.float32)
S1, Z1, S2, Z2 = 0.8, 0, 0.02, 0  # 0.8 per level: pixels above 204 saturate


def _qdq_file(path, per_axis=False):
    inits = [
        numpy_helper.from_array(np.array(S1, np.float32), "s1"),
        numpy_helper.from_array(np.array(Z1, np.uint8), "z1"),
        numpy_helper.from_array(np.array(S2, np.float32), "s2"),
        numpy_helper.from_array(np.array(Z2, np.uint8), "z2"),
        numpy_helper.from_array(W, "w"),
        numpy_helper.from_array(B, "b"),
        numpy_helper.from_array(WF, "wf"),
        numpy_helper.from_array(BF, "bf"),
    ]
    if per_axis:
        inits[0] = numpy_helper.from_array(np.full(3, S1, np.float32), "s1")
        inits[1] = numpy_helper.from_array(np.zeros(3, np.uint8), "z1")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["xq"], axis=1),
             helper.make_node("DequantizeLinear", ["xq", "s1", "z1"], ["xd"], axis=1),
             helper.make_node("Conv", ["xd", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s2", "z2"], ["rd"]),
             helper.make_node("GlobalAveragePool", ["rd"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_qdq_gradient_is_torchs_fake_quantization_gradient(tmp_path):
    pixels = RNG.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()).requires_grad_(True)
    xq = torch.fake_quantize_per_tensor_affine(x, S1, Z1, 0, 255)
    r = torch.relu(torch.nn.functional.conv2d(xq, torch.from_numpy(W), torch.from_numpy(B), padding=1))
    rq = torch.fake_quantize_per_tensor_affine(r, S2, Z2, 0, 255)
    logits = rq.mean(dim=(2, 3)) @ torch.from_numpy(WF).T + torch.from_numpy(BF)
    cls = int(logits.argmax())
    logits[0, cls].backward()
    ref = x.grad[0].permute(1, 2, 0).numpy()
    assert (ref == 0).any() and (ref != 0).any()  # some pixels saturate, others pass
    got = convlens.saliency(_qdq_file(tmp_path / "qdq.onnx"), pixels, preprocess="raw", target=cls)[0].attribution
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_per_axis_quantization_on_the_input_path_gets_one_sentence(tmp_path):
    with pytest.raises(convlens.ConvlensError, match="quantizes per axis on the path to the input"):
        convlens.saliency(_qdq_file(tmp_path / "axis.onnx", per_axis=True),
                          np.zeros((16, 16, 3), np.float32), preprocess="raw")


def test_float16_files_are_computed_in_float32(tmp_path):
    """A torch.onnx export of a half-precision model: Grad-CAM equals torch's in float32 on the same
    (float16-rounded) weights."""
    import torchvision
    from helpers import torch_gradcam

    torch.manual_seed(6)
    net = torchvision.models.resnet18(weights=None).eval().half()
    path = tmp_path / "half.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64, dtype=torch.float16),), str(path), dynamo=False,
                      opset_version=17)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    pixels = RNG.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    ref, cls = torch_gradcam(net.float(), net.layer4[-1], torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()))
    maps, _ = convlens.cam(path, pixels, preprocess="raw")
    assert maps[0][0].class_index == cls and np.abs(maps[0][0].cam - ref).max() < 1e-3


def test_onnx_runtime_fused_ops_run_forward_and_refuse_gradients_in_one_sentence(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(plain), dynamo=False, opset_version=17)
    fused = tmp_path / "fused.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # Conv+Relu -> FusedConv
    options.optimized_model_filepath = str(fused)
    ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    assert any(n.domain == "com.microsoft" for n in onnx.load(str(fused)).graph.node)
    pixels = RNG.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    model = convlens.load(fused, preprocess="raw")
    with torch.no_grad():
        expected = net(torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())).numpy()
    from convlens.engine.runtime.program import program

    got = program(model, [model.meta.logits], (16, 16)).run(pixels[None])[model.meta.logits]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(convlens.ConvlensError, match=r"is com\.microsoft\.FusedConv, an op outside standard ONNX"):
        convlens.saliency(model, pixels)


def _fake_dynamic_quant(x):
    """DynamicQuantizeLinear's uint8 rounding as torch's straight-through fake quantization: the forward value
    ONNX Runtime computes, the gradient of the identity (the scale a constant)."""
    lo, hi = torch.clamp(x.min(), max=0).detach(), torch.clamp(x.max(), min=0).detach()
    scale = (hi - lo) / 255
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    q = torch.clamp(torch.round(x.detach() / scale) + zero, 0, 255)
    return x + ((q - zero) * scale - x.detach())


def test_dynamic_int8_files_differentiate_straight_through(tmp_path):
    """A file from onnxruntime.quantization.quantize_dynamic (DynamicQuantizeLinear, ConvInteger, MatMulInteger):
    convlens's input gradient against torch autograd through the same rounding with straight-through estimators
    and the file's dequantized weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 5)).eval()
    plain, quantized = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(plain), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["scores"])
    quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QUInt8)
    ops = {n.op_type for n in onnx.load(str(quantized)).graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(quantized)).graph.initializer}

    def real(prefix):
        return torch.tensor((w[f"{prefix}_quantized"].astype(np.float32) - w[f"{prefix}_zero_point"])
                            * w[f"{prefix}_scale"])

    pixels = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    x = torch.tensor(pixels.transpose(2, 0, 1)[None].copy(), requires_grad=True)
    f = torch.nn.functional
    h = f.relu(f.conv2d(_fake_dynamic_quant(x), real("0.weight"), net[0].bias, padding=1))
    h = f.relu(f.conv2d(_fake_dynamic_quant(h), real("2.weight"), net[2].bias, stride=2))
    logits = _fake_dynamic_quant(h.mean((2, 3))) @ real("6.weight_Transposed") + net[6].bias
    cls = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, cls], x)
    model = convlens.load(quantized, preprocess="raw")
    (result,) = convlens.saliency(model, pixels)
    assert result.class_index == cls
    got = result.attribution.reshape(32, 32, 3)
    np.testing.assert_allclose(got, grad[0].numpy().transpose(1, 2, 0), rtol=1e-3, atol=1e-4 * float(grad.abs().max()))
