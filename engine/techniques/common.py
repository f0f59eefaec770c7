"""Helpers shared by techniques: preparing pixel batches and reading layer layouts."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..render.images import fit_image, load_image, to_rgb


def model_size(model: Model, image: np.ndarray | None = None) -> tuple[int, int]:
    """The input size: the model's fixed size, else the image's own, else 224x224."""
    if model.input_spec.size:
        return tuple(model.input_spec.size)
    if image is not None:
        return image.shape[:2]
    return (224, 224)


def prepare(model: Model, images, size: tuple[int, int] | None = None) -> np.ndarray:
    """A batch (N, H, W, 3) of RGB pixels at the model's size from paths, arrays or a mix, each fitted to it
    by the input's resize policy (stretch, center-crop, letterbox)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = [images[i] for i in range(images.shape[0])]
    elif isinstance(images, (list, tuple)):
        batch = list(images)
    else:
        batch = [images]
    out = [fit_to_model(model, photo(item), size)[0] for item in batch]
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise ConvlensError(f"Images in one batch must share a size; got {sorted(shapes)}.")
    return np.stack(out).astype(np.float32)


def photo(item) -> np.ndarray:
    """An image given as a path (read as RGB) or as pixels (made 3-channel RGB)."""
    return load_image(item) if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__") else to_rgb(item)


def fit_to_model(model: Model, picture: np.ndarray, size: tuple[int, int] | None = None):
    """(the picture at the model's input size by its resize policy, where it lies there (a Placement), that
    size): the size is `size`, else model_size's."""
    size = tuple(size or model_size(model, picture))
    spec = model.input_spec
    pixels, place = fit_image(picture, size, spec.resize, spec.crop_fraction, spec.pad_value)
    return pixels, place, size


def to_nchw(arr: np.ndarray, layout: str) -> np.ndarray:
    """An activation in (N, C, H, W) order whatever layout the model keeps it in."""
    if arr.ndim == 4 and layout.upper() == "NHWC":
        return arr.transpose(0, 3, 1, 2)
    if arr.ndim == 4 and layout.upper() != "NCHW":
        raise ConvlensError(f"A 4-D tensor {arr.shape} has no known layout (it comes out of a reshape), so its "
                            "channels and grid cannot be told apart.")
    return arr


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, computed stably."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def class_probabilities(model: Model, logits: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities from a batch of the model's logits: a softmax over the classes, or a sigmoid
    per class where the head is multi-label or binary (the model's metadata says which)."""
    x = np.asarray(logits, np.float64).reshape(len(logits), -1)
    if model.meta.activation == "identity":  # an output target's scores (a region sum, a similarity): as they are
        return x
    if model.meta.activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    return softmax(x)


def channel_axis(layout: str, ndim: int) -> int:
    return 3 if (layout.upper() == "NHWC" and ndim == 4) else 1


def parse_channels(text: str, channels: int, flag: str, noun: str = "Channel") -> list[int]:
    """'all', '0-63', '0,5,9' or a mix, checked against the layer's channel count."""
    if text in (None, "all"):
        return list(range(channels))
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise ConvlensError(f"{flag} must look like 0-63, 0,5,9 or all, not {text!r}.") from None
    bad = [f for f in out if not 0 <= f < channels]
    if bad:
        raise ConvlensError(f"{noun} {bad[0]} is out of range; the layer has {channels} channels (0-{channels - 1}).")
    return out
