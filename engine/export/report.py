"""A self-contained HTML report (images embedded as data URIs) of every technique on a model."""
from __future__ import annotations

import html

import numpy as np

from ..model.model import Model
from ..model.output_targets import OutputTarget
from ..render.html_page import figure, page
from ..render.images import load_image, to_photo
from ..render.pictures import channel_grid, colorize, draw_box, filter_grid, overlay, saliency_image, upscale
from ..render.progress import Progress
from ..techniques.activations import activations, as_channels, predictions
from ..techniques.cam import gradcam
from ..techniques.common import fit_to_model, prepare
from ..techniques.filters import own_size, visualize_filters
from ..techniques.layers import layer_table
from ..techniques.output_inputs import detection_layer, photo_detections
from ..techniques.saliency import saliency

CSS = """body{max-width:1100px}img{max-width:100%}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:31%}
table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 8px;border-bottom:1px solid #eee}"""


def channels_caption(name: str, shown: int, total: int) -> str:
    return f"{name}: all {total} channels" if shown == total else f"{name}: first {shown} of {total} channels"


def pick_layers(model: Model, count: int = 3) -> list[str]:
    """Spatial layers spread from early to late, for the activation section."""
    rows = [r for r in layer_table(model) if len(r["shape"]) == 4 and r["kind"] in ("conv", "activation", "other")]
    if not rows:
        return []
    idx = np.linspace(0, len(rows) - 1, count).round().astype(int)
    return list(dict.fromkeys(rows[i]["name"] for i in idx))


def build_report(model: Model, images: list, title: str = "convlens report", filter_layer: str | None = None,
                 methods=("gradcam", "gradcam++", "layercam"), filter_steps: int = 48,
                 quiet: bool = True) -> tuple[str, dict]:
    """The report's HTML, and a dict of its key results (predictions, CAM peaks). Maps are drawn on each photo
    at its own shape (through the input's resize policy), as `cam` draws them."""
    spec = model.input_spec
    parts = [
        f"<p>Source: {html.escape(model.meta.source)} ({html.escape(model.meta.source_name)}); input {spec.layout} "
        f"{spec.size}, {spec.color}, preprocessing {html.escape(str(spec.preset))}; {len(model.layers)} layers.</p>"
    ]
    results = {"images": []}
    layers = pick_layers(model)
    if filter_layer is None and layers:
        filter_layer = layers[len(layers) // 2]
    placed = model.placed()  # the techniques take prepared pixels as they are (no second crop); compiled once
    with Progress(3 * len(images) + bool(filter_layer), "report sections", quiet) as progress:
        for path in images:
            photo = load_image(path) if isinstance(path, str) else np.asarray(path)
            _, place, size = fit_to_model(model, photo)
            pixels = prepare(model, [photo])
            name = path if isinstance(path, str) else "image"
            if model.detector is not None and model.target is None:
                entry = {"image": name, "detections": [], "cams": []}
                parts += _detector_sections(model, photo, pixels, name, methods, entry)
                progress.advance(2)
                parts += _activation_section(placed, pixels, layers)
                progress.advance()
                results["images"].append(entry)
                continue
            top = predictions(placed, pixels)[0]
            parts.append(
                f"<h2>{html.escape(name)}</h2><table><tr><th>class</th><th>label</th><th>probability</th></tr>"
                + "".join(f"<tr><td>{i}</td><td>{html.escape(l)}</td><td>{p:.3f}</td></tr>" for i, l, p in top)
                + "</table>"
            )
            entry = {"image": name, "top5": top, "cams": []}
            parts.append("<h3>Class activation maps</h3>")
            for method in methods:
                for r in gradcam(placed, pixels, "top2", "auto", method)[0]:
                    heat = to_photo(r.heatmap, photo.shape[:2], size, place)
                    parts.append(figure(overlay(photo, heat), f"{method}: {r.label} at {r.layer}"))
                    peak = np.unravel_index(np.argmax(r.heatmap), r.heatmap.shape)
                    entry["cams"].append(
                        {"method": method, "class": r.class_index, "peak_yx": [int(peak[0]), int(peak[1])]}
                    )
            progress.advance()
            parts.append("<h3>Attributions</h3>")
            for method in ("vanilla", "smoothgrad", "guided-backprop"):
                a = saliency(placed, pixels, "top", method, samples=12)[0]
                parts.append(figure(saliency_image(to_photo(a.saliency, photo.shape[:2], size, place)),
                                    f"{method} for {a.label}"))
            progress.advance()
            parts += _activation_section(placed, pixels, layers)
            progress.advance()
            results["images"].append(entry)
        if filter_layer:
            res = visualize_filters(model, filter_layer, "0-7", "lucid", steps=filter_steps,
                                    size=None if own_size(model) else 128)  # transformers run at their own size
            parts.append(f"<h2>Filter patterns of {html.escape(filter_layer)}</h2>" + figure(filter_grid(res.images),
                         f"filters {', '.join(map(str, res.filters))}, lucid recipe, {filter_steps} steps"))
            progress.advance()
    return page(title, CSS, parts), results


def _activation_section(model: Model, pixels, layers) -> list[str]:
    parts = ["<h3>Intermediate activations</h3>"]
    acts = activations(model, pixels, layers)
    for layer in layers:
        channels = as_channels(model, model.layer(layer), acts[layer])[0]
        grid = upscale(colorize(channel_grid(channels[:64])))
        parts.append(figure(grid, channels_caption(layer, min(len(channels), 64), len(channels))))
    return parts


def _detector_sections(model: Model, photo, pixels, name: str, methods, entry: dict, shown: int = 3) -> list[str]:
    """A detector's image: its detections (up to 10 listed), each method's map of the top `shown` with its box
    drawn (each at the layer `cam --box` picks), and the input gradient of the top one."""
    found = photo_detections(model, photo)
    _, place, size = fit_to_model(model, photo)
    parts = [f"<h2>{html.escape(name)}</h2>"]
    if not found:
        return parts + ["<p>No detection scores above 0.25.</p>"]
    parts.append("<table><tr><th>rank</th><th>label</th><th>score</th><th>box (x1, y1, x2, y2)</th></tr>" + "".join(
        f"<tr><td>{k}</td><td>{html.escape(model.label(d.cls))}</td><td>{d.score:.3f}</td>"
        f"<td>{', '.join(f'{v:.0f}' for v in d.box)}</td></tr>" for k, d in enumerate(found[:10])) + "</table>")
    entry["detections"] = [{"rank": k, "class": d.cls, "label": model.label(d.cls), "score": d.score,
                            "box": [round(v, 2) for v in d.box]} for k, d in enumerate(found[:10])]
    picked = found[:shown]
    # one score per detection, programs shared; it takes the prepared pixels as they are
    view = model.explaining(OutputTarget(detections=tuple(picked))).placed()
    parts.append("<h3>Class activation maps of the detections</h3>")
    for method in methods:
        for k, d in enumerate(picked):
            r = gradcam(view, pixels, k, detection_layer(model, d, "auto"), method)[0][0]
            heat = to_photo(r.heatmap, photo.shape[:2], size, place)
            caption = f"{k}: {model.label(d.cls)} {d.score:.2f}"
            parts.append(figure(draw_box(overlay(photo, heat), d.box, caption), f"{method}: {caption} at {r.layer}"))
            peak = np.unravel_index(np.argmax(r.heatmap), r.heatmap.shape)
            entry["cams"].append({"method": method, "detection": k, "peak_yx": [int(peak[0]), int(peak[1])]})
    parts.append("<h3>Attribution</h3>")
    a = saliency(view, pixels, 0, "vanilla")[0]
    parts.append(figure(saliency_image(to_photo(a.saliency, photo.shape[:2], size, place)),
                        f"vanilla gradient for detection 0: {model.label(picked[0].cls)}"))
    return parts
