"""`convlens verify`: the engine against the source framework's own forward pass and autograd.

Same weights, same image: logits, every exposed layer, the input gradient (torch.autograd or
tf.GradientTape), a Grad-CAM map and one filter-ascent step, each with pass or fail.
"""
from __future__ import annotations

import numpy as np

from convlens.engine.adapter import GRAY, PIXELS, apply_numpy
from convlens.engine.errors import ConvlensError
from convlens.engine.model import Model
from convlens.engine.objectives import one_hot
from convlens.engine.techniques.cam import auto_layer, cam_maps, gradcam, normalize
from convlens.engine.techniques.common import prepare, to_nchw
from convlens.engine.techniques.gradients import gradient_program, run_gradient
from convlens.engine.techniques.targets import Target

from .dispatch import parse_source

TOLERANCES = {"activation_rtol": 1e-4, "logits_rtol": 1e-4, "gradient_l2": 1e-2, "cam_max_abs": 1e-3, "step_rtol": 1e-3}


def _mean_std(spec):
    """float32 (mean, std) per model channel: a gray model takes the average of a preset's three."""
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    return (mean.mean(keepdims=True), std.mean(keepdims=True)) if spec.channels == 1 else (mean, std)


class _Torch:
    def __init__(self, net, spec):
        import torch

        self.torch, self.net, self.spec = torch, net.eval(), spec
        for m in net.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False

    def _input(self, pixels, spec):
        p = self.torch.tensor(pixels, requires_grad=True)
        t = self.torch
        mean, std = _mean_std(spec)
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


class _Keras:
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

    def run(self, pixels, layers, cls=None, grad_layer=None, channel=None, spec=None):
        tf, keras = self.tf, self.keras
        names = list(dict.fromkeys(list(layers) + ([grad_layer] if grad_layer else []) + ([channel[0]] if channel else [])))
        outs = [self.symbolic[n] for n in names]
        head = self.net.layers[-1]
        model = keras.Model(self.inputs, outs + [self.head_input if self.softmax_head else self.net.output])
        p = tf.constant(pixels)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(p)
            spec = spec or self.spec
            mean, std = _mean_std(spec)
            if spec.channels == 1:
                x = tf.reduce_sum(p * tf.constant(GRAY), axis=-1, keepdims=True)
            else:
                x = p[..., ::-1] if spec.color == "BGR" else p
            x = (x * spec.scale - tf.constant(mean)) / tf.constant(std)
            res = model(x)
            res = res if isinstance(res, (list, tuple)) else [res]
            feats, last = dict(zip(names, res[:-1])), res[-1]
            scores = keras.ops.matmul(last, head.kernel) + head.bias if self.softmax_head else last
            if channel is not None:
                obj = tf.reduce_mean(feats[channel[0]][..., channel[1]])
            else:
                obj = scores[0, cls] if cls is not None else tf.zeros(())
        g_pix = tape.gradient(obj, p)
        g_layer = tape.gradient(obj, feats[grad_layer]).numpy() if grad_layer else None
        return ({n: np.asarray(feats[n]) for n in layers}, np.asarray(scores),
                g_pix.numpy() if g_pix is not None else None, g_layer)


def framework_model(source: str, weights: str | None, spec):
    kind, name = parse_source(source)
    if kind == "torch":
        from .torch_converter import torchvision_model

        return _Torch(torchvision_model(name, weights), spec)
    if kind == "keras":
        from .keras_converter import applications_model

        return _Keras(applications_model(name, weights), spec)
    if kind == "keras-file":
        from .frameworks import keras_modules

        keras, _, _ = keras_modules()
        return _Keras(keras.saving.load_model(name, compile=False, safe_mode=True), spec)
    raise ConvlensError(f"verify supports keras:NAME, torch:NAME and .keras sources, not {source!r}.")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30))


def verify(model: Model, source: str, weights: str | None, image, tolerances: dict | None = None) -> list[dict]:
    """Rows of {figure, value, limit, ok} comparing the engine with the framework on the same weights."""
    tol = {**TOLERANCES, **(tolerances or {})}
    fw = framework_model(source, weights, model.input_spec)
    pixels = prepare(model, image)
    rows = []

    def row(figure, value, limit, ok=None):
        rows.append({"figure": figure, "value": value, "limit": limit, "ok": bool(value <= limit) if ok is None else ok})

    # only layers the framework can name: a file exported by another tool (torch.onnx, tf2onnx) names its
    # layers after graph nodes, so it is checked on its logits and input gradient alone
    known = {k.name for k in fw.net.layers} if isinstance(fw, _Keras) else set(dict(fw.net.named_modules()))
    layers = [l for l in model.layers if l.kind in ("conv", "activation", "pool", "dense") and l.name in known]
    from convlens.engine.program import program

    tensor = model.meta.logits
    # Grad-CAM is checked where it means something: the layer `--layer auto` picks (a grid larger than 1x1),
    # never a pooled 1x1 tensor, where every map is the same whatever the weights
    try:
        cam_layer = auto_layer(model, pixels.shape[1:3])
    except ConvlensError:
        cam_layer = None
    if cam_layer is not None and cam_layer.name not in known:
        cam_layer = None
    if cam_layer is not None and cam_layer.name not in {l.name for l in layers}:
        layers.append(cam_layer)
    eng = program(model, [l.tensor for l in layers] + [tensor], pixels.shape[1:3]).run(pixels)
    cls = int(np.argmax(eng[tensor][0]))
    values, scores, g_pix, g_layer = fw.run(pixels, [l.name for l in layers], cls, cam_layer.name if cam_layer else None)
    row("logits max relative difference", _rel(eng[tensor], scores), tol["logits_rtol"])
    worst = max(layers, key=lambda l: _rel(eng[l.tensor], values[l.name])) if layers else None
    if worst is not None:
        row(f"activations, worst layer ({worst.name})", _rel(eng[worst.tensor], values[worst.name]), tol["activation_rtol"])
    prog, channels = gradient_program(model, Target(), pixels.shape[1:3])
    mine = run_gradient(prog, pixels, one_hot([cls], channels))[prog.grads[PIXELS]]
    # relative L2, not elementwise: a max-pool near-tie that float rounding breaks the other way in the
    # framework moves the gradient of the pixels under that window (both answers are right); on VGG16
    # this measured 3.5e-3 (torch) here, while models without max-pooling agree to ~1e-6
    row("input gradient relative L2 difference", float(np.linalg.norm(mine - g_pix) / np.linalg.norm(g_pix)),
        tol["gradient_l2"])
    if cam_layer is not None:
        ref, _ = normalize(cam_maps(to_nchw(values[cam_layer.name], cam_layer.layout),
                                    to_nchw(g_layer, cam_layer.layout), "gradcam")[0])
        got = gradcam(model, pixels, cls, cam_layer.name)[0][0].cam
        row(f"Grad-CAM max abs difference ({cam_layer.name})", float(np.abs(got - ref).max()), tol["cam_max_abs"])
    first = next((l for l in layers if l.kind == "conv"), None)
    if first is not None:
        raw = model.input_spec.with_preset("raw")
        h, w = pixels.shape[1:3]  # the model's own size: Keras models with a top fix it
        start = (np.random.default_rng(0).random((1, h, w, 3)) * 20 + 128).astype(np.float32)
        act = program(model, [first.tensor], (h, w), raw).run(start)[first.tensor]
        f = int(np.argmax(to_nchw(act, first.layout)[0].mean(axis=(1, 2))))  # a live filter: nonzero gradient
        fprog, fch = gradient_program(model, Target(layer=first.name), (h, w), spec=raw)
        g = run_gradient(fprog, start, one_hot([f], fch))[fprog.grads[PIXELS]]
        _, _, gt, _ = fw.run(start, [], channel=(first.name, f), spec=raw)
        step = g / (np.sqrt(np.mean(g ** 2)) + 1e-5)
        ref = gt / (np.sqrt(np.mean(gt ** 2)) + 1e-5)
        row(f"filter-ascent step ({first.name}, filter {f}) relative L2", float(np.linalg.norm(step - ref) / np.linalg.norm(ref)),
            tol["step_rtol"])
    return rows


__all__ = ["verify", "apply_numpy"]
