"""`convlens convert SOURCE`: keras:NAME, torch:NAME, FILE.keras, FILE.pt2 -> .onnx with metadata."""
from __future__ import annotations

import os
from pathlib import Path

from convlens.engine.errors import ConvlensError
from convlens.engine.metadata import InputRecipe
from convlens.engine.model.annotate import restate
from convlens.engine.model.onnx_file import check_writable, save_onnx

from .common import input_size_arg


def parse_source(source: str) -> tuple[str, str]:
    """('keras'|'torch'|'keras-file'|'torch-file', name or path)."""
    if source.startswith("keras:"):
        return "keras", source[6:]
    if source.startswith("torch:"):
        return "torch", source[6:]
    if source.startswith("timm:"):
        return "timm", source[5:]
    path = Path(source)
    if path.suffix == ".keras":
        return "keras-file", source
    if path.suffix == ".pt2":
        return "torch-file", source
    raise ConvlensError(
        f"Unknown source {source!r}; use keras:NAME, torch:NAME, timm:NAME, a .keras file or a .pt2 file."
    )


def convert(source: str, out: str | os.PathLike, *, weights: str | None = None, include_top: bool = True,
            input_size=None, preprocess: str | None = None, recipe=None, labels: str | None = None,
            force: bool = False) -> Path:
    """Convert a framework model to an .onnx file with its layers exposed; returns the written path.

    Every option either takes effect for the source kind or is refused with one sentence naming it. `recipe`
    (an InputRecipe) refines the recorded preprocessing; `labels` names the classes (imagenet or a file)."""

    out = check_writable(out, force)
    recipe = recipe or InputRecipe(preprocess)
    preprocess = recipe.preprocess
    kind, name = parse_source(source)
    size = input_size_arg(input_size)
    if kind in ("keras-file", "torch-file"):
        if not Path(name).exists():
            raise ConvlensError(f"Model file not found: {name}")
        if weights is not None:  # "none" too: a saved file's weights are what they are
            raise ConvlensError(f"--weights does not apply to {name}: a saved model file carries its own weights.")
        if not include_top:
            raise ConvlensError(f"--no-top does not apply to {name}: a saved model file is converted as it was saved.")
    if kind == "keras":
        from .keras_converter import convert_applications

        model = convert_applications(name, weights or "none", include_top, size, preprocess)
    elif kind == "keras-file":
        from .keras_converter import convert_keras_file

        if size is not None:
            raise ConvlensError(f"--input-size does not apply to {name}: a saved Keras model keeps the input "
                                "shape it was built with.")
        model = convert_keras_file(name, preprocess)
    elif kind == "timm":
        from .timm_converter import convert_timm

        if not include_top:
            raise ConvlensError("--no-top applies to keras:NAME sources; timm models are converted whole.")
        model = convert_timm(name, weights or "none", size, preprocess)
    elif kind == "torch":
        from .torch_converter import convert_torchvision

        if not include_top:
            raise ConvlensError("--no-top applies to keras:NAME sources; torchvision models are converted whole.")
        model = convert_torchvision(name, weights or "none", size, preprocess)
    else:
        from .torch_converter import convert_exported_program

        model = convert_exported_program(name, preprocess, size)
    zoo = kind in ("keras", "torch", "timm")
    restate(model, recipe, labels, out.name, weights=(weights or "none") if zoo else None)
    return save_onnx(model, out, force)
