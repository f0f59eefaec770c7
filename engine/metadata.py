"""convlens metadata stored in an ONNX file's metadata_props under the key "convlens".

It says which tensor is which named layer (and in which layout), what input the weights expect,
where the logits are, and which labels the classes carry. Converters write it; the engine reads it
or infers it for a foreign file (see engine/model/infer.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from .errors import ConvlensError

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
    stated: bool = True  # False when nothing (metadata, a flag) said what the input is and raw RGB is assumed
    # how a photo becomes the input's size: stretch (both sides), center-crop (short side to size / crop_fraction,
    # then the center), letterbox (fit the long side, pad with pad_value pixels): see images.fit_image
    resize: str = "stretch"
    crop_fraction: float = 0.875
    pad_value: float = 0.0

    @classmethod
    def from_preset(cls, name: str, preset: str, size=None, layout="NCHW", channels: int = 3) -> "InputSpec":
        return cls(name=name, size=tuple(size) if size else None, layout=layout, preset=preset, channels=channels,
                   **PRESETS[preset])

    def with_preset(self, preset: str) -> "InputSpec":
        return InputSpec.from_preset(self.name, preset, self.size, self.layout, self.channels)

    def refined(self, recipe: "InputRecipe") -> "InputSpec":
        """This spec with what `recipe` states: its preset first, then each number it gives on top."""
        spec = self.with_preset(recipe.preprocess) if recipe.preprocess else replace(self)
        if recipe.channel_order:
            spec.color = recipe.channel_order.upper()
        if recipe.scale is not None:
            spec.scale = recipe.scale
        if recipe.mean is not None:
            spec.mean = list(recipe.mean)
        if recipe.std is not None:
            spec.std = list(recipe.std)
        for name in ("resize", "crop_fraction", "pad_value"):
            if getattr(recipe, name) is not None:
                setattr(spec, name, getattr(recipe, name))
        if recipe.numbers_given():  # a preset refined by a number is no longer that preset
            spec.preset = None
        spec.stated = spec.stated or recipe.given()
        return spec

    def describe(self) -> str:
        """The recipe in words: 'BGR, x * 0.00392 - (0.485, ...) / (...)'."""
        def triple(values):
            return "(" + ", ".join(f"{v:g}" for v in values) + ")"
        name = f" ({self.preset})" if self.preset else ""
        return (f"{self.color_name} pixels 0..255 * {self.scale:.6g}, minus {triple(self.mean)}, divided by "
                f"{triple(self.std)}{name}")

    @property
    def color_name(self) -> str:
        return "gray" if self.channels == 1 else self.color


@dataclass
class InputRecipe:
    """What a user states about a file's input: a preset and numbers that refine it (None: not stated).
    The model's input is (pixels[channel order] * scale - mean) / std, pixels 0..255."""

    preprocess: str | None = None
    channel_order: str | None = None  # rgb or bgr
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: str | None = None  # stretch, center-crop or letterbox
    crop_fraction: float | None = None
    pad_value: float | None = None

    def __post_init__(self):
        if self.preprocess is not None and self.preprocess not in PRESETS:
            raise ConvlensError(f"Unknown preprocessing {self.preprocess!r}; use one of {', '.join(PRESETS)}.")
        if self.channel_order is not None:
            if str(self.channel_order).lower() not in ("rgb", "bgr"):
                raise ConvlensError(f"--channel-order must be rgb or bgr, not {self.channel_order!r}.")
            self.channel_order = str(self.channel_order).lower()
        self.scale = parse_scale(self.scale) if self.scale is not None else None
        self.mean = parse_channels(self.mean, "--mean") if self.mean is not None else None
        self.std = parse_channels(self.std, "--std") if self.std is not None else None
        if self.std is not None and any(v == 0 for v in self.std):
            raise ConvlensError(f"--std must not hold a zero (it divides): {self.std}.")
        if self.resize is not None and self.resize not in RESIZE_POLICIES:
            raise ConvlensError(f"--resize must be one of {', '.join(RESIZE_POLICIES)}, not {self.resize!r}.")
        if self.crop_fraction is not None:
            self.crop_fraction = parse_scale(self.crop_fraction, "--crop-fraction")
            if not 0 < self.crop_fraction <= 1:
                raise ConvlensError(f"--crop-fraction must be in (0, 1] (torchvision's is 0.875), not "
                                    f"{self.crop_fraction:g}.")
        if self.pad_value is not None:
            try:
                self.pad_value = float(self.pad_value)
            except (TypeError, ValueError):
                raise ConvlensError(f"--pad-value must be a number of pixel units (0..255), not "
                                    f"{self.pad_value!r}.") from None

    def numbers_given(self) -> bool:
        """Whether the recipe changes the preset's numbers (the resize policy is not part of a preset)."""
        return any(v is not None for v in (self.channel_order, self.scale, self.mean, self.std))

    def given(self) -> bool:
        return self.preprocess is not None or self.numbers_given()


RESIZE_POLICIES = ("stretch", "center-crop", "letterbox")


def parse_scale(value, flag: str = "--scale") -> float:
    """--scale: a number (0.0039215) or a fraction (1/255, 2/255)."""
    if isinstance(value, (int, float)):
        result = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                top, bottom = text.split("/")
                result = float(top) / float(bottom)
            else:
                result = float(text)
        except (ValueError, ZeroDivisionError):
            raise ConvlensError(f"{flag} must be a number or a fraction such as 1/255, not {value!r}.") from None
    if not result or result != result:
        raise ConvlensError(f"{flag} must be a nonzero number, not {value!r}.")
    return result


def parse_channels(value, flag: str) -> list[float]:
    """--mean / --std: three numbers A,B,C (in the model's channel order), or one for every channel."""
    parts = list(value) if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        numbers = [float(p) for p in parts]
    except (ValueError, TypeError):
        raise ConvlensError(f"{flag} must be three numbers A,B,C (or one), not {value!r}.") from None
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3:
        raise ConvlensError(f"{flag} must be three numbers A,B,C (or one), not {len(numbers)}: {value!r}.")
    return numbers


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
    # how the scores become probabilities: softmax over classes, or sigmoid per class (multi-label, binary)
    activation: str = "softmax"
    # the weights a converter was given: "none" (random, seeded: converters/frameworks.RANDOM_WEIGHTS_SEED),
    # "imagenet" or a file's path; None when not known (a foreign file, a saved model file)
    weights: str | None = None
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
