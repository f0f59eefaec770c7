"""The atlas on a Ray cluster. The dataset pass: each missing shard is one row of a Ray Data job, computed by
actors that load the model once (with the driver's input description, and exactly the CPUs Ray gives them);
the driver writes each finished shard as the in-process pass does, so a Ray run, an in-process run and a
resumed run leave the same shards (evaluate's Ray run, engine/evaluation/distributed.py, works the same way).
The feature visualizations: one Ray task per layer, all of its units in one batched run as in process (the
noise they start from is drawn for the layer's units together, so a layer is not split)."""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np

from ..evaluation.distributed import connect
from ..model.model import Model, load
from ..techniques.filters import visualize_filters
from .scan import Plan, shard_arrays


class _ShardWorker:
    def __init__(self, model_path: str, spec, threads: int, plan: dict):
        self.model = load(model_path, threads=threads).with_input_spec(spec)
        self.plan = Plan(**plan)

    def __call__(self, batch: dict) -> dict:
        out = [pickle.dumps((int(n), shard_arrays(self.model, self.plan, int(n)))) for n in batch["number"]]
        return {"payload": np.array(out, dtype=object)}


def scan_on_ray(address: str, model: Model, plan: Plan, missing: list[int], workers: int | None, finished) -> None:
    """Compute the shards `missing` on the cluster; `finished(number, arrays)` runs on the driver for each."""
    connect(address)
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    threads = model.runtime.threads or 1
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    dataset = ray.data.from_items([{"number": n} for n in missing], override_num_blocks=len(missing))
    shards = dataset.map_batches(_ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                                 num_cpus=threads, batch_format="numpy",
                                 fn_constructor_kwargs={"model_path": str(model.path), "spec": model.input_spec,
                                                        "threads": threads, "plan": dataclasses.asdict(plan)})
    for batch in shards.iter_batches(batch_size=None, batch_format="numpy"):
        for payload in batch["payload"]:
            finished(*pickle.loads(payload))


def _visualize(model_path: str, spec, threads: int, layer: str, units: list, recipe: str, steps, size,
               diversity: int) -> list:
    model = load(model_path, threads=threads).with_input_spec(spec)
    return visualize_filters(model, layer, units, recipe, steps, size, diversity=diversity).images


def visualize_on_ray(address: str, model: Model, layers: dict, recipe: str, steps, size, diversity: int) -> dict:
    """{layer: its units' feature visualizations} for `layers` ({layer: units}), one task per layer."""
    connect(address)
    import ray

    threads = model.runtime.threads or 1
    task = ray.remote(num_cpus=threads)(_visualize)
    pending = {layer: task.remote(str(model.path), model.input_spec, threads, layer, list(units), recipe, steps, size,
                                  diversity) for layer, units in layers.items()}
    return {layer: ray.get(ref) for layer, ref in pending.items()}
