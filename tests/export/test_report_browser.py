"""The HTML report in a real browser: headless Chromium (Debian's package; .ci/run installs it)."""
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from convlens.engine.export.report import build_report
from convlens.engine.render.images import sample_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, request):
    import torch

    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.model.onnx_file import save_onnx

    folder = tmp_path_factory.mktemp("report")
    model = load(save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), preprocess="tf"),
                           folder / "lite0.onnx"))
    cv2.imwrite(str(folder / "cat.png"), sample_image()[..., ::-1].astype(np.uint8))
    page, _ = build_report(model, [str(folder / "cat.png")], "browser test", filter_steps=4)
    path = folder / "report.html"
    path.write_text(page)
    return path


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (bash .ci/run installs it)")
def test_every_image_loads_and_the_page_is_not_blank(report_file, tmp_path):
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", report_file.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load script did not run"
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 12
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}2", "--window-size=1280,2000",
                    f"--screenshot={shot}", report_file.as_uri()], capture_output=True, timeout=120)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1280)
    # not blank: some of it is text and pictures, not all one color
    assert img.std() > 20 and (img < 200).mean() > 0.05


# appended to a copy of the report: measures the wide figures and clicks the first picture, then writes what it
# found into the body's data attributes, which --dump-dom shows
PROBE = """<script>window.addEventListener('load',()=>{
const page=document.body.clientWidth-parseFloat(getComputedStyle(document.body).paddingLeft)
 -parseFloat(getComputedStyle(document.body).paddingRight);
const wide=[...document.querySelectorAll('figure.wide img')].map(i=>i.getBoundingClientRect().width/page);
document.body.dataset.wideShare=wide.length?Math.min(...wide).toFixed(3):'none';
const first=document.querySelector('figure img');first.click();
const full=document.getElementById('full-img');
document.body.dataset.zoom=getComputedStyle(document.getElementById('full')).display+' '
 +(full.src===first.src)+' '+full.naturalWidth+'/'+first.naturalWidth;});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (bash .ci/run installs it)")
def test_wide_figures_take_the_page_and_a_click_shows_full_size(report_file, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report_file.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
    share = re.search(r'data-wide-share="([^"]+)"', dom)
    assert share and share.group(1) != "none" and float(share.group(1)) >= 0.9, share and share.group(1)
    zoom = re.search(r'data-zoom="(\w+) (\w+) (\d+)/(\d+)"', dom)
    assert zoom and zoom.group(1) == "block" and zoom.group(2) == "true" and zoom.group(3) == zoom.group(4) != "0"
