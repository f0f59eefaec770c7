"""convlens metadata stored in an ONNX file's metadata_props under the key "convlens".

It says which tensor is which named layer (and in which layout), what input the weights expect,
where the logits are, and which labels the classes carry. Converters write it; the engine reads it
or infers it for a foreign file (see engine/infer.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

METADATA_KEY = "convlens"

# Preprocessing presets: model_input = (pixels[color order] * scale - mean) / std, pixels RGB 0..255.
PRESETS: dict[str, dict] = {
    "caffe": {"color": "BGR", "scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
    "torch": {"color": "RGB", "scale": 1 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "tf": {"color": "RGB", "scale": 1 / 127.5, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]},
    "raw": {"color": "RGB", "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
}


@dataclass
class InputSpec:
    """What the model's input tensor expects, relative to RGB pixels in 0..255."""

    name: str
    size: tuple[int, int] | None  # (height, width); None when the model takes any size
    layout: str = "NCHW"  # NCHW or NHWC
    color: str = "RGB"  # RGB or BGR
    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    preset: str | None = None
    channels: int = 3  # 1 for grayscale models: the adapter turns RGB pixels into one gray channel

    @classmethod
    def from_preset(cls, name: str, preset: str, size=None, layout="NCHW", channels: int = 3) -> "InputSpec":
        return cls(name=name, size=tuple(size) if size else None, layout=layout, preset=preset, channels=channels,
                   **PRESETS[preset])

    def with_preset(self, preset: str) -> "InputSpec":
        return InputSpec.from_preset(self.name, preset, self.size, self.layout, self.channels)

    @property
    def color_name(self) -> str:
        return "gray" if self.channels == 1 else self.color


@dataclass
class LayerInfo:
    """A named layer: the tensor that holds its output, the op that makes it, and its layout."""

    name: str
    tensor: str
    kind: str  # conv, activation, pool, dense, norm, other
    layout: str  # NCHW, NHWC or flat (N, features)
    # a framework-neutral name for layers of architectures the converters know in both frameworks (VGG16:
    # the Keras names), so that compare can pair a Keras file's layers with a torch file's
    canonical: str | None = None


@dataclass
class ModelMeta:
    source: str  # keras, torch or onnx (foreign file)
    source_name: str
    input: InputSpec
    layers: list[LayerInfo]
    logits: str | None = None  # tensor of pre-softmax class scores, if any
    probabilities: str | None = None  # tensor of softmax output, if any
    labels: str | list[str] | None = None  # "imagenet" (shipped) or an explicit list
    inferred: bool = False  # True when read from the graph rather than written by a converter

    def to_json(self) -> str:
        return json.dumps({"version": 1, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        d = json.loads(text)
        d.pop("version", None)
        inp = d.pop("input")
        inp["size"] = tuple(inp["size"]) if inp.get("size") else None
        layers = [LayerInfo(**x) for x in d.pop("layers")]
        return cls(input=InputSpec(**inp), layers=layers, **d)
