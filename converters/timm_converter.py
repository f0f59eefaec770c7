"""timm:NAME -> .onnx: any model of timm's zoo (ViT, DeiT, register-token ViTs, convnets), through torch.onnx."""
from __future__ import annotations

import difflib
from pathlib import Path

from convlens.engine.errors import ConvlensError
from convlens.engine.metadata import PRESETS, InputSpec

from .downloads import check_imagenet_download, failure_cause
from .frameworks import seeded_torch, torch_module
from .torch_converter import convert_module, read_state_dict


def _timm():
    torch_module()  # torch first: it must be imported before TensorFlow in any process
    try:
        import timm
    except ImportError:
        raise ConvlensError("timm:NAME models need timm: pip install 'convlens[timm]'.") from None
    return timm


def timm_model(name: str, weights: str | None = "none", input_size=None):
    """A timm model in eval mode: random (seeded by the caller), ImageNet weights, or a .pth/.safetensors file."""
    timm = _timm()
    available = timm.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        raise ConvlensError(f"Unknown timm model {name!r}" + (f"; closest: {', '.join(close)}." if close else "."))
    w = (weights or "none").lower()
    kwargs = {"img_size": tuple(input_size)} if input_size else {}
    if w == "imagenet":  # offline: one sentence now, not after the framework's retries
        check_imagenet_download("timm", name, "--weights FILE (.pth or .safetensors) or --weights none")
    try:
        if w == "imagenet":
            model = _create(timm, name, True, kwargs)
        else:  # seeded: the same random weights every time (before any weights file replaces them)
            model = seeded_torch(lambda: _create(timm, name, False, kwargs))
    except ConvlensError:
        raise
    except Exception as exc:  # offline machines cannot download
        if w == "imagenet":
            raise ConvlensError(f"Could not get ImageNet weights for {name} ({failure_cause(exc)}); "
                                "pass --weights FILE (.pth or .safetensors) or --weights none.") from None
        raise
    if w not in ("none", "imagenet"):
        try:
            model.load_state_dict(read_state_dict(Path(weights)))
        except (RuntimeError, TypeError) as exc:
            raise ConvlensError(f"{weights} does not fit timm {name}: {str(exc).splitlines()[0][:200]}") from None
    return model.eval()


def _create(timm, name: str, pretrained: bool, kwargs: dict):
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError:  # convnets take any input size and have no img_size argument
        if not kwargs:
            raise
        return timm.create_model(name, pretrained=pretrained)


def timm_spec(model) -> InputSpec | str:
    """The preprocessing timm's config records for the model, as a preset where one matches."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = [round(float(v), 4) for v in cfg.get("mean", PRESETS["torch"]["mean"])]
    std = [round(float(v), 4) for v in cfg.get("std", PRESETS["torch"]["std"])]
    if mean == [0.485, 0.456, 0.406] and std == [0.229, 0.224, 0.225]:
        return "torch"
    if mean == [0.5] * 3 and std == [0.5] * 3:
        return "tf"  # (x / 255 - 0.5) / 0.5 = x / 127.5 - 1
    return InputSpec(name="input", size=None, color="RGB", scale=1 / 255.0, mean=list(cfg["mean"]),
                     std=list(cfg["std"]))


def convert_timm(name: str, weights: str | None = "none", input_size=None, preprocess: str | None = None):
    torch = torch_module()
    model = timm_model(name, weights, input_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    h, w = tuple(input_size) if input_size else default
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w))
    except Exception as exc:
        raise ConvlensError(f"timm {name} does not run at {h}x{w}: {str(exc).splitlines()[0][:200]}") from None
    return convert_module(
        model, torch.zeros(1, 3, h, w), name=f"timm.{name}", preprocess=preprocess or timm_spec(model)
    )
