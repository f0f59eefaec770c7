"""convlens evaluate's costs on ResNet-50 at 224 (seeded random weights), against the same work in torch.

    python benchmarks/bench_evaluate.py [--threads 2] [--images 8] [--skip-ray] [--only-throughput|--skip-throughput]

1. Deletion + insertion curves at 50 steps for one image and one map: convlens (every perturbed input through
   ONNX Runtime in batches of 16) against the same curves in batched torch eager (the same inputs, batches of
   16, no_grad). Target: convlens / torch <= 0.7.
2. ROAD (MoRF + LeRF at 10..90 %) for one image and one map: convlens against pytorch-grad-cam's ROADCombined
   on the same weights. Target: pytorch-grad-cam / convlens >= 10.
3. Whole-run throughput (gradcam + the random baseline, deletion + insertion at 50 steps, one image per
   batch) in-process, and through Ray as 1 worker x 2 threads and 2 workers x 1 thread: the wall time of
   the run, and the steady rate (images finished after the first one, over the time since the first one),
   which leaves out starting Ray, its actors and their ONNX Runtime sessions.
Each ratio comes from one run of this script (both sides measured side by side); also printed: the
forward FLOPs per second each side reaches against this machine's matmul peak (torch.mm 2048^2).
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--only-throughput", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    import torch
    import torchvision
    from common import forward_flops, matmul_peak, median_time, scratch_dir

    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.evaluation.evaluator import Evaluator, Settings
    from convlens.engine.evaluation.perturb import blurred, curve_inputs, pixel_ranks, step_counts
    from convlens.engine.evaluation.sample_set import build
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.render.images import load_image
    from convlens.engine.runtime.adapter import apply_numpy
    from convlens.engine.techniques.common import prepare

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval().requires_grad_(False)
    folder = scratch_dir()
    path = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224)), folder / "resnet50.onnx")
    model = load(path, threads=args.threads)
    listing, _ = build(folder / "set")
    image = str(folder / "set" / "cat.png")
    peak = matmul_peak(torch)
    flops = forward_flops(model, (224, 224))
    print(
        f"ResNet-50, {args.threads} threads; forward {flops / 1e9:.1f} GFLOP per image; matmul peak {peak:.0f} GFLOP/s"
    )

    if args.only_throughput:
        return throughput(args, path, folder, listing)
    pixels = prepare(model, [load_image(image)])[0]
    x = apply_numpy(pixels[None], model.input_spec)[0].transpose(1, 2, 0)  # NHWC network input
    heat = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    target = 281

    # 1. deletion + insertion
    ev = Evaluator(model, Settings(("random",), ("deletion", "insertion"), 50, "auto", 0.0))

    def ours_curves():
        return ev._scores(x, blurred(x), heat, target, 0.5, 0.5, "0" * 64, "random", [], image)

    counts = step_counts(heat.size, 50)[1:-1]
    ranks = pixel_ranks(heat)

    def torch_curves():
        inputs = np.concatenate([curve_inputs(x, ranks, counts, None), curve_inputs(x, ranks, counts, blurred(x)),
                                 x[None], blurred(x)[None], np.zeros_like(x)[None]])
        batch = torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            return torch.cat([torch.softmax(net(batch[s:s + 16]), 1)[:, target] for s in range(0, len(batch), 16)])

    forwards = 2 * len(counts) + 3
    t_ours, t_torch = median_time(ours_curves, args.repeat), median_time(torch_curves, args.repeat)
    rows = [("deletion + insertion, 50 steps", t_ours, t_torch, t_ours / t_torch, "<= 0.7", forwards)]
    # the two sides compute the same points (the end points aside, which convlens takes from the clean run)
    mine: list = []
    ev._scores(x, blurred(x), heat, target, 0.0, 0.0, "0" * 64, "random", mine, image)
    theirs = torch_curves().numpy()
    interior = [c["probability"] for c in mine if 0 < c["fraction"] < 1]
    print(f"curves agree to {np.abs(np.array(interior) - theirs[:len(interior)]).max():.1e}")

    # 2. ROAD
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    road = Evaluator(model, Settings(("random",), ("road",), 50, "auto", 0.01))
    t_road = median_time(
        lambda: road._scores(x, blurred(x), heat, target, 0.5, 0.5, "0" * 64, "random", [], image), args.repeat
    )
    xt = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    t0 = time.perf_counter()
    ROADCombined()(xt, heat[None], [ClassifierOutputSoftmaxTarget(target)], net)
    t_gc = time.perf_counter() - t0
    rows.append(("ROAD (18 imputations)", t_road, t_gc, t_road / t_gc, "<= 0.1 (10x)", 18))

    print("\n| task, one image | convlens s | reference s | ratio | target | forwards | convlens GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|---|")
    for name, a, b, r, tgt, n in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {r:.2f} | {tgt} | {n} | {n * flops / a / 1e9:.0f} "
              f"({100 * n * flops / a / 1e9 / peak:.0f}%) |")
    print("(reference: batched torch eager for the curves, pytorch-grad-cam's ROADCombined for ROAD)")

    if not args.skip_throughput:
        throughput(args, path, folder, listing)


def throughput(args, path, folder, listing):
    import convlens
    from convlens.engine.evaluation import store

    names = [line.split(",")[0] for line in listing.read_text().splitlines()[1:]][: args.images]
    images = [str(folder / "set" / n) for n in names]
    configs = [("in-process, 2 threads", dict(threads=2))]
    if not args.skip_ray:
        configs += [("Ray, 1 worker x 2 threads", dict(ray="auto", workers=1, threads=2)),
                    ("Ray, 2 workers x 1 thread", dict(ray="auto", workers=2, threads=1))]
    finished = []
    original = store.RunFolder.write

    def timed(self, done):  # when each batch reached the run folder
        original(self, done)
        finished.append((time.perf_counter(), len(done)))

    store.RunFolder.write = timed
    print(f"\n| {len(images)} images, gradcam + random, deletion + insertion at 50 steps | wall s | images/s (wall) "
          "| steady images/s |")
    print("|---|---|---|---|")
    for i, (name, options) in enumerate(configs):
        finished.clear()
        t0 = time.perf_counter()
        convlens.evaluate(str(path), images, folder / f"run{i}", methods="gradcam", metrics="deletion,insertion",
                          steps=50, batch=1, **options)
        seconds = time.perf_counter() - t0
        steady = (sum(n for _, n in finished[1:]) / (finished[-1][0] - finished[0][0])) if len(finished) > 1 else 0
        print(f"| {name} | {seconds:.1f} | {len(images) / seconds:.3f} | {steady:.3f} |")


if __name__ == "__main__":
    main()
