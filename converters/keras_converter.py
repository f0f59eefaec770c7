"""Keras -> ONNX with every layer's output exposed, through tf2onnx.

Memory: tf2onnx freezes weights into constants and copies them through several graph passes, which
took 17 GiB on Keras VGG16 with its top. Here the weights enter tf2onnx as graph *inputs* (through
Keras 3's stateless_call), so it converts a weightless graph in under a second; the weights are then
written into the ONNX file as initializers, and constant nodes around them (kernel transposes) are
folded in numpy.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from convlens.engine.errors import ConvlensError
from convlens.engine.metadata import InputSpec, LayerInfo

from .common import finish, fold_constants, rename_tensor
from .downloads import check_imagenet_download, failure_cause
from .frameworks import RANDOM_WEIGHTS_SEED, keras_modules

# keras.applications preprocessing modes (keras/src/applications/*: preprocess_input)
PREPROCESS_BY_FAMILY = {
    "VGG16": "caffe", "VGG19": "caffe", "ResNet50": "caffe", "ResNet101": "caffe", "ResNet152": "caffe",
    "DenseNet121": "torch", "DenseNet169": "torch", "DenseNet201": "torch",
}
RAW_PREFIXES = ("EfficientNet", "ConvNeXt", "RegNet", "MobileNetV3")  # preprocessing is inside the model


def applications_preprocess(name: str) -> str:
    if name in PREPROCESS_BY_FAMILY:
        return PREPROCESS_BY_FAMILY[name]
    if name.startswith(RAW_PREFIXES):
        return "raw"
    return "tf"  # MobileNet, MobileNetV2, Inception*, Xception, ResNet*V2, NASNet*


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx has no conversion for TensorFlow's Erfc, which Keras's exact GELU (ConvNeXt, transformers) calls
    inside its functions: write it as 1 - Erf(x), both standard ONNX."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    minus = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_one_minus"))
    ctx.replace_inputs(minus, [one.output[0], node.output[0]])
    ctx.copy_shape(node.output[0], minus.output[0])
    ctx.set_dtype(minus.output[0], ctx.get_dtype(node.input[0]))


class _NoJitFunctions:
    """Stands for the `tf` module inside Keras's TensorFlow backend while a model is traced for tf2onnx: Keras
    wraps grouped convolutions (ConvNeXt's depthwise ones) in tf.function(jit_compile=True), because they do not
    run on TensorFlow's CPU kernels, and tf2onnx cannot open the XLA function call that leaves in the graph.
    Tracing never runs them, so here the XLA wrapper is dropped and the plain convolution is traced."""

    def __init__(self, tf):
        self._tf = tf

    def __getattr__(self, name):
        return getattr(self._tf, name)

    def function(self, fn=None, **options):
        if options.get("jit_compile"):
            return fn if fn is not None else (lambda f: f)
        return self._tf.function(fn, **options)


@contextlib.contextmanager
def _grouped_conv_without_xla():
    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: nothing to undo
        yield
        return
    original = tf_nn.tf
    tf_nn.tf = _NoJitFunctions(original)
    try:
        yield
    finally:
        tf_nn.tf = original


@contextlib.contextmanager
def _numpy2_compat():
    """tf2onnx 1.17 still calls np.product, which numpy 2 removed."""
    added = not hasattr(np, "product")
    if added:
        np.product = np.prod
    try:
        yield
    finally:
        if added:
            del np.product


def layer_kind(layer) -> str:
    cls = type(layer).__name__
    act = getattr(layer, "activation", None)
    if "Conv" in cls:
        return "conv"
    if "Pool" in cls:
        return "pool"
    if cls == "Dense":
        return "dense"
    if "Normalization" in cls:
        return "norm"
    if cls in ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax") or (
        act is not None and cls == "Activation"
    ):
        return "activation"
    return "other"


def convert_keras_model(model, *, name: str | None = None, preprocess: str = "raw", labels="imagenet",
                        opset: int = 17):
    """Convert a functional or sequential Keras 3 model taking one NHWC image batch."""
    keras, tf, tf2onnx = keras_modules()
    name = name or model.name
    if len(model.inputs) != 1:
        raise ConvlensError(f"Keras model {name} has {len(model.inputs)} inputs; convlens needs one image input.")
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer" and _single_output(l)]
    multi = keras.Model(model.inputs, [model.outputs[0]] + [l.output for l in layers])
    trainable, frozen = list(multi.trainable_variables), list(multi.non_trainable_variables)
    in_shape = tuple(model.inputs[0].shape)
    specs = [tf.TensorSpec((None,) + in_shape[1:], tf.float32, name="input")]
    specs += [tf.TensorSpec(v.shape, v.dtype, name=f"convlens_w{i}") for i, v in enumerate(trainable + frozen)]

    @tf.function(input_signature=specs)
    def forward(x, *ws):
        outs, _ = multi.stateless_call(list(ws[:len(trainable)]), list(ws[len(trainable):]), x, training=False)
        return outs

    with _numpy2_compat(), _grouped_conv_without_xla():
        onnx_model, _ = tf2onnx.convert.from_function(forward, input_signature=specs, opset=opset,
                                                      custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
    graph = onnx_model.graph
    # weights: graph inputs -> initializers, then fold the transposes tf2onnx put around them
    values = [v.numpy() for v in trainable + frozen]
    weight_names = {f"convlens_w{i}" for i in range(len(values))}
    captured = _captured_constants(forward)
    real_inputs = []
    for i in graph.input:
        if i.name in weight_names:
            continue
        if i.name in captured:  # a constant tensor the layer holds outside its variables (e.g. Normalization)
            graph.initializer.append(numpy_helper.from_array(captured[i.name], i.name))
            continue
        real_inputs.append(i)
    if len(real_inputs) != 1:
        raise ConvlensError(f"Keras model {name} converted with unexpected inputs: {[i.name for i in real_inputs]}.")
    del graph.input[:]
    graph.input.extend(real_inputs)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32) if v.dtype == np.float32 else v,
                                                     f"convlens_w{i}") for i, v in enumerate(values))
    del values
    fold_constants(onnx_model)
    # outputs come back in the order returned: predictions first, then one per layer
    out_names = [o.name for o in graph.output]
    existing = {t for n in graph.node for t in n.output} | {i.name for i in graph.input}
    infos = []
    for layer, tensor in zip(layers, out_names[1:]):
        new = layer.name if layer.name not in existing else f"{layer.name}:out"
        rename_tensor(graph, tensor, new)
        existing.add(new)
        rank = len(layer.output.shape)
        infos.append(
            LayerInfo(name=layer.name, tensor=new, kind=layer_kind(layer), layout="NHWC" if rank == 4 else "flat")
        )
    # the model output may equal the last layer's output; give it its own name only if distinct
    first = graph.output[0].name
    if first == out_names[0]:
        final = "output" if "output" not in existing else "convlens_output"
        rename_tensor(graph, first, final)
        first = final
    size = tuple(in_shape[1:3]) if all(isinstance(d, int) for d in in_shape[1:3]) else None
    spec = InputSpec.from_preset("input", preprocess, size=size, layout="NHWC", channels=1 if in_shape[-1] == 1 else 3)
    scores = len(model.outputs[0].shape) == 2  # a classifier head; feature extractors have none
    probs = first if scores and _ends_in_softmax(model) else None
    logits = first if scores and not probs else None
    return finish(onnx_model, source="keras", source_name=name, spec=spec, layers=infos,
                  probabilities_output=probs, logits_output=logits, labels=labels if scores else None)


def _captured_constants(fn) -> dict:
    """Tensors a tf.function captured by value, by their placeholder names inside the graph."""
    concrete = fn.get_concrete_function()
    out = {}
    for inner, outer in zip(concrete.graph.internal_captures, concrete.captured_inputs):
        try:
            value = outer.numpy()
        except (AttributeError, ValueError, TypeError):
            continue
        out[inner.name] = np.asarray(value)
    return out


def _single_output(layer) -> bool:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return False
    return not isinstance(out, (list, tuple))


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def applications_model(name: str, weights: str | None = "none", include_top: bool = True, input_size=None):
    keras, _, _ = keras_modules()
    ctor = getattr(keras.applications, name, None)
    if ctor is None or not callable(ctor):
        import difflib

        names = [n for n in dir(keras.applications) if n[:1].isupper()]
        close = difflib.get_close_matches(name, names, n=3)
        raise ConvlensError(
            f"Unknown keras.applications model {name!r}" + (f"; closest: {', '.join(close)}." if close else ".")
        )
    w = (weights or "none").lower()
    kwargs = {"include_top": include_top}
    if input_size:
        kwargs["input_shape"] = (input_size[0], input_size[1], 3)
    elif not include_top:
        kwargs["input_shape"] = (None, None, 3)
    if w == "imagenet":  # offline: one sentence now, not after the framework's retries
        check_imagenet_download("keras", name, "--weights FILE.weights.h5 or --weights none")
    if w == "imagenet":
        try:
            return ctor(weights="imagenet", **kwargs)
        except Exception as exc:
            raise ConvlensError(f"Could not get ImageNet weights for {name} ({failure_cause(exc)}); "
                                "pass --weights FILE.weights.h5 or --weights none.") from None
    if w == "none":  # seeded: the same random weights every time (frameworks.RANDOM_WEIGHTS_SEED)
        keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    model = ctor(weights=None, **kwargs)
    if w == "none":
        return model
    path = Path(weights)
    if not path.exists():
        raise ConvlensError(f"Weights file not found: {path}")
    if path.suffix in (".pth", ".pt"):
        from .vgg_transfer import torch_state_to_keras_weights

        model.set_weights(torch_state_to_keras_weights(path, name))
        return model
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise ConvlensError(
            f"{path} does not fit keras.applications.{name}: {str(exc).splitlines()[0][:200]}"
        ) from None
    return model


def convert_applications(name: str, weights="none", include_top=True, input_size=None, preprocess=None):
    """`preprocess` defaults to what the weights expect: a torchvision state dict (.pth) was trained on torch
    input, keras.applications weights on the application's own preprocessing."""
    model = applications_model(name, weights, include_top, input_size)
    torch_weights = Path(str(weights or "")).suffix.lower() in (".pth", ".pt")
    default = "torch" if torch_weights else applications_preprocess(name)
    return convert_keras_model(model, name=name, preprocess=preprocess or default)


def convert_keras_file(path: str, preprocess: str | None = None):
    """A saved .keras file, loaded in safe mode (no arbitrary code from lambdas)."""
    keras, _, _ = keras_modules()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise ConvlensError(
            f"Cannot load {path} as a Keras model in safe mode: {str(exc).splitlines()[0][:200]}"
        ) from None
    return convert_keras_model(model, name=Path(path).stem, preprocess=preprocess or "raw")
