"""What every benchmark sets up: thread counts, and seeded torchvision VGG16 with its .onnx twin."""
import atexit
import shutil
import tempfile
from pathlib import Path


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
    from convlens.engine.onnx_file import save_onnx
    from convlens.engine.runtime import configure

    torch.set_num_threads(threads)
    configure(threads=threads)
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    for m in net.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    # the baselines compute only the gradients convlens computes: none for the weights
    net.requires_grad_(False)
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224)), scratch_dir() / "vgg16.onnx")
    return net, load(path), path
