"""Keras VGG16 <-> torchvision VGG16 weights.

Conv kernels: Keras HWIO, torch OIHW. Dense kernels: Keras (in, out), torch (out, in). fc1 also
reorders its input rows: Keras flattens the 7x7x512 map as (h, w, c), torch as (c, h, w).
"""
from __future__ import annotations

import numpy as np

from convlens.engine.errors import ConvlensError

# Keras layer name -> torchvision module index, for the layers that hold weights
VGG16_CONVS = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2",
               "block3_conv3", "block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2",
               "block5_conv3"]
VGG16_TORCH_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_DENSE = [("fc1", "classifier.0"), ("fc2", "classifier.3"), ("predictions", "classifier.6")]


def vgg16_layer_pairs() -> list[tuple[str, str]]:
    """(Keras layer, torchvision module) pairs with equal outputs: Keras convs include their ReLU."""
    pairs = [(k, f"features.{i + 1}") for k, i in zip(VGG16_CONVS, VGG16_TORCH_CONV_INDEX)]
    pairs += [(f"block{b}_pool", f"features.{i}") for b, i in zip(range(1, 6), [4, 9, 16, 23, 30])]
    pairs += [("fc1", "classifier.1"), ("fc2", "classifier.4")]
    return pairs


def canonical_names(source: str, source_name: str) -> dict[str, str]:
    """{layer name: framework-neutral name} for a known architecture (VGG16: its Keras names), else {}."""
    arch = source_name.lower().replace("torchvision.", "")
    if arch != "vgg16":
        return {}
    pairs = vgg16_layer_pairs()
    return {k: k for k, _ in pairs} if source == "keras" else {t: k for k, t in pairs}


def keras_vgg16_to_torch_state(weights: list[np.ndarray]) -> dict:
    """Keras VGG16 get_weights() list -> torchvision vgg16 state dict (numpy -> torch tensors)."""
    import torch

    if len(weights) != 32:
        raise ConvlensError(f"Expected the 32 weight arrays of Keras VGG16 with top, got {len(weights)}.")
    state = {}
    for k, idx in enumerate(VGG16_TORCH_CONV_INDEX):
        state[f"features.{idx}.weight"] = weights[2 * k].transpose(3, 2, 0, 1)
        state[f"features.{idx}.bias"] = weights[2 * k + 1]
    fc1 = weights[26].reshape(7, 7, 512, 4096).transpose(2, 0, 1, 3).reshape(25088, 4096)
    dense = [fc1, weights[28], weights[30]]
    for (_, tname), kernel, bias in zip(VGG16_DENSE, dense, [weights[27], weights[29], weights[31]]):
        state[f"{tname}.weight"] = kernel.T
        state[f"{tname}.bias"] = bias
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def torch_vgg16_to_keras_weights(state: dict) -> list[np.ndarray]:
    """torchvision vgg16 state dict -> Keras VGG16 set_weights() list."""
    out = []
    for idx in VGG16_TORCH_CONV_INDEX:
        out.append(_np(state[f"features.{idx}.weight"]).transpose(2, 3, 1, 0))
        out.append(_np(state[f"features.{idx}.bias"]))
    for i, (_, tname) in enumerate(VGG16_DENSE):
        kernel = _np(state[f"{tname}.weight"]).T
        if i == 0:
            kernel = kernel.reshape(512, 7, 7, 4096).transpose(1, 2, 0, 3).reshape(25088, 4096)
        out.append(np.ascontiguousarray(kernel))
        out.append(_np(state[f"{tname}.bias"]))
    return out


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def keras_h5_to_torch_state(path, torch_name: str) -> dict:
    if torch_name != "vgg16":
        raise ConvlensError(f"Keras weight files can be transferred to torch:vgg16 only, not torch:{torch_name}.")
    from .frameworks import keras_modules

    keras, _, _ = keras_modules()
    model = keras.applications.VGG16(weights=None)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise ConvlensError(f"{path} is not a Keras VGG16 weights file: {str(exc).splitlines()[0][:200]}") from None
    return keras_vgg16_to_torch_state(model.get_weights())


def torch_state_to_keras_weights(path, keras_name: str) -> list[np.ndarray]:
    if keras_name != "VGG16":
        raise ConvlensError(f"PyTorch state dicts can be transferred to keras:VGG16 only, not keras:{keras_name}.")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConvlensError(f"Cannot read {path} as a PyTorch state dict ({exc.__class__.__name__}).") from None
    try:
        return torch_vgg16_to_keras_weights(state)
    except KeyError as exc:
        raise ConvlensError(f"{path} is not a torchvision VGG16 state dict (missing {exc}).") from None
