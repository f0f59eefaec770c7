"""The atlas's two costs on this machine: the dataset pass and the feature visualizations.

    python benchmarks/bench_atlas.py [--threads 2] [--images 32] [--units 64] [--steps 20]

1. Dataset pass: torchvision VGG16 (seeded) at 224, every unit of its 13 conv layers, over `--images` photos
   (scikit-image's, flipped and cropped): seconds per image, and the share of the measured float32 matmul peak
   the forward runs reach (VGG16's forward FLOPs per image over the time).
2. Feature visualizations of `--units` units of features.17 (block4_conv1; chollet recipe, `--steps` steps): in
   one batched run against one unit at a time (ratio printed), and seconds per unit.
3. From those rates: how long an atlas of every unit of VGG16's conv layers over 50,000 images takes here, and
   on N such nodes (the dataset pass splits by shards; the visualizations split by units).
"""
import argparse
import tempfile
import time
from pathlib import Path


def photo_set(folder: Path, count: int) -> Path:
    import cv2
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    for k in range(count):
        photo = sources[k % len(sources)]
        h, w = photo.shape[:2]
        s = 0.6 + 0.4 * ((k // len(sources)) % 5) / 4  # crops of 60 % to 100 %
        crop = photo[: int(h * s), int(w * (1 - s)):]
        cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(crop[:, ::-1] if k % 2 else crop, cv2.COLOR_RGB2BGR))
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    import torch
    from common import forward_flops, matmul_peak, vgg16_pair

    from convlens.engine.atlas.scan import Plan, scan
    from convlens.engine.render.images import image_paths
    from convlens.engine.techniques.filters import visualize_filters

    _, model, _ = vgg16_pair(args.threads)
    convs = [l.name for l in model.layers if l.kind == "conv"]
    shapes = model.shapes.static((224, 224))
    units = {name: list(range(shapes[model.layer(name).tensor][1])) for name in convs}
    with tempfile.TemporaryDirectory() as folder:
        images = photo_set(Path(folder), args.images)
        paths = sorted(str(p) for p in image_paths([images]))
        plan = Plan("vgg16", convs, units, paths, [224, 224], 16)
        start = time.perf_counter()
        scan(model, plan, Path(folder) / "site")
        per_image = (time.perf_counter() - start) / len(paths)
    peak = matmul_peak(torch)
    flops = forward_flops(model, (224, 224))
    total_units = sum(len(u) for u in units.values())
    print(f"dataset pass: VGG16, {len(convs)} conv layers, {total_units} units, {len(paths)} images: "
          f"{per_image:.3f} s per image, {flops / per_image / 1e9:.1f} GFLOP/s = "
          f"{flops / per_image / 1e9 / peak:.0%} of the measured matmul peak {peak:.0f} GFLOP/s")

    chosen = list(range(args.units))
    visualize_filters(model, "features.17", [0], steps=1)  # compile once
    start = time.perf_counter()
    visualize_filters(model, "features.17", chosen, steps=args.steps)
    batched = time.perf_counter() - start
    one = min(8, args.units)
    start = time.perf_counter()
    for u in range(one):
        visualize_filters(model, "features.17", [u], steps=args.steps)
    single = (time.perf_counter() - start) / one * args.units
    per_unit = batched / args.units
    print(f"feature visualizations, {args.units} units of features.17, {args.steps} steps: batched {batched:.1f} s, "
          f"one at a time {single:.1f} s (from {one} units), ratio batched/single {batched / single:.2f}; "
          f"{per_unit:.2f} s per unit")
    pass_hours = per_image * 50_000 / 3600
    vis_hours = per_unit * total_units / 3600
    print(f"an atlas of VGG16's {total_units} conv units over 50,000 images: dataset pass {pass_hours:.1f} h + "
          f"visualizations {vis_hours:.1f} h = {pass_hours + vis_hours:.1f} h here; on N nodes like this one about "
          f"{pass_hours + vis_hours:.1f} / N h")


if __name__ == "__main__":
    main()
