"""Every box of a 10-detection image explained at once: convlens's `cam --box all` against the per-box torch loop.

    python benchmarks/bench_detections.py [--threads 2] [--repeat 3] [--size 640] [--boxes 10]

YOLOv8n built by ultralytics from its yaml (seeded; batch norms calibrated on three photos and the class head
spread, by tests/detector_files.py as the detector tests build it, so that detections differ) and exported by
ultralytics' exporter. convlens explains the image's top `--boxes` detections with Grad-CAM, one batched
backward run per feature map their levels read; the torch baseline runs forward and backward once per box
(hooks at the same feature maps, the way pytorch-grad-cam users loop over boxes). Prints the median seconds of
each, the ratio convlens / torch, the largest difference between their maps, and the share of the float32 matmul
peak convlens's run reaches, counting one forward pass per box only (the backward, which stops at the feature
map, is left out: a lower bound of the work done).
"""
import argparse
import sys
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--boxes", type=int, default=10)
    args = ap.parse_args()

    import cv2
    import skimage.data
    import torch
    from common import forward_flops, matmul_peak, median_time, scratch_dir

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from detector_files import build_yolo  # the detector tests' YOLOv8n: seeded, calibrated, class head spread

    import convlens

    torch.set_num_threads(args.threads)
    size = args.size
    folder = scratch_dir()
    net, path, _ = build_yolo(folder, size, with_nms=False)
    net = net.requires_grad_(False)
    photos = [cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)]
    model = convlens.load(path, scale="1/255", threads=args.threads)
    photo = photos[0].astype(np.float32)
    found = convlens.api.detections(model, photo, conf=0.01)
    if len(found) < args.boxes:
        raise SystemExit(f"only {len(found)} detections; lower the class bias")
    conf = (found[args.boxes - 1].score + found[args.boxes].score) / 2  # exactly the top `boxes` pass
    levels = model.detector_levels
    modules = {tensor: int(tensor.split("/model.")[1].split("/")[0]) for _, _, tensor in levels}

    def ours():
        return convlens.cam(model, photo, box="all", conf=conf)[0][0]

    # the input asks for a gradient so that the frozen net builds a graph (the weights get none)
    x = torch.from_numpy(photo.transpose(2, 0, 1)[None].copy() / 255).float().requires_grad_(True)

    def theirs():
        maps = []
        for d in found[:args.boxes]:
            level, (start, _, tensor) = next((i, v) for i, v in enumerate(levels) if v[0] <= d.anchor < v[1])
            kept = {}
            hooks = [net.model[modules[tensor]].register_forward_hook(lambda _m, _i, o: kept.__setitem__("A", o)),
                     # the class logits before the sigmoid: the last conv of the level's class branch
                     net.model[-1].cv3[level][-1].register_forward_hook(lambda _m, _i, o: kept.__setitem__("z", o))]
            with torch.enable_grad():
                net(x)
                logit = kept["z"].flatten(2)[0, d.cls, d.anchor - start]
                (grad,) = torch.autograd.grad(logit, kept["A"])
            for hook in hooks:
                hook.remove()
            cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * kept["A"]).sum(1))[0].detach().numpy()
            maps.append(cam / cam.max() if cam.max() > 0 else cam)
        return maps

    mine, reference = ours(), theirs()
    worst = max(float(np.abs(a.cam - b).max()) for a, b in zip(mine, reference))
    t_ours = median_time(ours, args.repeat)
    t_torch = median_time(theirs, args.repeat)
    flops = forward_flops(model, (size, size)) * args.boxes  # one forward per box; the backward stops at the layer
    peak = matmul_peak(torch)
    print(f"YOLOv8n at {size}, {args.boxes} detections, {args.threads} threads")
    print(f"convlens cam --box all: {t_ours:.3f} s; torch per-box loop: {t_torch:.3f} s; "
          f"ratio convlens/torch {t_ours / t_torch:.2f}; max map difference {worst:.1e}")
    print(f"convlens at {flops / t_ours / 1e9:.1f} GFLOP/s = {flops / t_ours / 1e9 / peak:.0%} of the measured "
          f"float32 matmul peak {peak:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
