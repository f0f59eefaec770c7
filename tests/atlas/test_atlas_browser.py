"""A small atlas in headless Chromium (Debian's package; .ci/run installs it): every page opens and every picture
on it decodes in the browser, every link leads to a page of the site, and the index's search (run through
index.html#q=TEXT) lists units by number and by the class they push up, each hit a page that exists."""
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import cv2
import numpy as np
import pytest

import convlens

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]
# appended to a copy of a page: after load, the count of decoded pictures and every link's resolved address
PROBE = """<script>window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.decoded=imgs.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+imgs.length;
document.body.dataset.links=[...document.querySelectorAll('a')].map(a=>a.href).join(' ');
document.body.dataset.hits=[...document.querySelectorAll('#hits a')].map(a=>a.href).join(' ');});</script>"""


@pytest.fixture(scope="module")
def site(tiny_torch, tmp_path_factory):
    folder = tmp_path_factory.mktemp("atlas")
    rng = np.random.default_rng(9)
    images = folder / "images"
    images.mkdir()
    for k in range(6):
        cv2.imwrite(str(images / f"{k}.png"), rng.uniform(0, 255, (32, 32, 3)).astype(np.uint8))
    data = convlens.atlas(tiny_torch["path"], [str(images)], folder / "site", layers="0,3", units="0-2", top=3,
                          steps=2)
    return folder / "site", data


def _visit(page: Path, profile: Path, fragment: str = "", read: str = "links") -> tuple[str, list[Path]]:
    probed = page.with_name(page.stem + ".probe.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                              probed.as_uri() + fragment], capture_output=True, text=True, timeout=120).stdout
    finally:
        probed.unlink()
    decoded = re.search(r'data-decoded="(\d+)/(\d+)"', dom)
    assert decoded, f"{page}: the probe did not run"
    assert decoded.group(1) == decoded.group(2), f"{page}: {decoded.group(0)} pictures decoded"
    links = re.search(rf'data-{read}="([^"]*)"', dom).group(1).split()
    return dom, [Path(unquote(urlparse(link).path)) for link in links]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (bash .ci/run installs it)")
def test_every_page_opens_with_its_pictures_and_every_link_and_search_hit_exists(site, tmp_path):
    folder, data = site
    pages = sorted(p for p in folder.rglob("*.html"))
    assert len(pages) == 1 + 2 + 6
    for page in pages:
        _, links = _visit(page, tmp_path / "profile")
        for link in links:
            assert link.exists() and link.suffix == ".html", (page, link)
    _, hits = _visit(folder / "index.html", tmp_path / "profile", "#q=2", "hits")
    assert {h.relative_to(folder).as_posix() for h in hits} == {"units/0/2.html", "units/3/2.html"}
    label = data["layers"][1]["units"][0]["pushes"][0]["label"]
    dom, hits = _visit(folder / "index.html", tmp_path / "profile", f"#q={quote(label)}", "hits")
    assert f"pushes up {label}" in dom
    pushing = {f"units/{l['name']}/{u['unit']}.html" for l in data["layers"] for u in l["units"]
               if any(p["label"] == label and p["value"] > 0 for p in u["pushes"])}
    assert pushing and {h.relative_to(folder).as_posix() for h in hits} == pushing
