"""The atlas as a static site: index.html (every layer, a grid of its units), one page per layer and one per unit
(units/LAYER/U.html: its feature visualization, its top images whole and cropped to the unit's receptive field,
its activation distribution, the classes it pushes up most, previous/next links) and a search box for
`layer:unit`, a unit number or a class name (the units that push that class up most; index.html#q=TEXT opens
with that search done). Pictures are PNG files beside the pages; nothing is fetched from a network."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid a{text-decoration:none;color:#333;font-size:.75em;text-align:center}
.grid img,.pair img{width:96px;height:96px;object-fit:cover;border:1px solid #ccc;display:block}
.pair{display:inline-block;margin:4px;font-size:.75em;text-align:center}nav a{margin-right:1em}
#hits li{display:inline-block;margin:2px 6px}"""


def slug(name: str) -> str:
    """A layer name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _page(title: str, body: list[str], depth: int) -> str:
    up = "../" * depth
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><nav><a href='{up}index.html'>atlas</a></nav>"
            f"<h1>{html.escape(title)}</h1>")
    return "\n".join([head, *body, "</body></html>"])


def class_index(data: dict) -> dict:
    """{class label: the indices (in page order) of the units whose top-5 pushed classes include it (with a
    positive push), the unit that pushes it most first}."""
    hits: dict = {}
    k = 0
    for layer in data["layers"]:
        for u in layer["units"]:
            for p in u.get("pushes", []):
                if p["value"] > 0:
                    hits.setdefault(p["label"], []).append((-p["value"], k))
            k += 1
    return {label: [i for _, i in sorted(rows)] for label, rows in sorted(hits.items())}


def unit_page_path(layer: str, unit: int) -> str:
    return f"units/{slug(layer)}/{unit}.html"


def write_site(site: Path, data: dict) -> list[Path]:
    """The pages for `data` (build.py's atlas data: layers, units, their pictures and top images); returns them."""
    written = []
    keys = [(layer["name"], u["unit"]) for layer in data["layers"] for u in layer["units"]]
    search = ("<p><input id='q' placeholder='unit number, layer:unit or class name' size='36'></p><ul id='hits'>"
              "</ul><script>"
              f"const units={json.dumps([f'{layer}:{unit}' for layer, unit in keys])};"
              f"const pages={json.dumps([unit_page_path(layer, unit) for layer, unit in keys])};"
              f"const pushers={json.dumps(class_index(data))};"
              "const find=q=>{const ul=document.getElementById('hits');ul.innerHTML='';if(!q)return;"
              "const add=(i,text)=>{const li=document.createElement('li');"
              "li.innerHTML=`<a href='${pages[i]}'>${text}</a>`;ul.appendChild(li);};"
              "units.forEach((u,i)=>{const n=u.slice(u.lastIndexOf(':')+1);"
              "if(n===q||u===q||(q.includes(':')&&u.startsWith(q)))add(i,u);});"
              "if(/^[0-9:]/.test(q))return;const low=q.toLowerCase();"
              "Object.entries(pushers).forEach(([label,hits])=>{if(label.toLowerCase().includes(low))"
              "hits.forEach(i=>add(i,`${units[i]} pushes up ${label}`));});};"
              "const box=document.getElementById('q');box.addEventListener('input',e=>find(e.target.value.trim()));"
              # index.html#q=espresso opens with that search done: a search can be linked
              "if(location.hash.startsWith('#q=')){box.value=decodeURIComponent(location.hash.slice(3));"
              "find(box.value.trim());}</script>")
    body = [f"<p>{html.escape(data['model'])}: {sum(len(l['units']) for l in data['layers'])} units of "
            f"{len(data['layers'])} layers over {len(data['images'])} images (top {data['top']} per unit).</p>",
            search]
    for layer in data["layers"]:
        s = slug(layer["name"])
        cells = "".join(f"<a href='{unit_page_path(layer['name'], u['unit'])}'><img src='{u['visualization']}' "
                        f"alt='{html.escape(layer['name'])} unit {u['unit']}'>{u['unit']}</a>" for u in layer["units"])
        body.append(f"<h2><a href='layers/{s}.html'>{html.escape(layer['name'])}</a> "
                    f"({layer['grid'][0]}x{layer['grid'][1]} grid)</h2><div class='grid'>{cells}</div>")
    written.append(_write(site / "index.html", _page("convlens atlas", body, 0)))
    for li, layer in enumerate(data["layers"]):
        s = slug(layer["name"])
        rows = []
        for u in layer["units"]:
            crops = "".join(f"<img src='../{t['crop']}' alt='crop {k}'>" for k, t in enumerate(u["top"][:3]))
            rows.append(f"<div class='pair'><a href='../{unit_page_path(layer['name'], u['unit'])}'>"
                        f"<img src='../{u['visualization']}' alt='unit {u['unit']}'>unit {u['unit']}</a>"
                        f"<div class='grid'>{crops}</div></div>")
        written.append(_write(site / "layers" / f"{s}.html",
                              _page(f"{layer['name']}: {len(layer['units'])} units", rows, 1)))
        for ui, u in enumerate(layer["units"]):
            written.append(_write(site / unit_page_path(layer["name"], u["unit"]), _unit_page(data, li, ui)))
    return written


def _unit_page(data: dict, li: int, ui: int) -> str:
    layer = data["layers"][li]
    u = layer["units"][ui]
    here = f"{slug(layer['name'])}/{u['unit']}.html"
    flat = [(l["name"], v["unit"]) for l in data["layers"] for v in l["units"]]
    at = flat.index((layer["name"], u["unit"]))
    nav = [f"<a href='../../layers/{slug(layer['name'])}.html'>{html.escape(layer['name'])}</a>"]
    if at > 0:
        nav.append(f"<a href='../../{unit_page_path(*flat[at - 1])}'>previous ({html.escape(flat[at - 1][0])} "
                   f"{flat[at - 1][1]})</a>")
    if at + 1 < len(flat):
        nav.append(f"<a href='../../{unit_page_path(*flat[at + 1])}'>next ({html.escape(flat[at + 1][0])} "
                   f"{flat[at + 1][1]})</a>")
    tops = "".join(f"<div class='pair'><img src='../../{t['image']}' alt='top {k}'><img src='../../{t['crop']}' "
                   f"alt='field {k}'>{t['value']:.3g}<br>{html.escape(Path(t['path']).name)}</div>"
                   for k, t in enumerate(u["top"]))
    body = [f"<nav>{' '.join(nav)}</nav>", f"<p id='unit' data-page='{html.escape(here)}'>"
            f"feature visualization ({data['recipe']}), then the images that excite it most, each whole and cropped "
            f"to the unit's receptive field around its maximum ({u['field']}).</p>",
            "".join(f"<div class='pair'><img src='../../{v}' alt='feature visualization {k}'>feature "
                    f"visualization{f' {k}' if len(u['visualizations']) > 1 else ''}</div>"
                    for k, v in enumerate(u["visualizations"]))
            + f"<div class='pair'><img src='../../{u['histogram']}' alt='distribution' "
            f"style='width:288px'>maximum activation over the set</div>", f"<h2>top {len(u['top'])}</h2>{tops}"]
    if data.get("pushes") and not u.get("pushes"):
        body.append("<h2>classes it pushes up most</h2><p>none: the unit has no path to the class scores (a "
                    "transformer's head reads its class token, not these patch tokens).</p>")
    if u.get("pushes"):
        n = data["pushes"]["images"]
        rows = "".join(f"<tr><td>{html.escape(p['label'])}</td><td>{p['value']:+.4g}</td></tr>" for p in u["pushes"])
        body.append(f"<h2>classes it pushes up most</h2><p>d logit / d (a shift of the unit's whole map), averaged "
                    f"over {n} images, among the {len(data['pushes']['classes'])} classes the set's images predict "
                    f"(each image's top 3).</p><table id='pushes'><tr><th>class</th><th>push</th></tr>{rows}</table>")
    return _page(f"{layer['name']} unit {u['unit']}", body, 2)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
