"""The atlas's dataset pass: one forward run per batch of images for every unit of every chosen layer, each unit's
maximum (and where it is) per image, kept in shards so that a killed run resumes where it stopped.

Images are taken in sorted path order and cut into shards of `shard_size`; a shard is written whole (to a
temporary name, then renamed), so a shard file is either complete or absent. The merge reads every shard: a
unit's top K are its K largest maxima over the set, ties broken by path (the images' order), whatever the
sharding or the run that made each shard, so the atlas does not depend on how it was run.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from ..runtime.program import program
from ..techniques.cam_layer import grid_view
from ..techniques.common import prepare

BATCH = 8  # images per forward run inside a shard (activations of early layers are large)
PAUSE = float(os.environ.get("CONVLENS_ATLAS_SHARD_PAUSE", "0"))  # seconds after each new shard (for tests)


@dataclass
class Plan:
    """What a scan computes; a folder's shards are only reused by the same plan."""

    model: str
    layers: list[str]
    units: dict  # layer -> unit indices
    images: list[str]  # sorted paths
    size: list[int]  # (height, width) the images are fitted to
    shard_size: int


@dataclass
class ScanResult:
    maxima: dict  # layer -> (images, units) float32: each unit's maximum per image
    where: dict  # layer -> (images, units) int: the flat grid index of that maximum
    grids: dict  # layer -> (h, w)


def shard_folder(site: Path) -> Path:
    return site / ".atlas" / "shards"


def check_plan(site: Path, plan: Plan) -> None:
    """Write the plan beside the shards, or check that the shards there were made by the same plan."""
    folder = shard_folder(site)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.parent / "plan.json"
    mine = asdict(plan)
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs != json.loads(json.dumps(mine)):
            changed = sorted(k for k in mine if json.loads(json.dumps(mine[k])) != theirs.get(k))
            raise ConvlensError(f"{site} holds an atlas run with other settings ({', '.join(changed)} differ); "
                                "give another folder, or --force to start it again.")
        return
    path.write_text(json.dumps(mine, indent=1))


def scan(model: Model, plan: Plan, site: Path, progress=None, elsewhere=None) -> ScanResult:
    """Run the shards the folder lacks, then merge them all (module docstring). `elsewhere(missing shard numbers,
    finished)` computes them instead of this process (ray_scan.py), calling finished(number, arrays) for each."""
    check_plan(site, plan)
    folder = shard_folder(site)
    starts = list(range(0, len(plan.images), plan.shard_size))
    missing = [n for n in range(len(starts)) if not (folder / f"{n:06d}.npz").exists()]
    if progress is not None:
        progress.advance(sum(len(shard_paths(plan, n)) for n in range(len(starts)) if n not in missing))

    def finished(number: int, arrays: dict) -> None:
        write_shard(folder / f"{number:06d}.npz", arrays)
        if progress is not None:
            progress.advance(len(shard_paths(plan, number)))

    if elsewhere is not None and missing:
        elsewhere(missing, finished)
    else:
        prog = program(model, [model.layer(name).tensor for name in plan.layers], tuple(plan.size))
        for number in missing:
            finished(number, shard_arrays(model, plan, number, prog))
    return merge(plan, folder, len(starts))


def shard_paths(plan: Plan, number: int) -> list[str]:
    return plan.images[number * plan.shard_size:(number + 1) * plan.shard_size]


def shard_arrays(model: Model, plan: Plan, number: int, prog=None) -> dict:
    """Shard `number`'s arrays: per layer each unit's maximum per image, where it is, and the layer's grid."""
    infos = [model.layer(name) for name in plan.layers]
    size = tuple(plan.size)
    prog = prog or program(model, [l.tensor for l in infos], size)
    shapes = model.shapes.complete(size)
    views = {info.name: grid_view(model, info, shapes) for info in infos}  # token layers: their patch grid
    chunk = shard_paths(plan, number)
    arrays: dict[str, list] = {}
    for b in range(0, len(chunk), BATCH):
        values = prog.run(prepare(model, chunk[b:b + BATCH], size))
        for info in infos:
            act = views[info.name](values[info.tensor])[:, plan.units[info.name]]
            flat = act.reshape(act.shape[0], act.shape[1], -1)
            arrays.setdefault(f"max:{info.name}", []).append(flat.max(-1).astype(np.float32))
            arrays.setdefault(f"where:{info.name}", []).append(flat.argmax(-1))
            arrays.setdefault(f"grid:{info.name}", [np.asarray(act.shape[2:])])
    return {k: np.concatenate(v) if not k.startswith("grid:") else v[0] for k, v in arrays.items()}


def write_shard(path: Path, arrays: dict) -> None:
    temporary = path.with_suffix(".part.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)  # whole or absent
    if PAUSE:  # tests kill a run between shards
        time.sleep(PAUSE)


def merge(plan: Plan, folder: Path, shards: int) -> ScanResult:
    parts = [np.load(folder / f"{n:06d}.npz") for n in range(shards)]
    maxima = {l: np.concatenate([p[f"max:{l}"] for p in parts]) for l in plan.layers}
    where = {l: np.concatenate([p[f"where:{l}"] for p in parts]) for l in plan.layers}
    grids = {l: tuple(int(v) for v in parts[0][f"grid:{l}"]) for l in plan.layers}
    return ScanResult(maxima, where, grids)


def top_images(maxima: np.ndarray, k: int) -> np.ndarray:
    """(units, k) image indices: per unit the k largest maxima, ties broken by image order (sorted paths)."""
    order = np.lexsort((np.broadcast_to(np.arange(maxima.shape[0])[:, None], maxima.shape), -maxima), axis=0)
    return order[:k].T
