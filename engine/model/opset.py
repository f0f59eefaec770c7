"""Old opsets: graphs before opset 16 are brought to it, checked where the meaning could change.

Backward graphs need ScatterElements/ScatterND with `reduction` (opset 16) wherever gradients from
overlapping windows add up (a 3x3 stride-2 max-pool). Every change to the default domain from opset 14 to
16 only adds types or attributes with defaults that keep the old meaning (BatchNormalization's
training_mode=0, Reshape's allowzero=0, ...), so an opset 13-15 graph means the same under 16 and only its
number changes. Opsets 7-12 differ in substance (Softmax's axis flattened the input, Pad/Clip/Split took
attributes, ReduceSum's axes...): onnx's version converter rewrites them, and the rewrite is checked on a
probe input against the original under ONNX Runtime before any technique uses it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx

from ..errors import ConvlensError, ConvlensWarning

TARGET = 16
OLDEST = 7


def default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def upgrade_opset(proto: onnx.ModelProto, path) -> onnx.ModelProto:
    """The model at opset 16 or newer (a new proto where the version converter ran)."""
    version = default_opset(proto)
    if version is None or version >= TARGET:
        return proto
    name = Path(str(path)).name
    if version < OLDEST:
        raise ConvlensError(f"{name} uses ONNX opset {version}; convlens reads opset {OLDEST} and newer "
                            "(re-export the model at a newer opset).")
    if version >= 13:
        for op in proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                op.version = TARGET
        return proto
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, TARGET)
    except Exception as exc:  # the converter's own message names the op it could not adapt
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise ConvlensError(f"{name} uses ONNX opset {version}, and onnx's version converter could not bring it to "
                            f"opset {TARGET} ({first}); re-export the model at opset 13 or newer.") from None
    _check_same_outputs(proto, upgraded, name, version)
    return upgraded


def probe_feeds(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every graph input: fixed dims as given, a free batch as 1, other free dims as 64."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (1 if i == 0 else 64)
                for i, d in enumerate(tensor.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.uniform(-1, 1, dims).astype(dtype)
        else:
            feeds[value.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def _check_same_outputs(original: onnx.ModelProto, upgraded: onnx.ModelProto, name: str, version: int) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    feeds = probe_feeds(original)
    try:
        before = ort.InferenceSession(original.SerializeToString(), options,
                                      providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # the original cannot run on a made-up input: the rewrite stays unchecked, and we say so
        warnings.warn(f"{name} was upgraded from opset {version} to {TARGET} by onnx's version converter; the "
                      "upgrade could not be checked on a probe input (the original does not run on one).",
                      ConvlensWarning, stacklevel=4)
        return
    try:
        after = ort.InferenceSession(upgraded.SerializeToString(), options,
                                     providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:
        raise ConvlensError(f"{name} uses ONNX opset {version}, and its upgrade to opset {TARGET} does not run "
                            f"({str(exc).splitlines()[0][:160]}); re-export the model at opset 13 or newer.") from None
    for out, a, b in zip(original.graph.output, before, after):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = np.abs(a).max() if a.size else 0.0
        if a.shape != b.shape or (a.size and np.abs(a - b).max() > 1e-4 * (scale + 1e-6)):
            raise ConvlensError(f"{name} uses ONNX opset {version}, and onnx's version converter changed what its "
                                f"output {out.name!r} computes when upgrading it to opset {TARGET}; re-export the "
                                "model at opset 13 or newer.")
