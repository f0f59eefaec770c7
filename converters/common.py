"""What every converter does after its framework has exported a graph: names, metadata, folding."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convlens.engine.errors import ConvlensError
from convlens.engine.graph import infer_shapes
from convlens.engine.metadata import InputSpec, LayerInfo, ModelMeta
from convlens.engine.model.infer import find_softmax_logits
from convlens.engine.model.layouts import graph_layouts
from convlens.engine.model.model import write_meta

from .vgg_transfer import canonical_names


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it appears in the graph (node inputs/outputs and graph outputs)."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for out in graph.output:
        if out.name == old:
            out.name = new


def expose_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Make each tensor in `names` a graph output (layer outputs become fetchable by name)."""

    graph = model.graph
    present = {o.name for o in graph.output}
    missing = [n for n in names if n not in present]
    if not missing:
        return
    inits = {t.name: t for t in graph.initializer}
    shapes = infer_shapes(list(graph.node), inits, list(graph.input), list(model.opset_import))
    for name in missing:
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes.get(name)))
        present.add(name)


def fold_constants(model: onnx.ModelProto) -> None:
    """Evaluate nodes whose inputs are all initializers (e.g. kernel transposes) into new initializers."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        foldable = node.op_type not in ("RandomNormal", "RandomUniform") and node.input and all(
            (not i) or i in values for i in node.input)
        if not foldable:
            kept.append(node)
            continue
        inputs = [i for i in node.input if i]
        sub = helper.make_graph([node], "fold", [
            helper.make_tensor_value_info(i, values[i].data_type, list(values[i].dims)) for i in inputs
        ], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output])
        sub_model = helper.make_model(sub, opset_imports=model.opset_import)
        results = ReferenceEvaluator(sub_model).run(None, {i: numpy_helper.to_array(values[i]) for i in inputs})
        for name, arr in zip(node.output, results):
            values[name] = numpy_helper.from_array(np.asarray(arr), name)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    graph.ClearField("initializer")
    graph.initializer.extend(t for name, t in values.items() if name in used)


def finish(model: onnx.ModelProto, *, source: str, source_name: str, spec: InputSpec, layers: list[LayerInfo],
           probabilities_output: str | None, logits_output: str | None, labels="imagenet") -> onnx.ModelProto:
    """Record logits, expose layers, write metadata and check the graph."""
    logits = logits_output
    probs = probabilities_output
    if probs is not None and logits is None:
        logits = find_softmax_logits(model, probs)
    expose_outputs(model, [l.tensor for l in layers] + ([logits] if logits else []))
    canonical = canonical_names(source, source_name)
    for layer in layers:
        layer.canonical = canonical.get(layer.name, layer.canonical)
    # a 4-D layer's layout is what the graph makes it (a torch Permute or a tf2onnx Transpose changes it),
    # not the input's: propagate it through the ops, as for foreign files
    layouts = graph_layouts(model, spec.name, spec.layout)
    for layer in layers:
        if layer.layout in ("NCHW", "NHWC") and layouts.get(layer.tensor) is not None:
            layer.layout = layouts[layer.tensor]
    meta = ModelMeta(source=source, source_name=source_name, input=spec, layers=layers,
                     logits=logits, probabilities=probs, labels=labels)
    write_meta(model, meta)
    model.producer_name = "convlens"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConvlensError(
            f"The converted graph for {source_name} is not valid ONNX: {str(exc).splitlines()[0]}"
        ) from None
    return model


def input_size_arg(size) -> tuple[int, int] | None:
    """Accept 224, '224', '224x160', '224,160' or (224, 160): (height, width)."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    text = str(size).lower().replace(",", "x")
    try:
        if "x" in text:
            h, w = text.split("x")
            hw = int(h), int(w)
        else:
            hw = int(text), int(text)
    except ValueError:
        raise ConvlensError(f"--input-size must look like 224, 224x160 or 224,160, not {size!r}.") from None
    if min(hw) < 1:
        raise ConvlensError(f"--input-size must be positive, not {size!r}.")
    return hw
