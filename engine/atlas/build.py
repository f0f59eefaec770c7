"""`convlens atlas`: the dataset pass (scan.py), feature visualizations of every chosen unit (filters.py, one
batched run per layer), each unit's top images cropped to its receptive field (receptive_field.py), the classes
each unit pushes up (pushes.py), and the site (site.py), with its data in data.json. A folder holding an
unfinished atlas run resumes it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..model.tokens import token_grid
from ..render.images import image_paths, resize
from ..render.pictures import encode_png
from ..render.progress import Progress
from ..techniques.common import model_size, parse_channels, prepare
from ..techniques.filters import visualize_filters
from .pushes import class_pushes
from .ray_scan import scan_on_ray, visualize_on_ray
from .receptive_field import receptive_fields
from .scan import Plan, scan, shard_folder, top_images
from .site import slug, write_site
from .stages import stage_layers

THUMB = 128  # pixels of the pictures on the pages
BINS = 24


def build_atlas(model: Model, images, site, *, layers="auto", units="0-15", top: int = 9, recipe: str = "chollet",
                steps: int | None = None, size: int | None = None, shard_size: int = 32, force: bool = False,
                quiet: bool = True, diversity: int = 1, ray: str | None = None, workers: int | None = None) -> dict:
    """Write the atlas of `model` over `images` (files or folders) into the folder `site`; returns data.json's
    content. `units` ('0-15', 'all', ...) applies to every layer, clipped to its channel count; `diversity` N
    gives each unit N feature visualizations pushed apart (Lucid's diversity term)."""
    site = Path(site)
    _check_folder(site, force)
    if workers is not None and ray is None:
        raise ConvlensError("--workers applies to Ray runs (--ray auto|ADDRESS).")
    if workers is not None and workers < 1:
        raise ConvlensError(f"--workers must be 1 or more, not {workers}.")
    if ray is not None and not model.path:
        raise ConvlensError("A Ray run loads the model in every worker: give it as a file.")
    if top < 1 or shard_size < 1 or diversity < 1:
        raise ConvlensError(f"--top, --shard-size and --diversity must be 1 or more, not {top}, {shard_size} and "
                            f"{diversity}.")
    names = stage_layers(model) if layers in (None, "auto") else [n.strip() for n in str(layers).split(",") if n]
    if model.input_spec.size:
        grid_size = tuple(model.input_spec.size)
    else:
        grid_size = (size, size) if size else model_size(model)
    shapes = model.shapes.complete(grid_size)
    chosen = {}
    for name in names:
        info = model.layer(name)
        shape = shapes.get(info.tensor)
        tokens = token_grid(model, info.tensor, shapes) if shape and len(shape) == 3 else None
        if tokens is None and (not shape or len(shape) != 4 or info.layout not in ("NCHW", "NHWC")):
            raise ConvlensError(f"Layer {name!r} has no channel grid (shape {shape}, layout {info.layout}); an atlas "
                                "needs convolutional layers or a transformer's patch-token layers.")
        channels = shape[2] if tokens is not None else shape[3] if info.layout == "NHWC" else shape[1]
        wanted = parse_channels("all" if units == "all" else _clip(units, channels), channels, "--units", "Unit")
        chosen[info.name] = wanted
    paths = sorted(str(p) for p in image_paths(list(images) if isinstance(images, (list, tuple)) else [images]))
    if not paths:
        raise ConvlensError("No images given; an atlas needs a set of images.")
    plan = Plan(str(model.path), list(chosen), chosen, paths, list(grid_size), shard_size)
    with Progress(len(paths), "atlas images", quiet) as progress:
        on_ray = None if ray is None else (lambda missing, finished: scan_on_ray(ray, model, plan, missing, workers,
                                                                                 finished))
        result = scan(model, plan, site, progress, on_ray)
    fields = receptive_fields(model, grid_size)
    pushes = class_pushes(model, paths, chosen, grid_size)
    data = {"model": Path(model.path).name if model.path else "model", "images": paths, "top": top,
            "recipe": recipe, "size": list(grid_size), "layers": [],
            "pushes": None if pushes is None else {"classes": pushes.classes, "images": pushes.images,
                                                   "labels": [model.label(c) for c in pushes.classes]}}
    needed = set()
    tops = {layer: top_images(result.maxima[layer], min(top, len(paths))) for layer in chosen}
    for layer in chosen:
        needed.update(int(i) for i in tops[layer].ravel())
    fitted = {i: prepare(model, [paths[i]], grid_size)[0].astype(np.uint8) for i in sorted(needed)}
    for i, picture in fitted.items():
        _png(site / "img" / "images" / f"{i}.png", resize(picture, (THUMB, THUMB)))
    missing = {layer: wanted for layer, wanted in chosen.items() if not _visuals_done(site, layer, wanted, diversity)}
    if ray is not None and missing:  # one Ray task per layer; the driver writes the pictures
        for layer, images in visualize_on_ray(ray, model, missing, recipe, steps, size, diversity).items():
            _write_visuals(site, layer, chosen[layer], diversity, images)
    with Progress(len(chosen), "atlas layers", quiet) as progress:
        for layer, wanted in chosen.items():
            entry = _layer_data(model, layer, wanted, result, tops[layer], fields, fitted, paths, site, recipe, steps,
                                size, diversity)
            if pushes is not None:
                for j, unit in enumerate(entry["units"]):
                    row = pushes.push[layer][j]
                    # a push of exactly 0 is no path to the scores (a transformer's last patch tokens: the head
                    # reads the class token), not a class that the unit pushes a little
                    unit["pushes"] = [{"class": pushes.classes[c], "label": model.label(pushes.classes[c]),
                                       "value": float(row[c])} for c in np.argsort(-row, kind="stable")[:5]
                                      if row[c] != 0]
            data["layers"].append(entry)
            progress.advance()
    (site / "data.json").write_text(json.dumps(data, indent=1))
    write_site(site, data)
    return data


def _layer_data(model, layer, wanted, result, top_rows, fields, fitted, paths, site, recipe, steps, size,
                diversity) -> dict:
    info = model.layer(layer)
    grid = result.grids[layer]
    field = fields.get(info.tensor)
    s = slug(layer)
    names = _visual_names(layer, wanted, diversity)
    if not _visuals_done(site, layer, wanted, diversity):  # a resumed run keeps the pictures it made
        made = visualize_filters(model, layer, list(wanted), recipe, steps, size, diversity=diversity)
        _write_visuals(site, layer, wanted, diversity, made.images)
    maxima = result.maxima[layer]
    units = []
    for j, u in enumerate(wanted):
        top = []
        for k, i in enumerate(top_rows[j]):
            i = int(i)
            y, x = divmod(int(result.where[layer][i, j]), grid[1])
            picture = fitted[i]
            box = field.box(y, x, *picture.shape[:2]) if field else (0, 0, *picture.shape[:2])
            crop = picture[box[0]:box[2], box[1]:box[3]]
            _png(site / "img" / s / f"{u}_crop{k}.png", cv2.resize(crop, (THUMB, THUMB),
                                                                   interpolation=cv2.INTER_NEAREST))
            top.append({"index": i, "path": paths[i], "value": float(maxima[i, j]), "y": y, "x": x,
                        "box": [int(v) for v in box], "image": f"img/images/{i}.png",
                        "crop": f"img/{s}/{u}_crop{k}.png"})
        counts, edges = np.histogram(maxima[:, j], bins=BINS)
        _png(site / "img" / s / f"{u}_hist.png", _bars(counts))
        units.append({"unit": int(u), "top": top, "visualization": names[u][0], "visualizations": names[u],
                      "histogram": f"img/{s}/{u}_hist.png", "counts": counts.tolist(),
                      "edges": [float(e) for e in edges],
                      "field": (f"{field.size[0]:.0f}x{field.size[1]:.0f} pixels" if field else
                                "field not traced: the whole image")})
    return {"name": layer, "grid": list(grid), "units": units,
            "field": [field.size[0], field.size[1]] if field else None}


def _visual_names(layer: str, wanted, diversity: int) -> dict:
    """{unit: its feature visualizations' paths in the site}."""
    s = slug(layer)
    return {u: [f"img/{s}/{u}_vis{k if k else ''}.png" for k in range(diversity)] for u in wanted}


def _visuals_done(site: Path, layer: str, wanted, diversity: int) -> bool:
    return all((site / n).exists() for names in _visual_names(layer, wanted, diversity).values() for n in names)


def _write_visuals(site: Path, layer: str, wanted, diversity: int, images) -> None:
    paths = [site / n for names in _visual_names(layer, wanted, diversity).values() for n in names]
    for path, picture in zip(paths, images):  # N images per unit, in unit order
        _png(path, resize(picture, (THUMB, THUMB)))


def _bars(counts: np.ndarray, width: int = 288, height: int = 96) -> np.ndarray:
    """A histogram as a small bar chart (white background)."""
    img = np.full((height, width, 3), 255, np.uint8)
    step = width // len(counts)
    peak = max(int(counts.max()), 1)
    for b, c in enumerate(counts):
        top = height - 1 - int((height - 4) * c / peak)
        img[top:height - 1, b * step + 1:(b + 1) * step - 1] = (70, 110, 180)
    return img


def _clip(units: str, channels: int) -> str:
    """'0-63' on a 32-channel layer is its 0-31: one --units for layers of different widths."""
    out = []
    for part in str(units).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            if a.strip().isdigit() and b.strip().isdigit() and int(a) < channels:
                out.append(f"{int(a)}-{min(int(b), channels - 1)}")
                continue
        if part.isdigit() and int(part) >= channels:
            continue
        out.append(part)
    if not out:  # never a unit nobody asked for
        raise ConvlensError(f"--units {units} names no unit of a layer with {channels} channels (0-{channels - 1}); "
                            "give units that layer has.")
    return ",".join(out)


def _check_folder(site: Path, force: bool) -> None:
    """A new folder, an atlas run to resume, or (with force) an atlas folder to start again: never a folder of
    the user's other files."""
    if site.exists() and not site.is_dir():
        raise ConvlensError(f"Output {site} is a file; give a folder for the atlas.")
    ours = shard_folder(site).parent.exists()
    if site.exists() and any(site.iterdir()) and not ours:
        raise ConvlensError(f"{site} is a folder with other files in it; give an empty or new folder for the atlas.")
    if ours and force:
        for part in (".atlas", "img", "units", "layers"):
            shutil.rmtree(site / part, ignore_errors=True)


def _png(path: Path, picture: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(picture))

