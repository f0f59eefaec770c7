"""Evaluation through Ray Data: images as a dataset, explained by map_batches over actors.

Each actor loads the model once and gives ONNX Runtime exactly the CPUs Ray gave the actor (ONNX Runtime
otherwise takes every core of the machine, and actors on one machine fight over them). The driver receives
each finished batch as it comes and writes it to the run folder, so workers need read access to the images
and the model only.
"""
from __future__ import annotations

import json
import pickle

import numpy as np

from ..errors import ConvlensError
from ..model.model import load
from .evaluator import Evaluator, Settings


class _Worker:
    def __init__(self, model_path: str, load_options: dict, settings: dict):
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        self.evaluator = Evaluator(load(model_path, **load_options), Settings(**settings))

    def __call__(self, batch: dict) -> dict:
        out = []
        for path, label, boxes in zip(batch["path"], batch["label"], batch["boxes"]):
            label = None if label == "" else str(label)
            try:
                result = self.evaluator.evaluate(str(path), label, [tuple(b) for b in json.loads(boxes)])
            except ConvlensError as exc:  # Ray's wrappers would lose it: the driver raises it, in its words
                result = {"error": str(exc)}
            out.append(pickle.dumps(result))
        return {"payload": np.array(out, dtype=object)}


def connect(address: str) -> None:
    """Join the cluster at `address`; `auto` joins a running local cluster or starts one."""
    import os

    # Ray Data's info lines and progress notes would bury convlens's own; it reads this when first imported
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    try:
        import ray
    except ImportError:
        raise ConvlensError("--ray needs Ray Data: pip install 'convlens[scale]'.") from None
    import logging

    for name in ("ray", "ray.data"):  # Ray's own progress and info lines would bury convlens's
        logging.getLogger(name).setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address == "auto":
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            ray.init(**options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise ConvlensError(f"Cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None


def run_on_ray(address: str, model_path: str, load_options: dict, settings: dict, items, workers: int | None,
               batch: int, on_finished, quiet: bool) -> None:
    """Evaluate `items` on the cluster; `on_finished(list of image results)` runs on the driver per batch. Each
    actor loads the model with `load_options`, whose `threads` (at least 1) is also the CPUs Ray gives it."""
    threads = load_options["threads"]
    connect(address)
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or max(1, cpus // threads)
    rows = [{"path": it.path, "label": it.label or "", "boxes": json.dumps(it.boxes)} for it in items]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), len(rows) // batch or 1)))
    explained = dataset.map_batches(_Worker, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=workers),
                                    num_cpus=threads,
                                    fn_constructor_kwargs={"model_path": model_path, "load_options": load_options,
                                                           "settings": settings},
                                    batch_format="numpy")
    for finished in explained.iter_batches(batch_size=None, batch_format="numpy"):
        results = [pickle.loads(p) for p in finished["payload"]]
        on_finished([r for r in results if "error" not in r])
        errors = [r["error"] for r in results if "error" in r]
        if errors:  # a user error in a worker (an unreadable image): what finished is kept, the run stops
            raise ConvlensError(errors[0])
