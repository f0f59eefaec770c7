"""A newcomer's first hour: progress on piped runs, overlays on white pages, pictures at the photo's shape,
captions that say the truth, one sentence offline, no traceback without scikit-image."""
import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import IMAGE

from convlens.cli import main
from convlens.engine.render.pictures import overlay
from convlens.engine.render.progress import Progress


def test_a_piped_progress_line_comes_on_a_timer_and_quick_work_writes_nothing():
    stream = io.StringIO()  # not a terminal: plain lines
    with Progress(4, "filters", interval=0.05, stream=stream) as progress:
        time.sleep(0.3)  # a slow first step: the timer still reports
        progress.advance(3)
        time.sleep(0.15)
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"filters: 0/4 done, 4 left, \d+ s so far", lines[0]), lines
    assert any(line.startswith("filters: 3/4 done, 1 left, about ") for line in lines)
    assert lines[-1].startswith("filters: 3/4 done in ")
    for quiet, interval in ((True, 0.01), (False, 60)):  # quiet, or done within one interval: nothing at all
        silent = io.StringIO()
        with Progress(4, "filters", quiet=quiet, interval=interval, stream=silent) as progress:
            time.sleep(0.05)
            progress.advance(4)
        assert silent.getvalue() == ""


def test_progress_gets_through_while_framework_chatter_is_held():
    code = ("import os, time\nfrom convlens.converters.quiet import quiet_frameworks\n"
            "from convlens.engine.render.progress import Progress\n"
            "with Progress(1, 'conversion', interval=0.1) as progress, quiet_frameworks():\n"
            "    os.write(2, b'framework chatter\\n')\n"  # what TensorFlow's C++ side writes to descriptor 2
            "    time.sleep(0.35)\n"
            "    progress.advance()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "conversion: 0/1 done, 1 left" in proc.stderr and "conversion: 1/1 done in" in proc.stderr
    assert "framework chatter" not in proc.stderr


def test_piped_filters_run_prints_progress_within_the_interval(tiny_torch, tmp_path):
    env = {**os.environ, "CONVLENS_PROGRESS_INTERVAL": "2"}
    convlens = str(Path(sys.executable).parent / "convlens")  # the installed command
    proc = subprocess.Popen([convlens, "filters", str(tiny_torch["path"]), "--layer", "3", "--filters", "0-15",
                             "--steps", "100000", "--size", "32", "-o", str(tmp_path / "f")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        started = time.perf_counter()
        first = proc.stderr.readline()  # a run far longer than the interval: its first line comes on the timer
        waited = time.perf_counter() - started
    finally:
        proc.kill()
        proc.communicate()
    assert re.fullmatch(r"filters: 0/16 done, 16 left, \d+ s so far\n", first), first
    print(f"first progress line {waited:.1f} s after the command started (model loading included)")


def test_blend_overlay_shows_on_a_white_page_where_the_lessons_recipe_vanishes():
    white = np.full((64, 96, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:8, 0:12]
    heat = np.exp(-((yy - 4) ** 2 + (xx - 6) ** 2) / 6.0)
    additive = overlay(white, heat, "additive")
    blend = overlay(white, heat, "blend")
    assert additive.min() == 255  # the map vanished: every pixel white
    hot, cold = blend[32, 48].astype(int), blend[2, 2].astype(int)
    assert hot[0] > hot[2] + 60 and cold[2] > cold[0] + 60  # red where the map is high, blue where it is low
    photo = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay(photo, np.zeros((8, 12))), overlay(photo, np.zeros((8, 12)), "blend"))


@pytest.fixture(scope="module")
def tiny_fixed(tiny_torch, tmp_path_factory):
    """The tiny convnet described as taking 32x32 inputs: photos are resized, maps drawn back."""
    import convlens

    path = tmp_path_factory.mktemp("fixed") / "tiny32.onnx"
    convlens.annotate(tiny_torch["path"], path, input_size="32,32")
    return path


def test_saliency_png_is_at_the_photos_shape_and_the_npy_at_the_models(tiny_fixed, tmp_path, capsys):
    out = tmp_path / "sal"
    assert main(["saliency", str(tiny_fixed), str(IMAGE), "-o", str(out), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    png = cv2.imread(next(f for f in files if f.endswith(".png")))
    assert png.shape == (300, 451, 3)  # the bundled photo's shape, not the model's square input
    assert np.load(next(f for f in files if f.endswith(".npy"))).shape == (32, 32, 3)


def test_cam_overlay_option(tiny_fixed, tmp_path, capsys):
    for style in ("blend", "additive"):
        assert main(["cam", str(tiny_fixed), str(IMAGE), "--overlay", style, "-o", str(tmp_path / style),
                     "--json"]) == 0
    capsys.readouterr()
    blend = cv2.imread(str(next((tmp_path / "blend").glob("*_overlay.png"))))
    additive = cv2.imread(str(next((tmp_path / "additive").glob("*_overlay.png"))))
    assert blend.shape == additive.shape == (300, 451, 3) and not np.array_equal(blend, additive)


def _report_images(page: str) -> list[tuple[str, np.ndarray]]:
    found = re.findall(r'<figure[^>]*><img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', page)
    return [(alt, cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR))
            for alt, data in found]


def test_report_draws_on_the_photo_and_captions_say_the_channel_count(tiny_fixed):
    import convlens

    page, _ = convlens.report(tiny_fixed, str(IMAGE))
    pictures = _report_images(page)
    maps = [img for alt, img in pictures if alt.startswith(("gradcam", "vanilla", "smoothgrad", "guided"))]
    assert maps and all(img.shape[:2] == (300, 451) for img in maps)
    captions = [alt for alt, _ in pictures if "channels" in alt]
    assert captions and all(re.search(r": all (8|16) channels$", c) for c in captions), captions
    wide = re.findall(r"<figure class='wide'>", page)
    assert len(wide) >= len(captions)  # a grid of 8 or 16 channels in a row is wide


def test_offline_imagenet_weights_say_so_at_once(monkeypatch, tmp_path):
    from convlens.converters import downloads
    from convlens.engine.errors import ConvlensError

    for var in ("TORCH_HOME", "KERAS_HOME", "HF_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))  # empty caches
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def no_network(*_a, **_k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(downloads.socket, "create_connection", no_network)
    from convlens.converters.torch_converter import torchvision_model

    with pytest.raises(ConvlensError, match=r"^Cannot download ImageNet weights for resnet18: download\.pytorch\.org "
                                            r"cannot be reached \(its name does not resolve"):
        torchvision_model("resnet18", "imagenet")
    (tmp_path / "TORCH_HOME" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "TORCH_HOME" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"")
    assert downloads.weights_cached("torch", "resnet18")  # a cached file: the framework is asked, no probe
    assert downloads.failure_cause(Exception("URL fetch failure on https://x: None -- no route\nmore")) == \
        "URL fetch failure on https://x: None -- no route"
    assert downloads.failure_cause(Exception()) == "Exception"


def test_sample_set_without_scikit_image_is_one_sentence(tmp_path):
    code = ("import sys, runpy; sys.modules['skimage'] = None; sys.argv = ['sample_set', sys.argv[1]]; "
            "runpy.run_module('convlens.engine.evaluation.sample_set', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "set")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: The sample set is built from scikit-image's photos: pip install scikit-image."
