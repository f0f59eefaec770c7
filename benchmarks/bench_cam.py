"""Grad-CAM over a folder of images in batches: images per second, convlens against torch eager.

    python benchmarks/bench_cam.py [--images 100] [--batch 8] [--threads 2]

VGG16 (torchvision, seeded random weights) at 224, Grad-CAM at features.29 (block5_conv3) for each
image's top class; the images are crops and flips of the bundled photo.
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from common import vgg16_pair

    from convlens.engine.render.images import resize, sample_image
    from convlens.engine.techniques.cam import gradcam

    net, model, _ = vgg16_pair(args.threads)
    photo = sample_image()
    rng = np.random.default_rng(0)
    images = []
    for _ in range(args.images):
        y, x = rng.integers(0, 60), rng.integers(0, 150)
        crop = photo[y:y + 240, x:x + 300]
        images.append(resize(crop[:, ::-1] if rng.random() < 0.5 else crop, (224, 224)))
    images = np.stack(images).astype(np.float32)
    gradcam(model, images[:args.batch], "top", "features.29")  # build the programs once
    t = time.perf_counter()
    for s in range(0, len(images), args.batch):
        gradcam(model, images[s:s + args.batch], "top", "features.29")
    ours = time.perf_counter() - t
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    t = time.perf_counter()
    for s in range(0, len(images), args.batch):
        x = (torch.tensor(images[s:s + args.batch]).permute(0, 3, 1, 2) / 255 - mean) / std
        a = net.features[:30](x).requires_grad_(True)
        y = net.classifier(torch.flatten(net.avgpool(net.features[30](a)), 1))
        y[torch.arange(len(y)), y.argmax(1)].sum().backward()
        w = a.grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((w * a).mean(1))
        (cam / cam.flatten(1).max(1).values.view(-1, 1, 1).clamp_min(1e-12)).detach()
    theirs = time.perf_counter() - t
    print(f"Grad-CAM on {args.images} images in batches of {args.batch}: convlens {args.images / ours:.1f} images/s, "
          f"torch eager {args.images / theirs:.1f} images/s, time ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
