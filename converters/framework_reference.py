"""The source framework's own computations, for `convlens verify`: forward pass, layer values and
gradients (torch.autograd, tf.GradientTape) on the same weights and pixels as the engine, returned as
numpy arrays. The comparison with the engine lives in engine/checks/verification.py; cli.py and
api.py join the two.
"""
from __future__ import annotations

import numpy as np

from convlens.engine.errors import ConvlensError
from convlens.engine.runtime.adapter import GRAY, per_channel_std_mean

from .dispatch import parse_source
from .frameworks import keras_modules


class TorchReference:
    """A torch model fed the same pixels as the engine (the input adapter's numbers, in torch)."""

    def __init__(self, net, spec):
        import torch

        self.torch, self.net, self.spec = torch, net.eval(), spec
        for m in net.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False

    def layer_names(self) -> set[str]:
        return set(dict(self.net.named_modules()))

    def _input(self, pixels, spec):
        p = self.torch.tensor(pixels, requires_grad=True)
        t = self.torch
        std, mean = (a.astype(np.float32) for a in per_channel_std_mean(spec))
        if spec.channels == 1:
            x = (p * t.from_numpy(GRAY)).sum(-1, keepdim=True)
        else:
            x = p[..., [2, 1, 0]] if spec.color == "BGR" else p
        x = (x * spec.scale - t.from_numpy(mean)) / t.from_numpy(std)
        return p, x.permute(0, 3, 1, 2)

    def run(self, pixels, layers, cls=None, grad_layer=None, channel=None, spec=None):
        """Layer values, scores, and gradients of scores[cls] (or of a channel mean) w.r.t. pixels and grad_layer."""
        saved, mods = {}, dict(self.net.named_modules())
        hooks = []
        for name in set(layers) | ({grad_layer} if grad_layer else set()) | ({channel[0]} if channel else set()):
            def keep(_m, _i, out, n=name):
                if out.requires_grad:
                    out.retain_grad()
                saved[n] = out
            hooks.append(mods[name].register_forward_hook(keep))
        p, x = self._input(pixels, spec or self.spec)
        scores = self.net(x)
        for h in hooks:
            h.remove()
        if channel is not None:
            saved[channel[0]][:, channel[1]].mean().backward()
        elif cls is not None:
            scores[0, cls].backward()
        values = {n: saved[n].detach().numpy() for n in layers}
        g_layer = saved[grad_layer].grad.numpy() if grad_layer else None
        return values, scores.detach().numpy(), p.grad.numpy() if p.grad is not None else None, g_layer


class KerasReference:
    """A Keras model fed the same pixels as the engine, differentiated with tf.GradientTape."""

    def __init__(self, net, spec):
        import keras
        import tensorflow as tf

        if isinstance(net, keras.Sequential):  # a functional twin, so every layer has a symbolic output
            inp = keras.Input(net.inputs[0].shape[1:])
            x, self.symbolic, before_last = inp, {}, inp
            for layer in net.layers:
                before_last = x
                x = layer(x)
                self.symbolic[layer.name] = x
            net = keras.Model(inp, x)
            self.inputs, self.head_input = inp, before_last
        else:
            self.symbolic = {l.name: l.output for l in net.layers if type(l).__name__ != "InputLayer"}
            self.inputs, self.head_input = net.inputs, net.layers[-1].input
        self.keras, self.tf, self.net, self.spec = keras, tf, net, spec
        last = net.layers[-1]
        self.softmax_head = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"

    def layer_names(self) -> set[str]:
        return {layer.name for layer in self.net.layers}

    def run(self, pixels, layers, cls=None, grad_layer=None, channel=None, spec=None):
        tf, keras = self.tf, self.keras
        names = list(
            dict.fromkeys(list(layers) + ([grad_layer] if grad_layer else []) + ([channel[0]] if channel else []))
        )
        outs = [self.symbolic[n] for n in names]
        head = self.net.layers[-1]
        model = keras.Model(self.inputs, outs + [self.head_input if self.softmax_head else self.net.output])
        p = tf.constant(pixels)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(p)
            spec = spec or self.spec
            std, mean = (a.astype(np.float32) for a in per_channel_std_mean(spec))
            if spec.channels == 1:
                x = tf.reduce_sum(p * tf.constant(GRAY), axis=-1, keepdims=True)
            else:
                x = p[..., ::-1] if spec.color == "BGR" else p
            x = (x * spec.scale - tf.constant(mean)) / tf.constant(std)
            res = model(x)
            res = res if isinstance(res, (list, tuple)) else [res]
            feats, last = dict(zip(names, res[:-1])), res[-1]
            # logits: a softmax Dense head's pre-activation, or the input of a bare softmax Activation layer
            # (MobileNet, MobileNetV3), which the model fetched as `last`
            dense_head = self.softmax_head and hasattr(head, "kernel")
            scores = keras.ops.matmul(last, head.kernel) + head.bias if dense_head else last
            if channel is not None:
                obj = tf.reduce_mean(feats[channel[0]][..., channel[1]])
            else:
                obj = scores[0, cls] if cls is not None else tf.zeros(())
        g_pix = tape.gradient(obj, p)
        g_layer = tape.gradient(obj, feats[grad_layer]).numpy() if grad_layer else None
        return ({n: np.asarray(feats[n]) for n in layers}, np.asarray(scores),
                g_pix.numpy() if g_pix is not None else None, g_layer)


def reference_weights(meta, source: str, weights: str | None, file_name: str) -> str | None:
    """The weights to build `source` with for a file: the ones given, else the ones its metadata records (seeded
    random weights are rebuilt exactly). A file converted from another model, or whose weights cannot be known,
    is refused in a sentence."""
    kind, name = parse_source(source)
    if kind in ("keras-file", "torch-file"):
        return None  # a saved model carries its weights
    expected = {"torch": f"torchvision.{name}", "timm": f"timm.{name}", "keras": name}[kind]
    from_zoo = meta.weights is not None or meta.source_name.startswith(("torchvision.", "timm."))
    if meta.source in ("torch", "keras") and from_zoo and meta.source_name != expected:
        raise ConvlensError(f"{file_name} was converted from {meta.source_name}, not from {source}; verify it against "
                            "the source it was converted from.")
    if weights is not None:
        return weights
    if meta.weights is None:
        raise ConvlensError(f"{file_name} does not record the weights it was made with, so verify cannot rebuild "
                            "them; pass --weights none, imagenet or the weights file.")
    return meta.weights


def framework_reference(source: str, weights: str | None, spec):
    """The source framework's model with `weights`, wrapped to run like the engine (see verification.py)."""
    kind, name = parse_source(source)
    if kind in ("torch", "timm", "torch-file"):
        from .frameworks import torch_module

        torch_module(f"Verifying against {source} (PyTorch's own autograd)")
    if kind == "torch":
        from .torch_converter import torchvision_model

        return TorchReference(torchvision_model(name, weights), spec)
    if kind == "timm":
        from .timm_converter import timm_model

        return TorchReference(timm_model(name, weights, spec.size), spec)
    if kind == "keras":
        from .keras_converter import applications_model

        return KerasReference(applications_model(name, weights, True, spec.size), spec)
    if kind == "keras-file":
        keras, _, _ = keras_modules()
        return KerasReference(keras.saving.load_model(name, compile=False, safe_mode=True), spec)
    from .torch_converter import exported_program_module

    return TorchReference(exported_program_module(name)[0], spec)  # a .pt2 file (parse_source knows no other kind)
