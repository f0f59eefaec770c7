"""A core install (`pip install convlens`: onnx, onnxruntime, numpy, OpenCV; no torch, no TensorFlow, no
scikit-image) in a fresh virtual environment, from a built wheel rather than the checkout: the engine works on an
.onnx file, and what needs an extra says so in one sentence, never with a traceback."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("core")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    pip = str(folder / "venv" / "bin" / "pip")
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(folder / "wheel")], capture_output=True, text=True, cwd=folder)
    for leftover in (ROOT / "build", ROOT / "convlens.egg-info"):  # setuptools builds in the checkout
        shutil.rmtree(leftover, ignore_errors=True)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    (built,) = (folder / "wheel").glob("convlens-*.whl")
    install = subprocess.run([pip, "install", "-q", "-c", str(ROOT / ".ci" / "constraints.txt"), str(built)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([pip, "list", "--format=freeze"], capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "convlens" in names and not names & {"torch", "tensorflow", "keras", "scikit-image", "tf2onnx"}
    yield folder / "venv" / "bin"
    shutil.rmtree(folder, ignore_errors=True)


def _run(bin_dir, *args, cwd):
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd)


def test_the_engine_runs_and_extras_are_asked_for_in_a_sentence(core_venv, tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    model = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(model), dynamo=False, opset_version=17)
    image = tmp_path / "x.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.uint8))
    works = [["convlens", "layers", str(model)],
             ["convlens", "cam", str(model), str(image), "--preprocess", "raw", "-o", "cam"],
             ["convlens", "saliency", str(model), str(image), "--preprocess", "raw", "-o", "sal"]]
    for argv in works:
        done = _run(core_venv, *argv, cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    asks = [(["convlens", "demo", "-o", "demo-out"], "torch"),
            (["python", "-m", "convlens.engine.evaluation.sample_set", "set"], "scikit-image"),
            (["convlens", "verify", str(model), "--source", "torch:vgg16", "--weights", "none", "--preprocess", "raw"],
             "torch"),
            (["convlens", "convert", "keras:VGG16", "-o", "k.onnx"], "TensorFlow")]
    for argv, extra in asks:
        done = _run(core_venv, *argv, cwd=tmp_path)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1, (argv, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and len(lines) == 1 and extra.lower() in lines[0].lower(), (argv, lines)
