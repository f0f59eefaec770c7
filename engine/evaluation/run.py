"""A whole evaluation: which images are left, who runs them (this process or Ray), the outputs at the end."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConvlensError
from ..model.model import Model, load
from ..model.onnx_file import write_atomic
from ..render.progress import Progress
from .distributed import run_on_ray
from .evaluator import Evaluator, Settings, check_settings, file_sha256
from .inputs import image_items, read_boxes
from .report_page import build_page
from .store import RunFolder
from .summary import mean_curves, summarize


@dataclass
class EvaluationRun:
    folder: Path
    summary: dict
    images: int  # in the set
    evaluated: int  # by this call
    skipped: int  # finished by an earlier call into the same folder
    files: list = field(default_factory=list)


def evaluate(model, sources, out, *, methods="gradcam,vanilla", metrics="deletion,insertion", boxes=None,
             steps: int = 50, layer: str = "auto", road_noise: float = 0.01, ray: str | None = None,
             workers: int | None = None, batch: int = 4, quiet: bool = True, load_options: dict | None = None,
             box=None, conf: float = 0.25, iou: float = 0.7) -> EvaluationRun:
    load_options = {k: v for k, v in (load_options or {}).items() if v is not None}
    if workers is not None and ray is None:
        raise ConvlensError("--workers applies to Ray runs (--ray auto|ADDRESS); without --ray the run uses this "
                            "process, with --threads for ONNX Runtime.")
    if workers is not None and workers < 1:
        raise ConvlensError(f"--workers must be 1 or more, not {workers}.")
    if batch < 1:
        raise ConvlensError(f"--batch must be 1 or more, not {batch}.")
    if road_noise < 0:
        raise ConvlensError(f"--road-noise must be 0 or more, not {road_noise}.")
    if isinstance(model, Model):
        if ray is not None:
            raise ConvlensError("A Ray run loads the model in every worker: pass its file path, not a loaded model.")
        loaded, model_path = model, model.path
    else:
        model_path = str(Path(model).resolve())
        loaded = load(model_path, **load_options)
    detector = loaded.detector is not None and loaded.target is None
    if box is not None and not detector:
        raise ConvlensError("--box applies to detectors (a YOLO-style or DETR-style head); this model has none.")
    settings = check_settings(methods, metrics, steps, boxes is not None or detector, layer, road_noise, box, conf, iou)
    items = image_items([str(s) for s in (sources if isinstance(sources, (list, tuple)) else [sources])])
    box_table = read_boxes(boxes) if boxes is not None else {}
    for item in items:
        item.boxes = box_table.get(item.path, [])
        for given in [item.label] + [b[0] for b in item.boxes]:  # unknown classes: one sentence, before any work
            if given is not None:
                loaded.class_index(given)
    record = {**settings.to_dict(), "model_sha256": file_sha256(model_path) if model_path else None,
              "boxes_sha256": file_sha256(str(boxes)) if boxes is not None else None,
              "load_options": {k: v for k, v in sorted(load_options.items()) if k not in ("threads", "device")}}
    evaluator = Evaluator(loaded, settings)  # refuses unusable models: nothing written yet
    folder = RunFolder(out, json.loads(json.dumps(record)))  # as run.json will read back (tuples as lists)
    folder.open()
    done = folder.done()
    todo = [it for it in items if done.get(it.path) is None or done[it.path] != file_sha256(it.path)]
    with Progress(len(todo), "images", quiet) as progress:

        def finished(images):
            folder.write(images)
            progress.advance(len(images))

        if todo and ray is None:
            for start in range(0, len(todo), batch):
                finished([evaluator.evaluate(it.path, it.label, it.boxes) for it in todo[start:start + batch]])
        elif todo:

            if not model_path:
                raise ConvlensError("A Ray run needs the model as a file.")
            # each actor: the model's thread count (1 when automatic), which is also the CPUs Ray gives it
            actor_options = {**load_options, "threads": loaded.runtime.threads or 1}
            run_on_ray(ray, model_path, actor_options, settings.to_dict(), todo, workers, batch, finished, quiet)
    return _finish(folder, settings, len(items), len(todo), len(items) - len(todo), loaded)


def _finish(folder: RunFolder, settings: Settings, total: int, evaluated: int, skipped: int, model) -> EvaluationRun:

    results, curves = folder.consolidate()
    rows = results.to_pylist()
    summary = {"images": len({r["path"] for r in rows}), "methods": summarize(rows, settings.metrics, settings.methods),
               "settings": settings.to_dict()}
    path = folder.path
    write_atomic(path / "summary.json", json.dumps(summary, indent=1).encode(), force=True)
    page = build_page(path, rows, mean_curves(curves), summary, Path(model.path).name if model.path else "model")
    write_atomic(path / "report.html", page.encode(), force=True)
    files = [str(path / n) for n in ("results.parquet", "curves.parquet", "summary.json", "report.html")]
    return EvaluationRun(path, summary, total, evaluated, skipped, files)

