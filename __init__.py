"""convlens: see what an image model has learned, from its .onnx file.

    import convlens
    model = convlens.load("vgg16.onnx")
    maps, top5 = convlens.cam(model, "cat.jpg", target="African elephant", method="gradcam++")
    acts = convlens.activations(model, "cat.jpg", ["block1_conv1"])

The repository keeps `engine/`, `converters/` and `cli.py` at its root; setuptools installs them as
`convlens.engine`, `convlens.converters` and `convlens.cli` (see pyproject.toml's package-dir).
"""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .api import (
    activations,
    annotate,
    atlas,
    attention,
    cam,
    compare,
    convert,
    decoded,
    detections,
    evaluate,
    example_files,
    export,
    filters,
    layers,
    load,
    report,
    saliency,
    sanity,
    verify,
)
from .engine.errors import ConvlensError
from .engine.model.model import Model

try:
    __version__ = _dist_version("convlens")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvlensError",
    "Model",
    "__version__",
    "activations",
    "annotate",
    "atlas",
    "attention",
    "cam",
    "compare",
    "convert",
    "decoded",
    "detections",
    "evaluate",
    "example_files",
    "export",
    "filters",
    "layers",
    "load",
    "report",
    "saliency",
    "sanity",
    "verify",
]
