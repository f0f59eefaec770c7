"""PyTorch -> ONNX with every named leaf module's output exposed, through torch.onnx.export."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import onnx

from convlens.engine.errors import ConvlensError
from convlens.engine.metadata import InputSpec, LayerInfo

from .common import finish
from .downloads import check_imagenet_download, failure_cause
from .frameworks import seeded_torch, torch_module

_ATEN_KINDS = (
    ("conv", "conv"),
    ("pool", "pool"),
    ("linear", "dense"),
    ("addmm", "dense"),
    ("norm", "norm"),
    ("relu", "activation"),
    ("gelu", "activation"),
    ("silu", "activation"),
    ("sigmoid", "activation"),
    ("hardswish", "activation"),
    ("hardtanh", "activation"),
    ("tanh", "activation"),
    ("softmax", "activation"),
)


def _unflattened_kind(module) -> str:
    """A module rebuilt by torch.export.unflatten has no class of its own: read its kind off its one op."""
    calls = [str(n.target).lower() for n in module.graph.nodes if n.op == "call_function"]
    kinds = {kind for call in calls for key, kind in _ATEN_KINDS if key in call.split(".")[-2:][0]}
    return kinds.pop() if len(kinds) == 1 and len(calls) <= 2 else "other"


def layer_kind(module) -> str:
    name = type(module).__name__
    if name == "InterpreterModule" and hasattr(module, "graph"):
        return _unflattened_kind(module)
    if "Conv" in name:
        return "conv"
    if "Pool" in name:
        return "pool"
    if name in ("Linear",):
        return "dense"
    if "Norm" in name:
        return "norm"
    if name in ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "SiLU", "GELU", "Sigmoid", "Hardswish", "Hardsigmoid",
                "Tanh", "ELU", "Softplus", "Mish", "Softmax"):
        return "activation"
    return "other"


def convert_module(module, example_input, *, name: str = "model", preprocess: str | InputSpec = "torch",
                   labels="imagenet", opset: int = 17):
    """Export any nn.Module taking one NCHW image batch; returns an onnx.ModelProto with convlens metadata.
    `preprocess` is a preset name or an InputSpec (its name, size and layout are set here)."""
    torch = torch_module()
    was_training = module.training
    _set_training(module, False)
    # every named module, containers too (users ask for "layer4" as often as for "layer4.1.relu")
    leaves = {path: m for path, m in module.named_modules() if path}
    captured: dict[str, object] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, p=path: captured.__setitem__(p, out))
             for path, m in leaves.items()]
    inplace = [(m, m.inplace) for m in module.modules() if isinstance(getattr(m, "inplace", None), bool)]
    for m, _ in inplace:  # in-place ops would alias the captured tensors
        m.inplace = False
    # nn.MultiheadAttention's eval-mode fast path is one fused op (aten::_native_multi_head_attention) that
    # torch.onnx cannot export; the plain path gives MatMul/Softmax nodes, so attention stays visible in the graph
    fastpath = _mha_fastpath(torch, False)
    try:
        with torch.no_grad():
            captured.clear()
            result = module(example_input)
        # modules that return their input unchanged (Dropout, Identity) alias another tensor:
        # each distinct tensor is exported once and aliases point at it
        alias, seen = {}, {id(result): "logits"}
        exposed = []
        for p in leaves:
            value = captured.get(p)
            if not isinstance(value, torch.Tensor):
                continue
            if id(value) in seen:
                alias[p] = seen[id(value)]
            else:
                seen[id(value)] = p
                exposed.append(p)

        class Exposed(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module

            def forward(self, x):
                captured.clear()
                y = self.inner(x)
                return (y,) + tuple(captured[p] for p in exposed)

        out_names = ["logits"] + [_tensor_name(p) for p in exposed]
        buf = io.BytesIO()
        with torch.no_grad():
            wrapper = Exposed()
            wrapper.training = False  # not .eval(): it would recurse into modules that refuse it
            torch.onnx.export(wrapper, (example_input,), buf, dynamo=False, input_names=["input"],
                              training=torch.onnx.TrainingMode.PRESERVE,
                              output_names=out_names, opset_version=opset, do_constant_folding=True,
                              dynamic_axes={n: {0: "N"} for n in ["input"] + out_names})
    finally:
        for h in hooks:
            h.remove()
        for m, flag in inplace:
            m.inplace = flag
        _set_training(module, was_training)
        _mha_fastpath(torch, fastpath)
    model = onnx.load_model_from_string(buf.getvalue())
    shape = tuple(example_input.shape)
    layers = []
    for p in leaves:
        if p in exposed or p in alias:
            tensor = _tensor_name(alias.get(p, p))
            layers.append(LayerInfo(name=p, tensor=tensor, kind=layer_kind(leaves[p]),
                                    layout=_LAYOUT_BY_RANK.get(captured_ndim(model, tensor), "NCHW")))
    if not layers:  # no module calls to hook (torch.export's flattened graphs): read layers off the graph
        from convlens.engine.model.infer import infer_meta

        layers = [l for l in infer_meta(model).layers if l.tensor != "logits"]
    channels = 1 if shape[1] == 1 else 3
    if isinstance(preprocess, InputSpec):
        spec = dataclasses.replace(preprocess, name="input", size=tuple(shape[2:4]), layout="NCHW", channels=channels)
    else:
        spec = InputSpec.from_preset("input", preprocess, size=shape[2:4], layout="NCHW", channels=channels)
    return finish(model, source="torch", source_name=name, spec=spec, layers=layers,
                  probabilities_output=None, logits_output="logits", labels=labels)


# a layer's layout by the rank of its output: (N, tokens, channels) sequences are a transformer's token layers
_LAYOUT_BY_RANK = {2: "flat", 3: "tokens", 4: "NCHW"}


def _mha_fastpath(torch, enabled: bool) -> bool:
    """Set whether nn.MultiheadAttention may take its fused path; returns the previous setting."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        return True
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(enabled)
    return previous


def _set_training(module, flag: bool) -> None:
    """train()/eval(), where the module allows it (torch.export's unlifted modules refuse both)."""
    try:
        module.train(flag)
    except NotImplementedError:
        pass


def _tensor_name(path: str) -> str:
    """The graph tensor for a module path; TorchScript refuses purely numeric names like '0'."""
    return path if path == "logits" or not path[:1].isdigit() else f"module.{path}"


def captured_ndim(model: onnx.ModelProto, tensor: str) -> int | None:
    for out in model.graph.output:
        if out.name == tensor and out.type.tensor_type.HasField("shape"):
            return len(out.type.tensor_type.shape.dim)
    return None


def torchvision_model(name: str, weights: str | None):
    """A torchvision classifier by name, with weights 'imagenet', 'none', a .pth state dict or Keras VGG weights."""
    torch_module()  # torch first, with the message that says how to install it
    try:
        import torchvision
    except ImportError:
        raise ConvlensError("torch:NAME models need torchvision: pip install 'convlens[torch]'.") from None
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=3)
        raise ConvlensError(
            f"Unknown torchvision model {name!r}" + (f"; closest: {', '.join(close)}." if close else ".")
        )
    w = (weights or "none").lower()
    if w == "imagenet":  # offline: one sentence now, not after the framework's retries
        check_imagenet_download("torch", name, "--weights FILE.pth or --weights none")
    if w == "imagenet":
        try:
            return torchvision.models.get_model(name, weights="DEFAULT").eval()
        except Exception as exc:  # offline machines cannot download
            raise ConvlensError(f"Could not get ImageNet weights for {name} ({failure_cause(exc)}); "
                                "pass --weights FILE.pth or --weights none.") from None
    if w == "none":  # seeded: the same random weights every time (frameworks.RANDOM_WEIGHTS_SEED)
        return seeded_torch(lambda: torchvision.models.get_model(name, weights=None)).eval()
    path = Path(weights)
    if not path.exists():
        raise ConvlensError(f"Weights file not found: {path}")
    if path.name.endswith(".h5"):
        from .vgg_transfer import keras_h5_to_torch_state

        state = keras_h5_to_torch_state(path, name)
    else:
        state = read_state_dict(path)
    model = torchvision.models.get_model(name, weights=None, **_optional_parts(name, state)).eval()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ConvlensError(f"{path} does not fit torchvision {name}: {str(exc).splitlines()[0][:200]}") from None
    return model


def read_state_dict(path: Path) -> dict:
    """A state dict from a .pth (torch.load, weights only: no pickled code runs) or a .safetensors file."""
    torch = torch_module()
    if not path.exists():
        raise ConvlensError(f"Weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConvlensError(f"Cannot read {path} as a PyTorch state dict ({exc.__class__.__name__}).") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConvlensError(f"{path} does not hold a state dict.")
    return state


# constructors whose auxiliary classifiers are optional: torchvision's ImageNet weights come without them,
# weights saved from a model trained with them carry them; eval mode never runs them either way
_AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def _optional_parts(name: str, state) -> dict:
    """Constructor arguments that make the model's parts match the saved weights."""
    prefixes = _AUX_PREFIXES.get(name)
    if not prefixes or not isinstance(state, dict):
        return {}
    has_aux = any(str(k).startswith(prefixes) for k in state)
    return {"aux_logits": has_aux, "init_weights": False}


def convert_torchvision(name: str, weights: str | None = "none", input_size=None, preprocess: str | None = None):
    """`preprocess` defaults to what the weights expect: Keras VGG16 weights (.h5) were trained on caffe
    input (BGR minus the ImageNet mean), torchvision's on torch input (RGB, /255, mean and std)."""
    torch = torch_module()
    model = torchvision_model(name, weights)
    h, w = input_size or _weights_crop_size(name)
    example = torch.zeros(1, 3, h, w)
    keras_weights = str(weights or "").lower().endswith(".h5")
    return convert_module(model, example, name=f"torchvision.{name}",
                          preprocess=preprocess or ("caffe" if keras_weights else "torch"))


def _weights_crop_size(name: str) -> tuple[int, int]:
    """The input size torchvision's weights for `name` were trained at (their transforms' crop: 299 for
    inception_v3, 300 for efficientnet_b3), read without downloading anything; 224 where none is recorded."""
    import torchvision

    try:
        crop = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size
    except (ValueError, AttributeError, TypeError, KeyError):
        return 224, 224
    crop = list(crop)
    return (int(crop[0]), int(crop[-1])) if crop else (224, 224)


def exported_program_module(path: str):
    """(the module, its example input) of a torch.export .pt2 file, loaded without running pickled code.
    unflatten restores the module tree (ep.module() is one flat graph), so layers keep their module paths."""
    torch = torch_module()
    try:
        ep = torch.export.load(path)
    except Exception as exc:
        raise ConvlensError(f"Cannot load {path} as a torch.export program ({exc.__class__.__name__}).") from None
    example = ep.example_inputs[0][0] if ep.example_inputs else None
    if example is None:
        raise ConvlensError(f"{path} carries no example input; re-export it with torch.export.export(model, (x,)).")
    return torch.export.unflatten(ep), example


def convert_exported_program(path: str, preprocess: str | None = None, input_size=None):
    """A torch.export .pt2 file, exported like a module."""
    module, example = exported_program_module(path)
    if input_size is not None:
        raise ConvlensError(f"--input-size does not apply to {path}: a torch.export program is traced at the "
                            f"size of its example input {tuple(example.shape)}; export it again at the size you want.")
    return convert_module(module, example, name=Path(path).stem, preprocess=preprocess or "torch")
