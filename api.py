"""The public Python API: one function per command, named as the command, taking its options as keywords.

Each returns arrays and result objects and writes nothing (evaluate alone writes: its run folder is how a long
run survives being stopped); `convlens.cli` calls these and writes the files.
`model` is an .onnx path or a `Model` from `load`; `images` is a path, a folder, an RGB array or a list.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .converters import convert as convert_source
from .converters.common import input_size_arg
from .converters.example_files import write_example_files
from .converters.framework_reference import framework_reference, reference_weights
from .converters.frameworks import torch_module
from .converters.pretrained import efficientnet_lite0
from .converters.quiet import quiet_frameworks
from .converters.torch_converter import convert_module
from .engine.atlas.build import build_atlas
from .engine.checks.compare import compare as compare_models
from .engine.checks.sanity import cascading_randomization
from .engine.checks.verification import verify as verify_against
from .engine.errors import ConvlensError
from .engine.evaluation.run import evaluate as run_evaluation
from .engine.export.detector_explainer import export_detector_explainer
from .engine.export.explainer import export_explainer
from .engine.export.report import build_report
from .engine.metadata import InputRecipe
from .engine.model.annotate import annotate as write_annotated
from .engine.model.model import Model
from .engine.model.model import load as load_model
from .engine.model.output_targets import OutputTarget, detection_objective
from .engine.model.onnx_file import check_writable, save_large_onnx, save_onnx
from .engine.render.images import image_paths, sample_image, to_photo
from .engine.render.progress import Progress
from .engine.techniques.activations import activations as layer_outputs
from .engine.techniques.activations import as_channels
from .engine.techniques.attention_maps import head_maps
from .engine.techniques.cam import gradcam_with_predictions
from .engine.techniques.common import fit_to_model, prepare
from .engine.techniques.filters import visualize_filters
from .engine.techniques.layers import layer_table
from .engine.techniques.output_inputs import (
    box_on_input,
    chosen_detections,
    detection_layer,
    decoded_sequences,
    like_vector,
    photo_detections,
    region_on_input,
)
from .engine.techniques.saliency import saliency as attribute


def load(path: str | os.PathLike, *, preprocess: str | None = None, channel_order: str | None = None,
         scale=None, mean=None, std=None, resize: str | None = None, crop_fraction=None, pad_value=None,
         layout: str | None = None, scores: str | None = None, labels: str | None = None, device: str = "cpu",
         threads: int = 0, region=None, sequence: bool = False, position: int | None = None, like=None,
         index: int | None = None) -> Model:
    """Open an .onnx file. The input is (pixels[channel_order] * scale - mean) / std, pixels 0..255:
    `preprocess` (caffe, torch, tf, raw) names a preset and `channel_order` (rgb, bgr), `scale` (a number or
    "1/255"), `mean` and `std` (three numbers, or "A,B,C") refine it. `resize` (stretch, center-crop with
    `crop_fraction`, letterbox with `pad_value`) says how a photo becomes the input's size. `layout`
    describes a file without convlens metadata, `scores` names the class-score output where a file has several.

    What to explain when the output is not class scores (`scores` names it where the file has several):
    `region` for a dense map (predicted, all; a box x1,y1,x2,y2 or a mask image is drawn on a photo, so it is
    given to cam or saliency with the images), `sequence` or `position` T for an (N, T, C) sequence, `like` (an
    image, or a vector or .npy file) for an embedding: the cosine similarity, `index` I for the I-th value of
    any output."""

    m = load_model(path, preprocess=preprocess, channel_order=channel_order, scale=scale, mean=mean, std=std,
                   resize=resize, crop_fraction=crop_fraction, pad_value=pad_value, layout=layout, scores=scores,
                   labels=labels, device=device, threads=threads)
    return _explaining(m, None, region=region, sequence=sequence, position=position, like=like, index=index)


def _explaining(m: Model, images, *, region=None, sequence=False, position=None, like=None, index=None) -> Model:
    """The model with the target head the options ask for (engine/model/output_targets.py), or as it is."""
    if region is None and not sequence and position is None and like is None and index is None:
        return m
    mask = None
    if region is not None and str(region) not in ("predicted", "all"):
        if images is None:
            raise ConvlensError(f"--region {region} is drawn on a photo: give it to cam or saliency with the images.")
        mask, region = region_on_input(m, region, images), None
    if like is not None:
        like = like_vector(m, like)
    target = OutputTarget(output=m.explained_output, region=region, region_mask=mask, sequence=bool(sequence),
                          position=position, like=like, index=index)
    return m.explaining(target)


def with_target(model: Model, images=None, **target_options) -> Model:
    """The model explaining what `target_options` ask for (region, sequence, position, like, index: see load); a
    region drawn on a photo (a box or a mask image) needs the `images` it is drawn on."""
    return _explaining(model, _pixels_or_paths(images) if images is not None else None, **target_options)


RECIPE_OPTIONS = ("preprocess", "channel_order", "scale", "mean", "std", "resize", "crop_fraction", "pad_value")
TARGET_OPTIONS = ("region", "sequence", "position", "like", "index")
LOAD_OPTIONS = (*RECIPE_OPTIONS, "layout", "scores", "labels", "device", "threads", *TARGET_OPTIONS)


def _recipe(options: dict):
    """An InputRecipe from keyword options (load's recipe options); a misspelt one is refused, not dropped."""

    unknown = sorted(set(options) - set(RECIPE_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    return InputRecipe(**options)


def _model(model, images=None, **load_options) -> Model:
    targets = {k: load_options.pop(k) for k in TARGET_OPTIONS if k in load_options}
    _check_load_options(model, load_options)
    m = model if isinstance(model, Model) else load(model, **load_options)
    return _explaining(m, images, **targets)


def _check_load_options(model, load_options: dict) -> None:
    unknown = sorted(set(load_options) - set(LOAD_OPTIONS))
    if unknown:  # a misspelt option would otherwise vanish here
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    if isinstance(model, Model) and any(v is not None for v in load_options.values()):
        raise ConvlensError("Load options (the input recipe, layout, scores, labels) apply to a file path; this model "
                            "is loaded already: pass them to convlens.load.")


def _pixels_or_paths(images) -> list:
    """Paths (files, and the images inside folders) stay paths; arrays pass through."""

    items = images if isinstance(images, (list, tuple)) else [images]
    out = []
    for item in items:
        out.extend([str(p) for p in image_paths([item])] if isinstance(item, (str, os.PathLike)) else [item])
    return out


def convert(source: str, output: str | os.PathLike, *, weights: str | None = None, no_top: bool = False,
            input_size=None, labels: str | None = None, force: bool = False, verbose: bool = False, quiet: bool = True,
            **recipe) -> Path:
    """Convert keras:NAME, torch:NAME, timm:NAME, FILE.keras or FILE.pt2 to an .onnx file; returns the path written.
    `recipe`: load's input options (preprocess, channel_order, scale, mean, std, resize, ...), which refine the
    preprocessing recorded; `labels` names the classes (imagenet or a file)."""

    recipe = _recipe(recipe)
    with Progress(1, "conversion", quiet) as progress, quiet_frameworks(verbose):
        path = convert_source(source, output, weights=weights, include_top=not no_top, input_size=input_size,
                              recipe=recipe, labels=labels, force=force)
        progress.advance()
    return path


def annotate(model: str | os.PathLike, output: str | os.PathLike, *, layout: str | None = None,
             scores: str | None = None, labels: str | None = None, input_size=None, force: bool = False,
             **recipe) -> Model:
    """Write a copy of an .onnx file with convlens's metadata (input recipe, layout, scores, labels, input size),
    so every later command reads the description instead of assuming; returns the copy, loaded. `recipe`:
    load's input options (preprocess, channel_order, scale, mean, std, resize, crop_fraction, pad_value)."""

    return write_annotated(model, output, recipe=_recipe(recipe), layout=layout, scores=scores, labels=labels,
                           input_size=input_size_arg(input_size), force=force)


def layers(model, **load_options) -> list[dict]:
    """One row per exposed layer: name, kind, shape and layout."""

    return layer_table(_model(model, **load_options))


def activations(model, image, layers: str | list[str], **load_options) -> dict[str, np.ndarray]:
    """{layer name: its output for the image, in the layer's layout}."""

    names = [n.strip() for n in layers.split(",") if n.strip()] if isinstance(layers, str) else list(layers)
    return layer_outputs(_model(model, **load_options), image, names)


def cam(model, images, *, target="top", layer: str = "auto", method: str = "gradcam", score: str = "logit",
        top: int = 5, head_fusion: str = "mean", discard: float = 0.0, box=None, conf: float = 0.25,
        iou: float = 0.7, box_objective: str = "score", **load_options):
    """(maps, predictions): per image a list of CamResult (one per class) and its top-`top` predictions.
    `head_fusion` (mean, max, min) and `discard` (the fraction of weakest attention dropped) apply to rollout.
    Detectors: `box` K (the K-th detection by score; 0 by default), 'all' or 'x1,y1,x2,y2' (the detection of
    highest IoU with it), among the detections above `conf` after NMS at `iou`; predictions list detections;
    `box_objective` score (the class logit) or score+iou (plus the candidate box's IoU with the box given as
    x1,y1,x2,y2, else with the detected box, where its gradient is zero: the two boxes coincide)."""

    images = _pixels_or_paths(images)
    m = _model(model, images, **load_options)
    if m.detector is not None and m.target is None:
        def run(view, image, picked, layer_name):
            maps, _ = gradcam_with_predictions(view, [image], picked, layer_name, method, score, top=0,
                                               head_fusion=head_fusion, discard=discard)
            return maps[0]

        return _per_detection(m, images, box, conf, iou, top, run, layer, box_objective)
    return gradcam_with_predictions(m, images, _default_class(m, target), layer, method, score, top=top,
                                    head_fusion=head_fusion, discard=discard)


def detections(model, image, *, conf: float = 0.25, iou: float = 0.7, **load_options) -> list:
    """A detector's detections on the photo (box x1, y1, x2, y2 in its pixels, class, score, candidate), highest
    score first: decoded from its YOLO-style head with convlens's NMS, or from its DETR-style pair
    (engine/model/detections.py)."""
    return photo_detections(_model(model, **load_options), image, conf, iou)


def _detection_label(m: Model, d) -> str:
    return f"{m.label(d.cls)} {d.score:.2f} at {', '.join(f'{v:.0f}' for v in d.box)}"


DETECTION_LAYER_RULE = ("auto, detection: the feature map that the detection's level of the head reads (its "
                        "candidate's stride), where the box and class branches part")


def _per_detection(m: Model, images, box, conf, iou, top, run, layer=None, box_objective="score"):
    """Per image: its detections, the ones `box` chooses explained through views whose scores are their logits
    (one run per layer: with layer auto, each detection at the feature map its level reads); results carry each
    detection's index (by score) and '<name> <score>' as label."""
    if box_objective not in ("score", "score+iou"):
        raise ConvlensError(f"--box-objective must be score or score+iou, not {box_objective!r}.")
    maps, tops = [], []
    for image in images:
        found = photo_detections(m, image, conf, iou)
        picks = chosen_detections(found, box)
        groups: dict = {}
        for k in picks:
            groups.setdefault(detection_layer(m, found[k], layer), []).append(k)
        results = []
        for layer_name, group in groups.items():
            chosen = tuple(found[k] for k in group)
            if box_objective == "score+iou" and _is_box(box):  # the IoU with the box the user drew
                given = box_on_input(m, image, [float(v) for v in str(box).split(",")])
                chosen = tuple(dataclasses.replace(d, input_box=given) for d in chosen)
            view = m.explaining(OutputTarget(detections=chosen, box_iou=box_objective == "score+iou"))
            rule = {"layer_rule": DETECTION_LAYER_RULE} if layer == "auto" and layer_name != "auto" else {}
            results += [dataclasses.replace(r, class_index=group[r.class_index], **rule)
                        for r in run(view, image, f"top{len(group)}", layer_name)]
        maps.append(sorted(results, key=lambda r: r.class_index))
        tops.append([(k, _detection_label(m, d), d.score) for k, d in enumerate(found[:top])])
    return maps, tops


def _is_box(box) -> bool:
    return box is not None and str(box).count(",") == 3


def target_of(model) -> dict | None:
    """What a model's output target explains (kind, output, objective), or None where it explains class scores."""
    head = model.target
    if head is None and model.detector is not None:
        return {"kind": "detection", "output": model.detector.logits if model.detector.queries else model.detector.raw,
                "objective": detection_objective(model.detector)}
    if head is None:
        return None
    return {"kind": head.kind, "output": model.explained_output, "objective": head.objective}


def _default_class(m: Model, target):
    """An `index` target explains its value unless a class is named."""
    return m.target.index if target == "top" and m.target is not None and m.target.index is not None else target


def decoded(model, images, **load_options) -> list[str] | None:
    """Per image, the greedy decoding of a sequence output (a CTC recognizer's text), else None."""
    images = _pixels_or_paths(images)
    return decoded_sequences(_model(model, images, **load_options), images)


def attention(model, image, *, block: int, patch: tuple[int, int] | None = None, **load_options) -> np.ndarray:
    """(heads, h, w): per head, the attention of the class token (or of the patch at (row, col)) over the patch
    grid in one block of a transformer (0-based)."""

    return head_maps(_model(model, **load_options), image, block, patch)


def export(model, out=None, *, method: str = "gradcam", layer: str = "auto", steps: int = 32, samples: int = 25,
           seed: int = 0, force: bool = False, epsilon: float = 1e-6, gamma: float = 0.25, input_size=None,
           box=None, max_boxes: int = 10, conf: float = 0.25, iou: float = 0.7, baseline="black", baselines=8,
           stdevs: float = 0.0, **load_options):
    """A standalone explainer graph (uint8 image in; probabilities, class, heatmap, cam, overlay out): returns
    the convlens Explainer (`.proto`, `.layer`, `.notes`), and writes it to `out` when given. `input_size`
    (H, W) fixes the size for a file whose graph leaves it dynamic. Detectors: `box` K or 'all' writes the
    detector explainer instead (boxes, scores, classes, one heatmap and overlay per detection, at most
    `max_boxes`; engine/export/detector_explainer.py). `baseline` (deeplift: black, mean, an image file) and
    `baselines` (deeplift-shap, gradient-shap: N seeded noise images or a folder) and `stdevs` (gradient-shap's
    input noise, drawn from the seed) are baked into the graph."""

    if out is not None:
        out = check_writable(out, force)
    _check_method_parameters(epsilon, gamma, stdevs)
    m = _model(model, **load_options)
    if input_size is not None:
        m = m.with_input_size(input_size_arg(input_size))
    if box is not None or (m.detector is not None and m.target is None):
        explainer = export_detector_explainer(m, box, method, layer, max_boxes, conf, iou)
    else:
        explainer = export_explainer(m, method, layer, steps, samples, seed, epsilon=epsilon, gamma=gamma,
                                     reference=baseline, references=baselines, stdevs=stdevs)
    if out is not None:
        save_large_onnx(explainer.proto, out, force)
    return explainer


def saliency(model, images, *, target="top", method: str = "vanilla", score: str = "logit", samples: int = 25,
             steps: int = 32, seed: int = 0, epsilon: float = 1e-6, gamma: float = 0.25, condition: str | None = None,
             baseline="black", baselines=8, stdevs: float = 0.0, box=None, conf: float = 0.25, iou: float = 0.7,
             box_objective: str = "score", **load_options):
    """One Attribution per image (pixel-space attribution and its saliency map). `samples` and `seed`: SmoothGrad's
    noisy copies; `steps`: Integrated Gradients' path points; `epsilon` and `gamma`: the LRP rules' parameters.
    Relevance methods (input-x-gradient, lrp-*) also give the relevance's sum and the score it started from;
    `condition` 'LAYER:CHANNELS' keeps only those channels' relevance at that layer (concept-conditional
    relevance) and gives every channel's share of the layer's relevance. `baseline` (deeplift): black, blur, mean,
    an image file or pixels; `baselines` (deeplift-shap, gradient-shap): a count of seeded noise images, a folder
    or pixels (K, H, W, 3); gradient-shap draws `samples` points, and adds Gaussian noise of `stdevs` (in the model
    input's units, Captum's stdevs) to the image at each."""

    for name, value in (("samples", samples), ("steps", steps)):
        if value < 1:
            raise ConvlensError(f"--{name} must be 1 or more, not {value}.")
    _check_method_parameters(epsilon, gamma, stdevs)
    images = _pixels_or_paths(images)
    m = _model(model, images, **load_options)
    if m.detector is not None and m.target is None:  # detectors: `box`, `conf`, `iou` as in cam()
        def run(view, image, picked, _layer):
            return attribute(view, [image], picked, method, score, samples=samples, steps=steps, seed=seed,
                             epsilon=epsilon, gamma=gamma, condition=condition, reference=baseline,
                             references=baselines, stdevs=stdevs)

        return [a for per_image in _per_detection(m, images, box, conf, iou, 0, run, None, box_objective)[0]
                for a in per_image]
    return attribute(m, images, _default_class(m, target), method, score, samples=samples,
                     steps=steps, seed=seed, epsilon=epsilon, gamma=gamma, condition=condition, reference=baseline,
                     references=baselines, stdevs=stdevs)


def _check_method_parameters(epsilon: float, gamma: float, stdevs: float = 0.0):
    for name, value in (("epsilon", epsilon), ("gamma", gamma), ("stdevs", stdevs)):
        if not value >= 0:
            raise ConvlensError(f"--{name} must be 0 or more, not {value}.")


def filters(model, layer: str, *, filters="0-7", recipe: str = "chollet", steps: int | None = None,
            size: int | None = None, seed: int = 0, init=None, quiet: bool = True, objective: str = "channel",
            position=None, direction=None, diversity: int = 1, **load_options):
    """A FilterResult: one uint8 image per chosen filter of `layer` (`.images`), the float images, objectives.
    `objective` channel (a filter's mean), neuron (one `position` (row, col), the centre by default), direction
    (cosine with `direction`, a vector or .npy file, over the grid; one image) or deepdream (one image);
    `diversity` N: N images per filter pushed apart by Lucid's diversity term."""

    if isinstance(position, str):
        try:
            position = tuple(int(v) for v in position.split(","))
        except ValueError:
            position = ()
        if len(position) != 2:
            raise ConvlensError("--position must look like ROW,COL (two integers).")
    if isinstance(direction, (str, os.PathLike)):
        if not Path(direction).is_file():
            raise ConvlensError(f"Direction file not found: {direction}.")
        direction = np.load(direction).reshape(-1)
    return visualize_filters(_model(model, **load_options), layer, filters, recipe, steps, size, seed, init,
                             quiet=quiet, objective=objective, position=position, direction=direction,
                             diversity=diversity)


def atlas(model, images, out, *, layers="auto", units="0-15", top: int = 9, recipe: str = "chollet",
          steps: int | None = None, size: int | None = None, shard_size: int = 32, force: bool = False,
          quiet: bool = True, diversity: int = 1, ray: str | None = None, workers: int | None = None,
          **load_options) -> dict:
    """A static site of every chosen unit: its feature visualization, the `top` images of the set that excite it
    (whole and cropped to its receptive field), its activation distribution and the classes it pushes up; returns
    the site's data. `layers` auto takes the first convolution at each grid size; a folder holding an unfinished
    run resumes it. `ray` ("auto" or an address) runs the dataset pass on a Ray cluster with `workers` actors."""
    return build_atlas(_model(model, **load_options), images, out, layers=layers, units=units, top=top,
                       recipe=recipe, steps=steps, size=size, shard_size=shard_size, force=force, quiet=quiet,
                       diversity=diversity, ray=ray, workers=workers)


def compare(model_a, model_b, image, *, layers: list[tuple[str, str]] | None = None, target="top",
            activation_rtol: float = 1e-4, logits_rtol: float = 1e-4, cam_tol: float = 1e-3,
            gradient_rtol: float = 1e-3, filter_psnr: float = 40.0):
    """A Comparison of two files on one image: rows per aligned layer, figures, passed, first_failure."""

    tolerances = {"activation_rtol": activation_rtol, "cam_max_abs": cam_tol, "gradient_rtol": gradient_rtol,
                  "filter_psnr": filter_psnr, "logits_rtol": logits_rtol, "probabilities_atol": logits_rtol}
    return compare_models(_model(model_a), _model(model_b), image, layers, target, tolerances)


def verify(model, *, source: str, weights: str | None = None, image=None, quiet: bool = True, verbose: bool = False,
           **load_options) -> list[dict]:
    """Rows (figure, value, limit, ok): the engine against the source framework's own forward pass and autograd.
    `weights`: none, imagenet or a file; by default the ones the file records (convert's seeded random ones)."""

    m = _model(model, **load_options)
    weights = reference_weights(m.meta, source, weights, Path(m.path).name if m.path else "the model")
    with Progress(2, "verify steps", quiet) as progress, quiet_frameworks(verbose):
        reference = framework_reference(source, weights, m.input_spec)  # the framework's side, as arrays
        progress.advance()
        rows = verify_against(m, reference, sample_image() if image is None else image)
        progress.advance()
    return rows


def sanity(model, image, *, method: str = "gradcam", steps: int = 6, quiet: bool = True, **load_options) -> list[dict]:
    """Cascading weight randomization (Adebayo et al.): Spearman correlation with the original map per step."""

    return cascading_randomization(_model(model, **load_options), image, method, steps, quiet=quiet)


def report(model, images, *, title: str | None = None, quiet: bool = True, filter_steps: int | None = None,
           **load_options) -> tuple[str, dict]:
    """(the report's self-contained HTML, its key results); `filter_steps` for its filter figure."""

    m = _model(model, **load_options)
    extra = {} if filter_steps is None else {"filter_steps": filter_steps}
    return build_report(m, _pixels_or_paths(images), title or f"convlens: {Path(m.path).name if m.path else 'model'}",
                        quiet=quiet, **extra)


def on_photo(model, photo, grid: np.ndarray, **load_options) -> np.ndarray:
    """A map over the model's input (any grid resolution) drawn on `photo` at its own shape, through the input's
    resize policy (render.images.to_photo): pixels the input never saw get 0."""
    m = _model(model, **load_options)
    _, place, size = fit_to_model(m, photo)
    return to_photo(grid, photo.shape[:2], size, place)


def fitted(model, image, **load_options) -> np.ndarray:
    """The image as the model sees it: fitted to its input size by its resize policy (RGB pixels, 0..255)."""
    return prepare(_model(model, **load_options), [image])[0]


def channels(model, layer: str, values: np.ndarray, **load_options) -> np.ndarray:
    """A layer's output (as activations() returns it) as (N, C, h, w): 4-D by its layout, a token layer through
    its patch grid."""
    m = _model(model, **load_options)
    return as_channels(m, m.layer(layer), values)


def example_files(folder, *, force: bool = False) -> tuple[list[Path], list[str]]:
    """Write the files the README's Commands block names into `folder` (converters/example_files.py): returns
    (the files written, a sentence per file that needs an extra that is not installed)."""
    with quiet_frameworks(False):
        return write_example_files(folder, force)


def demo_model(folder, *, force: bool = False, verbose: bool = False) -> tuple[Model, str]:
    """EfficientNet-Lite0 with the ImageNet weights a package ships, converted into `folder` (reused when it is
    there already); returns the model and a line saying which."""
    path = Path(folder) / "efficientnet_lite0.onnx"
    if path.exists():  # the same conversion every time: reused, with force too
        return load(path), f"reused {path}"
    torch = torch_module("convlens demo converts EfficientNet-Lite0 with PyTorch, so it", "torch,demo")
    with quiet_frameworks(verbose):
        save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), name="efficientnet-lite0",
                                 preprocess="tf"), path, force)
    return load(path), f"converted EfficientNet-Lite0 to {path}"


def evaluate(model, images, out, *, methods="gradcam,vanilla", metrics="deletion,insertion", boxes=None,
             steps: int = 50, layer: str = "auto", road_noise: float = 0.01, ray: str | None = None,
             workers: int | None = None, batch: int = 4, quiet: bool = True, region: str | None = None,
             sequence: bool = False, position: int | None = None, index: int | None = None,
             like_vector: str | None = None, box=None, conf: float = 0.25, iou: float = 0.7, **load_options):
    """Score explanation methods over an image set (files, folders, CSV/Parquet lists) into the run folder `out`
    (results.parquet, curves.parquet, summary.json, report.html); a rerun into `out` resumes. Returns the
    EvaluationRun (`.summary`, `.files`, counts). `ray`: "auto" or a cluster address; `workers`: Ray actors.
    For an output that is not class scores: `region` (predicted, all), `sequence`, `position`, `index` or
    `like_vector` (a .npy path), as in load(); the curves then follow that objective. Detectors: `box` K (the
    detection of that rank in each image, 0 by default) among those above `conf` after NMS at `iou`; the curves
    follow its score and the pointing games take its box."""

    _check_load_options(model, load_options)
    targets = {"region": region, "sequence": sequence or None, "position": position, "index": index,
               "like_vector": str(like_vector) if like_vector is not None else None}
    if isinstance(model, Model) and any(v is not None for v in targets.values()):
        raise ConvlensError("Output-target options apply to a file path here; this model is loaded already: pass "
                            "them to convlens.load.")
    return run_evaluation(model, images, out, methods=methods, metrics=metrics, boxes=boxes, steps=steps, layer=layer,
                          road_noise=road_noise, ray=ray, workers=workers, batch=batch, quiet=quiet,
                          load_options={**load_options, **targets}, box=box, conf=conf, iou=iou)
