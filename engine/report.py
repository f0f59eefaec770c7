"""A self-contained HTML report (images embedded as data URIs) of every technique on a model."""
from __future__ import annotations

import base64
import html

import numpy as np

from .model import Model
from .render import channel_grid, colorize, encode_png, filter_grid, jet_overlay, upscale
from .techniques.activations import activations, as_channels, predictions
from .techniques.cam import gradcam
from .techniques.common import prepare
from .techniques.filters import own_size, visualize_filters
from .techniques.layers import layer_table
from .techniques.saliency import saliency, saliency_image

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ccc}figure{display:inline-block;margin:.5em;vertical-align:top;max-width:31%}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 8px;border-bottom:1px solid #eee}"""


def img_tag(arr: np.ndarray, alt: str) -> str:
    """An <img> holding the picture as a PNG data URI (reports are single self-contained files)."""
    data = base64.b64encode(encode_png(arr)).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(arr, caption: str) -> str:
    return f"<figure>{img_tag(arr, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def pick_layers(model: Model, count: int = 3) -> list[str]:
    """Spatial layers spread from early to late, for the activation section."""
    rows = [r for r in layer_table(model) if len(r["shape"]) == 4 and r["kind"] in ("conv", "activation", "other")]
    if not rows:
        return []
    idx = np.linspace(0, len(rows) - 1, count).round().astype(int)
    return list(dict.fromkeys(rows[i]["name"] for i in idx))


def build_report(model: Model, images: list, title: str = "convlens report", filter_layer: str | None = None,
                 methods=("gradcam", "gradcam++", "layercam"), filter_steps: int = 48) -> tuple[str, dict]:
    """The report's HTML, and a dict of its key results (predictions, CAM peaks)."""
    spec = model.input_spec
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>Source: {html.escape(model.meta.source)} ({html.escape(model.meta.source_name)}); input {spec.layout} "
             f"{spec.size}, {spec.color}, preprocessing {html.escape(str(spec.preset))}; {len(model.layers)} layers.</p>"]
    results = {"images": []}
    layers = pick_layers(model)
    for path in images:
        pixels = prepare(model, path)
        shown = pixels[0]
        top = predictions(model, pixels)[0]
        parts.append(f"<h2>{html.escape(str(path))}</h2><table><tr><th>class</th><th>label</th><th>probability</th></tr>"
                     + "".join(f"<tr><td>{i}</td><td>{html.escape(l)}</td><td>{p:.3f}</td></tr>" for i, l, p in top) + "</table>")
        entry = {"image": str(path), "top5": top, "cams": []}
        parts.append("<h3>Class activation maps</h3>")
        for method in methods:
            for r in gradcam(model, pixels, "top2", "auto", method)[0]:
                parts.append(figure(jet_overlay(shown, r.heatmap), f"{method}: {r.label} at {r.layer}"))
                peak = np.unravel_index(np.argmax(r.heatmap), r.heatmap.shape)
                entry["cams"].append({"method": method, "class": r.class_index, "peak_yx": [int(peak[0]), int(peak[1])]})
        parts.append("<h3>Attributions</h3>")
        for method in ("vanilla", "smoothgrad", "guided-backprop"):
            a = saliency(model, pixels, "top", method, samples=12)[0]
            parts.append(figure(saliency_image(a.saliency), f"{method} for {a.label}"))
        parts.append("<h3>Intermediate activations</h3>")
        acts = activations(model, pixels, layers)
        for name in layers:
            grid = upscale(colorize(channel_grid(as_channels(model, model.layer(name), acts[name])[0][:64])))
            parts.append(figure(grid, f"{name}: first 64 channels"))
        results["images"].append(entry)
    if filter_layer is None and layers:
        filter_layer = layers[len(layers) // 2]
    if filter_layer:
        res = visualize_filters(model, filter_layer, "0-7", "lucid", steps=filter_steps,
                                size=None if own_size(model) else 128)  # transformers run at their own size
        parts.append(f"<h2>Filter patterns of {html.escape(filter_layer)}</h2>" + figure(filter_grid(res.images),
                     f"filters 0-7, lucid recipe, {filter_steps} steps"))
    # for headless checks: the body says how many images decoded, e.g. data-images-loaded="13/13"
    parts.append("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                 "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});</script>")
    parts.append("</body></html>")
    return "\n".join(parts), results
