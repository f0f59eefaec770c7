"""ONNX Runtime sessions: providers, threads, and weights handed over from memory.

Large weights never go through protobuf serialization: graphs declare them as external data and the
session receives the numpy arrays directly (add_external_initializers), so building a session for a
138M-parameter model costs no extra copy of the weights in Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ConvlensError


@dataclass(frozen=True)
class Runtime:
    """Where and how a model's programs run: its device (cpu or cuda) and ONNX Runtime's thread count (0:
    ONNX Runtime's choice). Each loaded model owns one; nothing else changes it."""
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self):
        providers_for(self.device)  # an unknown or unavailable device: one sentence now, not at the first run
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConvlensError(f"--threads must be 0 (automatic) or a positive number, not {self.threads}.")

    def session(self, model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> ort.InferenceSession:
        """A session for `model`, whose placeholder initializers are filled from `weights`."""
        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors reach the user as exceptions (one sentence), not ORT's log lines
        # pre-packed copies of the weights cost memory (a second VGG16 fc1) and bought no speed here
        options.add_session_config_entry("session.disable_prepacking", "1")
        # techniques alternate between sessions (forward, then a head's backward); each session's own pool
        # spinning after its run starves the next one (Grad-CAM of one VGG16 image: 144 ms with spinning,
        # 87 ms without); single-session loops measured no slower
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        names = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        if names:
            options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names])
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=providers_for(self.device))
        except Exception as exc:  # a custom-domain op, a missing kernel: name the node, the op and what to do
            raise ConvlensError(session_failure(model, exc)) from None


def providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ConvlensError(
                "--device cuda needs onnxruntime-gpu with a working CUDA install; this ONNX Runtime offers only "
                + ", ".join(available) + "."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConvlensError(f"Unknown device {device!r}; use cpu or cuda.")


def external_placeholder(name: str, array: np.ndarray) -> onnx.TensorProto:
    """An initializer entry that says 'data supplied at session creation'."""
    t = onnx.TensorProto()
    t.name = name
    t.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    t.dims.extend(array.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "convlens-memory"
    return t


def session_failure(model: onnx.ModelProto, exc: Exception) -> str:
    """One sentence for an ONNX Runtime session that cannot be made."""
    text = str(exc)
    standard = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
    custom = [n for n in model.graph.node if n.domain not in standard]
    if custom:
        node = custom[0]
        return (f"ONNX Runtime cannot run node {node.name or node.output[0]!r} (op {node.op_type} of the custom domain "
                f"{node.domain!r}); register that domain's operators with ONNX Runtime, or re-export the model with "
                "standard ONNX operators.")
    for node in model.graph.node:
        if node.op_type and f"{node.op_type}(" in text or (node.name and node.name in text):
            return (f"ONNX Runtime cannot make a session for node {node.name or node.output[0]!r} (op {node.op_type}): "
                    f"{_first_line(text)}; this ONNX Runtime build lacks a kernel for it, so try another build or "
                    "re-export the model with other operators.")
    return f"ONNX Runtime cannot make a session for this model: {_first_line(text)}."


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return line[:240].rstrip(".")
