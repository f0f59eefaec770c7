"""Describing a file once: convlens's metadata (input recipe, layout, scores, labels, input size) written into
a copy of an .onnx file, so every later command reads it instead of assuming. The copy's graph and weights
are the original's; external data files stay beside it; the original is never touched."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from ..errors import ConvlensError
from ..metadata import InputRecipe
from .labels import check_label_count, read_labels
from .layouts import tensor_shapes
from .model import Model, read_meta, write_meta
from .onnx_file import check_writable, load_onnx, save_large_onnx
from .scores import class_count


def restate(proto: onnx.ModelProto, recipe: InputRecipe, labels: str | None, name: str,
            weights: str | None = None) -> None:
    """A converter's metadata refined by what the user stated (convert's recipe flags and --labels) and the
    weights it was given; ImageNet names are kept only on a head of 1000 classes."""
    meta = read_meta(proto)
    meta.weights = weights
    meta.input = meta.input.refined(recipe)
    classes = class_count(tensor_shapes(proto).get(meta.logits or meta.probabilities or ""))
    if labels:
        meta.labels = read_labels(labels)
    meta.labels = check_label_count(meta.labels, classes, "--labels" if labels else None, name)
    write_meta(proto, meta)


def annotate(path: str | os.PathLike, out: str | os.PathLike, *, recipe: InputRecipe | None = None,
             layout: str | None = None, scores: str | None = None, labels: str | None = None,
             input_size: tuple[int, int] | None = None, force: bool = False) -> Model:
    """Write `path` with convlens metadata to `out`; returns the model as every command will now read it."""
    path, out = Path(path), check_writable(out, force)
    if out.resolve() == path.resolve():
        raise ConvlensError(f"annotate writes a copy: give -o a path other than {path} (the original is kept).")
    model = Model.load(path, layout=layout, scores=scores, labels=labels, recipe=recipe)
    if input_size is not None:
        model = model.with_input_size(input_size)
    meta = model.meta
    if scores is None and not (meta.logits or meta.probabilities) and model.scores_refusal:
        raise ConvlensError(model.scores_refusal)
    meta.inferred = False  # described now: later loads read this, not the graph's guesses
    copy = _graph_as_stored(path)
    produced = {o for n in copy.graph.node for o in n.output}
    added = [n for n in model.nodes if any(o not in produced for o in n.output)]  # the dense scores' mean
    copy.graph.node.extend(added)
    copy.graph.initializer.extend(t for name, t in model.small_inits.items()
                                  if any(name in n.input for n in added) and name.startswith("convlens_"))
    write_meta(copy, meta)
    _place_external_data(copy, path.parent, out.parent, force)
    save_large_onnx(copy, out, force)
    return Model.load(out)


def _graph_as_stored(path: Path) -> onnx.ModelProto:
    """The file's proto with external data left where it is (load_onnx checks the file and its data first)."""
    load_onnx(path)
    return onnx.load(str(path), load_external_data=False)


def _place_external_data(proto: onnx.ModelProto, source: Path, target: Path, force: bool) -> None:
    """The external data files a copy points to, beside it: copied when it is written to another folder."""
    locations = {e.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    for location in sorted(locations):
        src, dst = source / location, target / location
        if dst.exists():
            if dst.samefile(src):
                continue
            if not force:
                raise ConvlensError(f"{dst} exists and is not {src}, the external data the copy needs; pass --force "
                                    "to replace it, or write the copy to another folder.")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
