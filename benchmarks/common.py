"""What every benchmark sets up: thread counts, and seeded torchvision VGG16 with its .onnx twin."""
import atexit
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def median_time(fn, repeat):
    """Median seconds of `repeat` calls, after one warm-up call (sessions, allocations)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(torch, repeat=5) -> float:
    """GFLOP/s of a large float32 matmul at the current thread count."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = median_time(lambda: torch.mm(a, b), repeat)
    return 2 * 2048 ** 3 / seconds / 1e9


def forward_flops(model, size) -> float:
    """FLOPs of one image's forward pass: 2 * multiply-adds of MatMul, Gemm and Conv, from inferred shapes."""

    shapes = model.shapes.static(size)
    total = 0.0
    for node in model.nodes:
        out = shapes.get(node.output[0])
        if not out or any(not isinstance(d, int) for d in out[1:]):
            continue
        out_size = float(np.prod([d if isinstance(d, int) else 1 for d in out]))
        if node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0]) or (
                list(model.weights[node.input[0]].shape) if node.input[0] in model.weights else None
            )
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = (a[-2] if trans_a else a[-1]) if a else None
            if isinstance(k, (int, np.integer)):
                total += 2 * out_size * int(k)
        elif node.op_type == "Conv" and node.input[1] in model.weights:
            w = model.weights[node.input[1]].shape
            total += 2 * out_size * float(np.prod(w[1:]))
    return total




def scratch_dir() -> Path:
    """A temporary folder removed when the benchmark exits (converted VGG16 files are 0.5 GB each)."""
    path = Path(tempfile.mkdtemp(prefix="convlens-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def vgg16_pair(threads: int):
    """(torch VGG16 with seeded random weights, frozen, no in-place ops; its converted engine.Model; the .onnx path)."""
    import torch
    import torchvision

    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.model.onnx_file import save_onnx

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    for m in net.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    # the baselines compute only the gradients convlens computes: none for the weights
    net.requires_grad_(False)
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224)), scratch_dir() / "vgg16.onnx")
    return net, load(path, threads=threads), path
