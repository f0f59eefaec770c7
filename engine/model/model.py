"""A loaded model: the ONNX graph, its weights as numpy arrays, and its convlens metadata."""
from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ConvlensError, ConvlensWarning
from ..metadata import METADATA_KEY, InputRecipe, InputSpec, LayerInfo, ModelMeta
from ..runtime.session import Runtime
from ..runtime.shapes import ShapeService
from .infer import graph_input, infer_meta, input_dims
from .labels import check_label_count, labels_in_file, read_labels, resolve_labels
from .layouts import tensor_ranks, tensor_shapes
from .onnx_file import load_onnx
from .opset import upgrade_opset
from .precision import widen_float16
from .detections import find_detection_head, level_features
from .output_targets import TARGET_SCORES, OutputTarget, build_head, detection_head
from .scores import Scores, choose_scores, output_layout

# Initializers larger than this live as numpy arrays outside the proto (see runtime/session.py).
_BIG = 1024


class Model:
    """An .onnx file ready for the techniques: graph, weights, metadata, compiled-program cache."""

    def __init__(self, proto: onnx.ModelProto, meta: ModelMeta, path: str | None = None,
                 runtime: Runtime | None = None):
        self.path = path
        self.meta = meta
        self.runtime = runtime or Runtime()  # this model's device and threads, for every program it compiles
        # messages kept from the proto are copies: a part of a parsed proto keeps the whole parse alive
        # (the weights' bytes too), which would hold a second copy of every weight in memory
        self.opset_imports = [_detached(o) for o in proto.opset_import]
        self.nodes = [_detached(n) for n in proto.graph.node]
        self.small_inits: dict[str, onnx.TensorProto] = {}
        self.weights: dict[str, np.ndarray] = {}
        for t in proto.graph.initializer:
            size = int(np.prod(t.dims)) if len(t.dims) else 1
            if size > _BIG and t.data_type in (
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.FLOAT16,
                onnx.TensorProto.DOUBLE,
            ):
                self.weights[t.name] = numpy_helper.to_array(t)
            else:
                self.small_inits[t.name] = _detached(t)
        self._fold_constant_nodes()
        self.graph_outputs = [o.name for o in proto.graph.output]
        # exports with a batch of 1 baked into the graph (torch.onnx.export's default) may hold reshapes
        # that only work for one image: such models run one image per call

        dims = input_dims(graph_input(proto)) if len(proto.graph.input) else []
        self.single_image = bool(dims) and dims[0] == 1
        # a foreign graph's fixed (H, W): its reshapes may hold that size (convlens's own files declare the
        # export's example size there, which binds nothing: every program feeds pixels through the adapter)
        hw = (dims[1:3] if meta.input.layout == "NHWC" else dims[2:4]) if len(dims) == 4 else []
        fixed = len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) and meta.source == "onnx"
        self.fixed_size = tuple(hw) if fixed else None
        # a size to read shapes at when nothing else gives one: the graph's fixed H or W, 224 where it is free
        self.probe_size = tuple(d if isinstance(d, int) and d > 0 else 224 for d in hw) if len(hw) == 2 else None
        self.classes: int | None = None  # the class count, where the graph fixes it (set by load)
        self.explained_output: str | None = None  # the output a target head reads (set by load)
        self.output_layouts: dict = {}  # that output's layout, where it is 4-D (set by load)
        self.output_shapes: dict = {}  # and its shape as the file declares it (set by load)
        self.target = None  # the target head (output_targets.TargetHead) a view explains, else None
        self.base: Model | None = None  # the model a view was made from
        self.detector = None  # the YOLO- or DETR-style head (detections.DetectionHead) of a detector (set by load)
        self.detector_levels: list = []  # its levels: (first candidate, end, the feature map they read)
        self.scores_refusal: str | None = None  # why the outputs are not class scores (set by load)
        self.programs: dict = {}  # compiled programs, by request (runtime/program.py)
        self.shapes = ShapeService(self)  # tensor shapes, by image size and input adapter (runtime/shapes.py)

    def _fold_constant_nodes(self) -> None:
        """Constant nodes and Identity-of-initializer nodes (exporters dedupe equal buffers that way)
        become initializers, so gradient rules see batch-norm statistics and the like as constants."""
        kept = []
        for node in self.nodes:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                t = onnx.TensorProto()
                t.CopyFrom(node.attribute[0].t)
                t.name = node.output[0]
                self.small_inits[t.name] = t
            elif node.op_type == "Identity" and node.input[0] in self.weights:
                self.weights[node.output[0]] = self.weights[node.input[0]]
            elif node.op_type == "Identity" and node.input[0] in self.small_inits:
                t = onnx.TensorProto()
                t.CopyFrom(self.small_inits[node.input[0]])
                t.name = node.output[0]
                self.small_inits[t.name] = t
            else:
                kept.append(node)
        self.nodes = kept

    def with_input_spec(self, spec: InputSpec) -> "Model":
        """The same graph and weights (shared, not copied) read through another input adapter; the
        original is left as it was. compare() feeds one model's preprocessing to both this way."""
        import copy

        view = copy.copy(self)
        view.meta = dataclasses.replace(self.meta, input=spec)
        view.programs, view.shapes = {}, ShapeService(view)
        return view

    def placed(self) -> "Model":
        """This model for pixels already placed at its input size by its resize policy (what `prepare` returns):
        a view that stretches, which at the input's own size changes nothing. A center crop is not idempotent, so
        prepared pixels handed back to a technique through the model itself would be cropped a second time.
        Keep the view: its programs compile once."""
        if self.input_spec.resize == "stretch":
            return self
        return self.with_input_spec(dataclasses.replace(self.input_spec, resize="stretch"))

    def with_input_size(self, size: tuple[int, int]) -> "Model":
        """This model at a stated input size, for a file whose graph leaves H and W dynamic (export and
        evaluate need one); a size the file already fixes cannot be changed."""
        size = (int(size[0]), int(size[1]))
        fixed = self.input_spec.size
        if fixed is not None and tuple(fixed) != size:
            raise ConvlensError(f"--input-size {size[0]}x{size[1]} differs from the {fixed[0]}x{fixed[1]} that "
                                f"{Path(self.path).name if self.path else 'the model'} fixes; leave --input-size out.")
        return self.with_input_spec(dataclasses.replace(self.input_spec, size=size))

    def with_tensors_renamed(self, names: set[str], prefix: str = "model_") -> "Model":
        """The same model with each of its tensors called one of `names` renamed `prefix + name` (the graph
        input included): a graph built around the model (the exported explainer) keeps those names for itself."""
        import copy

        clash = set(names) & ({o for n in self.nodes for o in n.output} | {self.input_spec.name}
                              | set(self.small_inits) | set(self.weights))
        if not clash:
            return self
        new = {c: prefix + c for c in clash}

        def r(name):
            return new.get(name, name) if name else name

        view = copy.copy(self)
        view.nodes = []
        for node in self.nodes:
            moved = onnx.NodeProto()
            moved.CopyFrom(node)
            moved.input[:] = [r(i) for i in node.input]
            moved.output[:] = [r(o) for o in node.output]
            view.nodes.append(moved)
        view.small_inits = {r(k): v for k, v in self.small_inits.items()}
        for k, t in view.small_inits.items():
            if t.name != k:
                view.small_inits[k] = onnx.TensorProto()
                view.small_inits[k].CopyFrom(t)
                view.small_inits[k].name = k
        view.weights = {r(k): v for k, v in self.weights.items()}
        view.graph_outputs = [r(o) for o in self.graph_outputs]
        view.meta = dataclasses.replace(
            self.meta, input=dataclasses.replace(self.meta.input, name=r(self.meta.input.name)),
            layers=[dataclasses.replace(l, tensor=r(l.tensor)) for l in self.meta.layers],
            logits=r(self.meta.logits), probabilities=r(self.meta.probabilities))
        if self.detector is not None:
            view.detector = dataclasses.replace(self.detector, raw=r(self.detector.raw), logits=r(self.detector.logits),
                                                level_logits=tuple(r(t) for t in self.detector.level_logits))
        view.detector_levels = [(a, b, r(t)) for a, b, t in self.detector_levels]
        view.explained_output = r(self.explained_output)
        view.output_layouts = {r(k): v for k, v in self.output_layouts.items()}
        view.output_shapes = {r(k): v for k, v in self.output_shapes.items()}
        view.programs, view.shapes = {}, ShapeService(view)
        return view

    @property
    def opset(self) -> int:
        return next((o.version for o in self.opset_imports if o.domain in ("", "ai.onnx")), 17)

    def explaining(self, target: OutputTarget, size: tuple[int, int] | None = None) -> "Model":
        """This model with a target head (output_targets.py) whose row of scores the techniques explain; `size`
        is an input size at which to read the output's shape (the model's own, else 224x224)."""
        if self.target is not None:  # a view already: the new head replaces its head
            return self.base.explaining(target, size)
        if target.detections is not None:
            if not target.detections:
                raise ConvlensError("No detection to explain: nothing scored above --conf; lower it, or give "
                                    "another image.")
            names = resolve_labels(self.meta.labels, None)
            return self._with_head(detection_head(self.detector, target.detections, names, self.opset,
                                                  target.box_iou), self.detector.raw)
        output = target.output or self.explained_output
        if output is None:
            outs = ", ".join(self.graph_outputs)
            raise ConvlensError(f"The model has several outputs ({outs}); name the one to explain with --scores NAME.")
        size = tuple(self.input_spec.size or size or self.probe_size or (224, 224))
        # rank and class axis suffice (the file's own shapes give them), unless an index is asked
        shape = self.output_shapes.get(output) or self.shapes.static(size).get(output)
        if shape is None or not isinstance(shape[-1], int) or target.index is not None:
            shape = self.shapes.of(output, size)
        if shape is None:
            raise ConvlensError(f"--scores {output!r} is not a tensor of this model; its outputs are: "
                                f"{', '.join(self.graph_outputs)}.")
        layout = next((l.layout for l in self.layers if l.tensor == output), None) or self.output_layouts.get(output)
        return self._with_head(build_head(self.nodes, output, shape, layout or "NCHW", target, self.opset), output)

    def _with_head(self, head, output: str) -> "Model":
        import copy

        view = copy.copy(self)
        view.nodes = self.nodes + head.nodes
        view.small_inits = {**self.small_inits, **head.inits}
        view.weights = {**self.weights, **head.weights}
        names = resolve_labels(self.meta.labels, None)
        names = head.names or (names if names and len(names) == head.classes else None)
        view.meta = dataclasses.replace(self.meta, logits=TARGET_SCORES, probabilities=None,
                                        activation=head.activation, labels=names)
        view.classes, view.scores_refusal, view.target, view.base = head.classes, None, head, self
        view.explained_output = output
        view.programs, view.shapes = {}, ShapeService(view)
        return view

    @classmethod
    def load(cls, path: str | os.PathLike, preprocess: str | None = None, layout: str | None = None,
             scores: str | None = None, labels: str | None = None, recipe: InputRecipe | None = None,
             runtime: Runtime | None = None, target: OutputTarget | None = None) -> "Model":
        """Load an .onnx file; its convlens metadata is used when present, else inferred from the graph.
        `recipe` states the input (a preset refined by numbers); `scores` names the class-score tensor where
        the graph does not say it unambiguously (scores.py)."""
        recipe = recipe or InputRecipe()
        if preprocess:
            recipe = dataclasses.replace(recipe, preprocess=preprocess)
        proto = upgrade_opset(load_onnx(path), path)
        widen_float16(proto)
        meta = read_meta(proto)
        # one shape inference serves the inferred layers, the choice of scores and the class count
        shapes = tensor_shapes(proto)
        if meta is None:
            meta = infer_meta(proto, None, layout, tensor_ranks(proto, shapes))
            meta.labels = labels_in_file(proto)
        elif layout:
            meta.input.layout = layout.upper()
        meta.input = meta.input.refined(recipe)
        detector = find_detection_head(proto.graph.node, shapes, [o.name for o in proto.graph.output])
        if detector is not None and detector.queries and meta.inferred and not scores:
            choice = Scores(None, None, refusal="")  # its two outputs are a detector's, not two candidate scores
        else:
            choice = choose_scores(proto, meta.input.name, meta.input.layout, scores, meta.logits,
                                   meta.probabilities, meta.inferred, shapes, meta.activation)
        if meta.inferred or scores:
            meta.logits, meta.probabilities, meta.activation = choice.logits, choice.probabilities, choice.activation
            proto.graph.node.extend(choice.nodes)
            proto.graph.initializer.extend(choice.inits.values())
        if labels:
            meta.labels = read_labels(labels)
        meta.labels = check_label_count(meta.labels, choice.classes, "--labels" if labels else None, path)
        if not meta.input.stated:
            _say_assumed_input(path, meta.input)
        model = cls(proto, meta, str(path), runtime)
        model.classes = choice.classes
        model.scores_refusal = None if (meta.logits or meta.probabilities) else choice.refusal
        single = model.graph_outputs[0] if len(model.graph_outputs) == 1 else None
        model.explained_output = scores or choice.explain or meta.logits or meta.probabilities or single
        if model.explained_output is not None:
            model.output_layouts = {model.explained_output: output_layout(proto, model.explained_output,
                                                                          meta.input.name, meta.input.layout, shapes)}
            model.output_shapes = {model.explained_output: shapes.get(model.explained_output)}
        model.detector = detector
        model.detector_levels = level_features(proto.graph.node, model.detector, shapes) if model.detector else []
        if model.detector is not None and not (meta.logits or meta.probabilities):
            model.scores_refusal = ("The model is a detector: explain its detections with --box K|all|x1,y1,x2,y2 "
                                    "(cam and saliency list them).")
        elif target is not None and target.stated or (choice.explain is not None and model.scores_refusal):
            # an output that is not class scores gets its default target (a region, the greedy sequence)
            model = model.explaining(target or OutputTarget())
        return model

    # --- layers -------------------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerInfo]:
        return self.meta.layers

    def layer(self, name: str) -> LayerInfo:
        """The layer called `name` (or whose tensor is `name`); unknown names get the closest ones."""
        for layer in self.meta.layers:
            if layer.name == name:
                return layer
        for layer in self.meta.layers:
            if layer.tensor == name:
                return layer
        close = difflib.get_close_matches(name, [l.name for l in self.meta.layers], n=3, cutoff=0.4)
        hint = (
            f"; closest: {', '.join(close)}"
            if close
            else f"; run `convlens layers {self.path or 'MODEL'}` to list them"
        )
        raise ConvlensError(f"Unknown layer {name!r}{hint}.")

    # --- input and classes -----------------------------------------------------------------------
    def scores_tensor(self) -> str:
        """The class-score tensor (logits, else probabilities); a model without one is refused in a sentence."""
        tensor = self.meta.logits or self.meta.probabilities
        if tensor is None:
            raise ConvlensError(self.scores_refusal or "The model records no class scores (no logits or "
                                "probabilities tensor); name the output that holds them with --scores NAME.")
        return tensor

    @property
    def input_spec(self) -> InputSpec:
        return self.meta.input

    @property
    def labels(self) -> list[str] | None:
        return resolve_labels(self.meta.labels, None)

    def label(self, index: int) -> str:
        labels = self.labels
        return labels[index] if labels and 0 <= index < len(labels) else f"class {index}"

    def class_index(self, target: str | int) -> int:
        """A class given as an index or a label name."""
        if isinstance(target, int) or str(target).lstrip("-").isdigit():
            return int(target)
        labels = self.labels or []
        if not labels:
            raise ConvlensError(
                f"Unknown class {target!r}: {self.path or 'the model'} carries no class labels; give the class as an "
                "index, or pass --labels imagenet (the 1000 ImageNet names, shipped with convlens) or --labels FILE "
                "(one name per line).")
        lowered = [l.lower() for l in labels]
        if str(target).lower() in lowered:
            return lowered.index(str(target).lower())
        close = difflib.get_close_matches(str(target), labels, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ConvlensError(f"Unknown class {target!r}{hint}.")



def _detached(message):
    """A copy of a protobuf message that does not share memory with the message it came from."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def read_meta(proto: onnx.ModelProto) -> ModelMeta | None:
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return ModelMeta.from_json(prop.value)
            except (ValueError, TypeError, KeyError) as exc:
                raise ConvlensError(f"The model's convlens metadata is unreadable ({exc}).") from None
    return None


def write_meta(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()


def load(path: str | os.PathLike, *, preprocess: str | None = None, channel_order: str | None = None, scale=None,
         mean=None, std=None, resize: str | None = None, crop_fraction=None, pad_value=None, layout: str | None = None,
         scores: str | None = None, labels: str | None = None, device: str = "cpu", threads: int = 0,
         recipe: InputRecipe | None = None, region: str | None = None, sequence: bool = False,
         position: int | None = None, index: int | None = None, like_vector: str | None = None) -> Model:
    """Open an .onnx file with the input stated by a recipe (a preset refined by numbers, or `recipe` whole),
    its programs run on `device` with `threads` (convlens.load documents each option). The output-target
    options that are plain values (`region` predicted or all, `sequence`, `position`, `index`, `like_vector` a
    .npy path) travel this way to places that load a file by name (evaluate's workers); see output_targets.py."""
    runtime = Runtime(device or "cpu", threads or 0)  # checked before the file is read
    if recipe is None:
        recipe = InputRecipe(preprocess, channel_order, scale, mean, std, resize, crop_fraction, pad_value)
    target = None
    if region is not None or sequence or position is not None or index is not None or like_vector is not None:
        if region is not None and region not in ("predicted", "all"):
            raise ConvlensError(f"--region {region} is drawn on a photo; here only predicted or all apply.")
        if like_vector is not None and not Path(like_vector).is_file():
            raise ConvlensError(f"Vector file not found: {like_vector}.")
        like = np.load(like_vector).reshape(-1) if like_vector is not None else None
        target = OutputTarget(region=region, sequence=bool(sequence), position=position, index=index, like=like)
    return Model.load(path, layout=layout, scores=scores, labels=labels, recipe=recipe, runtime=runtime,
                      target=target)


def _say_assumed_input(path, spec: InputSpec) -> None:
    """Nothing states a foreign file's input: say what is assumed, and how to state it."""
    import warnings


    warnings.warn(f"{Path(path).name} has no convlens metadata: assuming {spec.layout} input of raw "
                  f"RGB pixels (0..255, no mean or std); state it with --preprocess caffe|torch|tf|raw and/or "
                  f"--channel-order, --scale, --mean, --std (or once with `convlens annotate`).",
                  ConvlensWarning, stacklevel=3)
