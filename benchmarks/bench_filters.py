"""Filter ascent: batched convlens against a PyTorch eager loop, and lucid against chollet in numbers.

    python benchmarks/bench_filters.py [--filters 64] [--threads 2]

1. VGG16 (torchvision, seeded random weights) block3_conv1, chollet recipe, 40 steps at 150x150:
   convlens running the filters as batches against torch eager autograd one filter at a time, both as a
   literal port (loss.backward(), which also computes every weight's gradient) and as the lesson's tape
   computes it (the image's gradient only, torch.autograd.grad).
2. EfficientNet-Lite0 (real ImageNet weights, shipped by a package), 8 filters of a middle layer:
   the displayed images of each recipe are fed back through the model with its own preprocessing,
   and the filter's mean activation and the share of image energy above half the Nyquist
   frequency are printed for both recipes.
"""
import argparse
import time

import numpy as np


def high_frequency_share(images: np.ndarray) -> float:
    """Share of spectral energy (mean removed) above half the Nyquist frequency, averaged over images."""
    shares = []
    for img in images.astype(np.float64):
        gray = img.mean(axis=2)
        spec = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
        h, w = gray.shape
        fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
        fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
        high = np.maximum(np.abs(fy), np.abs(fx)) > 0.25  # Nyquist is 0.5 cycles per pixel
        shares.append(spec[high].sum() / spec.sum())
    return float(np.mean(shares))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--filters", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=None, help="filters per batch (default: sized from memory)")
    args = ap.parse_args()

    import torch
    from common import vgg16_pair

    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.runtime.program import program
    from convlens.engine.techniques.filters import visualize_filters

    net, model, path = vgg16_pair(args.threads)
    tmp = path.parent
    filters = list(range(args.filters))

    t = time.perf_counter()
    visualize_filters(model, "features.11", filters, "chollet", steps=args.steps, seed=0, batch=args.batch)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    visualize_filters(model, "features.11", filters[:8], "chollet", steps=args.steps, seed=0, batch=args.batch,
                      selected=False)
    ours_full = (time.perf_counter() - t) * len(filters) / 8

    body = net.features[:12]
    for m in body.modules():
        if hasattr(m, "inplace"):
            m.inplace = False

    def torch_loop(input_only: bool) -> float:
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for f in filters:
            x = torch.tensor((rng.random((1, 150, 150, 3)) * 20 + 128).astype(np.float32))
            for _ in range(args.steps):
                x.requires_grad_(True)
                loss = body(x.permute(0, 3, 1, 2))[0, f].mean()
                if input_only:  # what the lesson's tape computes: the gradient of the image only
                    (g,) = torch.autograd.grad(loss, x)
                else:  # a literal port: backward() also fills every weight's .grad
                    loss.backward()
                    g = x.grad
                x = (x + g / (g.pow(2).mean().sqrt() + 1e-5)).detach()
        return time.perf_counter() - start

    body.requires_grad_(True)  # as a literal port leaves the weights
    literal = torch_loop(False)
    body.zero_grad(set_to_none=True)
    body.requires_grad_(False)
    input_only = torch_loop(True)
    print(f"{args.filters} filters of VGG16 block3_conv1, chollet, {args.steps} steps, 150 px, {args.threads} threads:")
    print(f"  convlens batched, one-channel objective: {ours:.1f} s "
          f"(all channels of the layer: {ours_full:.1f} s, extrapolated from 8 filters)")
    print(f"  torch eager, one filter at a time, loss.backward() (weight grads too): {literal:.1f} s "
          f"-> ratio {ours / literal:.2f} (target <= 0.6)")
    print(f"  torch eager, one filter at a time, autograd.grad(loss, image) only: {input_only:.1f} s "
          f"-> ratio {ours / input_only:.2f}")

    lite = load(save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), preprocess="tf"),
                          tmp / "lite0.onnx"))
    layer = "_blocks.8._expand_conv"
    info = lite.layer(layer)
    for recipe, steps in (("chollet", 40), ("lucid", 256)):
        res = visualize_filters(lite, layer, "0-7", recipe, steps=steps, size=128, seed=0)
        acts = program(lite, [info.tensor], (128, 128)).run(res.images.astype(np.float32))[info.tensor]
        mean_act = np.mean([acts[i, f].mean() for i, f in enumerate(res.filters)])
        print(f"EfficientNet-Lite0 {layer}, 8 filters, {recipe} ({steps} steps): mean activation of the displayed "
              f"images {mean_act:.3f}, energy above half Nyquist {high_frequency_share(res.images):.1%}")


if __name__ == "__main__":
    main()
