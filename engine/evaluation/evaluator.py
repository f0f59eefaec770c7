"""One image through every method and metric of a run: its maps, its perturbed inputs, their scores.

All perturbed inputs live in the network's input space (after preprocessing): a program built with an
identity input adapter takes them as they are. An image's result depends only on the image and the run's
settings: its inputs always run in the same chunks, whichever batch of images or worker holds it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ConvlensError
from ..metadata import InputSpec
from ..model.model import Model
from ..model.output_targets import OutputTarget
from ..render.images import load_image, to_photo
from ..runtime.adapter import apply_numpy
from ..runtime.program import program
from ..techniques.cam import gradcam
from ..techniques.cam_methods import CAM_METHODS
from ..techniques.common import class_probabilities, fit_to_model, photo
from ..techniques.output_inputs import detection_layer, photo_detections
from ..techniques.saliency import SALIENCY_METHODS, saliency
from . import metrics as m
from .perturb import blurred, curve_inputs, pixel_ranks, step_counts
from .road import FRACTIONS, impute, removal_masks

RANDOM = "random"  # the baseline method: uniform random maps


@dataclass(frozen=True)
class Settings:
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    steps: int = 50
    layer: str = "auto"
    road_noise: float = 0.01
    chunk: int = 16  # perturbed inputs per ONNX Runtime call
    box: int = 0  # detectors: the detection explained in each image (its rank by score)
    conf: float = 0.25  # detectors: the score a detection needs
    iou: float = 0.7  # detectors: NMS's IoU threshold

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def method_names() -> dict[str, str]:
    """{method: family} for every method evaluate accepts."""

    names = {k: "cam" for k in CAM_METHODS}
    names.update({k: "saliency" for k in SALIENCY_METHODS})
    names[RANDOM] = "baseline"
    return names


def check_settings(methods, metrics, steps: int, has_boxes: bool, layer: str = "auto",
                   road_noise: float = 0.01, box=None, conf: float = 0.25, iou: float = 0.7) -> Settings:
    """Settings from the user's choices, each refused in one sentence when it cannot be run."""
    known = method_names()
    methods = [s.strip() for s in (methods.split(",") if isinstance(methods, str) else methods) if s.strip()]
    metrics = [s.strip() for s in (metrics.split(",") if isinstance(metrics, str) else metrics) if s.strip()]
    for name in methods:
        if name not in known:
            raise ConvlensError(f"Unknown method {name!r} for evaluate; choose from {', '.join(known)}.")
    for name in metrics:
        if name not in m.METRICS:
            raise ConvlensError(f"Unknown metric {name!r}; choose from {', '.join(m.METRICS)}.")
    if not methods or not metrics:
        raise ConvlensError("evaluate needs at least one method (--methods) and one metric (--metrics).")
    if not has_boxes and {"pointing", "energy-pointing"} & set(metrics):
        raise ConvlensError("The pointing metrics need boxes: pass --boxes FILE.csv (path,class,x0,y0,x1,y1) (a "
                            "detector's own boxes serve for its detections).")
    text = "0" if box is None else str(box)
    if not text.isdigit():
        raise ConvlensError(f"evaluate explains one detection per image: give --box K (its rank by score, 0 for the "
                            f"top one), not {text!r}.")
    for name, value in (("--conf", conf), ("--iou", iou)):
        if not 0 <= value <= 1:
            raise ConvlensError(f"{name} must be between 0 and 1, not {value}.")
    if steps < 2:
        raise ConvlensError(f"--steps must be 2 or more, not {steps}.")
    methods = list(dict.fromkeys(methods + [RANDOM]))  # metrics only mean something against the baseline
    return Settings(tuple(methods), tuple(dict.fromkeys(metrics)), steps, layer or "auto", road_noise,
                    box=int(text), conf=float(conf), iou=float(iou))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


class Evaluator:
    """Holds a model and its programs; `evaluate(path, label, boxes)` scores one image."""

    def __init__(self, model: Model, settings: Settings):
        spec = model.input_spec
        if spec.channels != 3:
            raise ConvlensError("evaluate works on RGB models; this model takes one (gray) channel.")
        self.model, self.settings = model, settings
        self.placed = model.placed()  # the maps are made on pixels already fitted to the input
        # a detector's images are each scored through a view of one detection (evaluate_detection); any other
        # model without class scores is refused, saying what its output is
        self.detector = model.detector is not None and model.target is None
        self.scores = None if self.detector else model.scores_tensor()
        # the network's input as it is (NHWC, model's channel order, preprocessing done in numpy)
        self.identity = InputSpec(name=spec.name, size=spec.size, layout=spec.layout, color="RGB", scale=1.0,
                                  mean=[0.0] * 3, std=[1.0] * 3, channels=3)
        self.numpy_spec = dataclasses.replace(spec, layout="NHWC")
        # the model's own thread count (its runtime) also sizes the pool that solves ROAD's systems
        self.threads = model.runtime.threads or os.cpu_count() or 1
        self._zero: dict = {}

    # --- model runs ---------------------------------------------------------------------------------
    def probabilities(self, inputs: np.ndarray, target: int | None = None) -> np.ndarray:
        """Softmax probabilities (N, classes) of network inputs (N, H, W, C), or of `target` only (N,)."""
        prog = program(self.model, [self.scores], inputs.shape[1:3], spec=self.identity)
        parts = []
        for s in range(0, len(inputs), self.settings.chunk):
            part = inputs[s:s + self.settings.chunk]
            y = prog.run(part)[self.scores].reshape(len(part), -1)
            parts.append(
                class_probabilities(self.model, y) if self.scores == self.model.meta.logits else y.astype(np.float64)
            )
        p = np.concatenate(parts)
        return p if target is None else p[:, target]

    def _zero_probability(self, shape, target: int) -> float:
        if shape not in self._zero:
            self._zero[shape] = self.probabilities(np.zeros((1,) + shape, np.float32))[0]
        return float(self._zero[shape][target])

    # --- maps -----------------------------------------------------------------------------------------
    def heatmap(self, method: str, pixels: np.ndarray, target: int, sha: str) -> np.ndarray:
        """The method's map of the explained class at the network's input size, in [0, 1]."""
        family = method_names()[method]
        if family == "baseline":
            return np.random.default_rng(_seed(sha, RANDOM)).random(pixels.shape[:2]).astype(np.float32)
        if family == "cam":
            layer = self.settings.layer if CAM_METHODS[method].reads_layer else None
            return gradcam(self.placed, pixels[None], target, layer, method)[0][0].heatmap.astype(np.float32)

        return saliency(self.placed, pixels[None], target, method)[0].saliency.astype(np.float32)

    # --- one image ------------------------------------------------------------------------------------
    def evaluate(self, path: str, label: str | None = None, boxes=(), pointing_boxes=None) -> dict:
        """{"results": rows (one per method), "curves": rows, "heatmaps": {method: uint8 map}} of one image.
        `pointing_boxes`: the pointing games' boxes (x0, y0, x1, y1) themselves, instead of `boxes` of the class."""
        if self.detector:
            return self.evaluate_detection(path)
        sha = file_sha256(path)
        image = load_image(path)
        fitted, place, size = fit_to_model(self.model, photo(image))
        pixels = fitted.astype(np.float32)
        x = apply_numpy(pixels[None], self.numpy_spec)[0]
        soft = blurred(x)  # insertion's start, shared by every method's curve
        base = self.probabilities(np.stack([x, soft]))
        target = self.model.class_index(label) if label is not None else int(np.argmax(base[0]))
        if not 0 <= target < base.shape[1]:
            raise ConvlensError(f"{path}: class {target} is out of range; the model has {base.shape[1]} classes.")
        clean, blur = float(base[0, target]), float(base[1, target])
        target_boxes = pointing_boxes if pointing_boxes is not None else \
            [b[1:] for b in boxes if self.model.class_index(b[0]) == target]
        results, curves, heatmaps = [], [], {}
        for method in self.settings.methods:
            heat = self.heatmap(method, pixels, target, sha)
            row = {"path": path, "sha256": sha, "method": method, "target": target,
                   "target_label": self.model.label(target), "probability": clean,
                   **{c: float("nan") for c in m.COLUMNS}}
            row.update(self._scores(x, soft, heat, target, clean, blur, sha, method, curves, path))
            if {"pointing", "energy-pointing"} & set(self.settings.metrics):
                full = to_photo(heat, image.shape[:2], size, place)  # a crop's or letterbox's placement undone
                if "pointing" in self.settings.metrics:
                    row["pointing_hit"] = m.pointing_hit(full, target_boxes)
                if "energy-pointing" in self.settings.metrics:
                    row["energy_pointing"] = m.energy_pointing(full, target_boxes)
            results.append(row)
            heatmaps[method] = np.uint8(np.round(np.clip(heat, 0, 1) * 255))
        return {"results": results, "curves": curves, "heatmaps": heatmaps}

    def evaluate_detection(self, path: str) -> dict:
        """A detector's image: its detection of rank `box` explained through a view whose one score is that
        detection's (its candidate's class probability, or logit for a DETR-style head: the curves follow it as
        pixels go), at its level's layer; the pointing games take the detection's own box."""
        found = photo_detections(self.model, load_image(path), self.settings.conf, self.settings.iou)
        k = self.settings.box
        if k >= len(found):
            raise ConvlensError(f"{path}: it has {len(found)} detections above --conf {self.settings.conf}, so "
                                f"none of rank {k} to evaluate; lower --conf, or leave the image out.")
        detection = found[k]
        view = self.model.explaining(OutputTarget(detections=(detection,)))
        layer = detection_layer(self.model, detection, self.settings.layer)
        one = Evaluator(view, dataclasses.replace(self.settings, layer=layer))
        out = one.evaluate(path, None, pointing_boxes=[list(detection.box)])
        for row in out["results"]:
            row["target"], row["target_label"] = detection.cls, f"{self.model.label(detection.cls)} (detection {k})"
        return out

    def _scores(self, x, soft, heat, target, clean, blur, sha, method, curves, path) -> dict:
        """The metrics that run the model on perturbed inputs: all of one map's inputs in one batched pass."""
        wanted = self.settings.metrics
        steps = self.settings.steps
        counts = step_counts(heat.size, steps)[1:-1]  # the end points are known: x itself, zeros, the blur
        ranks = pixel_ranks(heat)
        batches: dict[str, np.ndarray] = {}
        if "deletion" in wanted:
            batches["deletion"] = curve_inputs(x, ranks, counts, None)
        if "insertion" in wanted:
            batches["insertion"] = curve_inputs(x, ranks, counts, soft)
        if "road" in wanted:
            masks = removal_masks(heat)
            jobs = [(kind, i, mask) for kind in ("morf", "lerf") for i, mask in enumerate(masks[kind])]

            def one(job):
                kind, i, mask = job
                rng = np.random.default_rng(_seed(sha, method, kind, FRACTIONS[i]))
                return impute(x, mask, self.settings.road_noise, rng)

            with ThreadPoolExecutor(min(self.threads, len(jobs))) as pool:  # the solver releases the GIL
                batches["road"] = np.stack(list(pool.map(one, jobs)))
        if "confidence" in wanted:
            batches["confidence"] = (x * heat[..., None]).astype(np.float32)[None]
        out: dict = {}
        if not batches:
            return out
        names = list(batches)
        p = self.probabilities(np.concatenate([batches[k] for k in names]), target)
        at = dict(zip(names, np.split(p, np.cumsum([len(batches[k]) for k in names])[:-1])))
        fractions = np.arange(steps + 1) / steps
        for kind in ("deletion", "insertion"):
            if kind in at:
                ends = (clean, self._zero_probability(x.shape, target)) if kind == "deletion" else (blur, clean)
                curve = np.concatenate([[ends[0]], at[kind], [ends[1]]])
                out[f"{kind}_auc"] = m.auc(fractions, curve)
                curves.extend({"path": path, "method": method, "metric": kind, "fraction": float(f),
                               "probability": float(v)} for f, v in zip(fractions, curve))
        if "road" in at:
            half = len(FRACTIONS)
            out["road_morf"] = float(np.mean(at["road"][:half]))
            out["road_lerf"] = float(np.mean(at["road"][half:]))
            out["road_combined"] = (out["road_lerf"] - out["road_morf"]) / 2
        if "confidence" in at:
            out["average_drop"], out["increase_in_confidence"] = m.confidence_change(clean, float(at["confidence"][0]))
        return out
