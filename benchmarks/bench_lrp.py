"""LRP composites on VGG16 at 224: convlens against its own input gradient and against Zennit, same weights.

    python benchmarks/bench_lrp.py [--threads 2] [--repeat 3] [--composites lrp-epsilon-plus-flat,...]

Prints, per composite, the median seconds of one image's attribution in convlens (the compiled program:
relevance rules in the backward graph) and in Zennit (its hooks, on the torch model), the ratio convlens /
Zennit (target < 1), convlens's LRP over its own input gradient (target <= 1.3), the relative L2 difference of
the two maps, and the share of the machine's float32 matmul peak that convlens's run reaches.
"""
import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--composites", default="lrp-epsilon-plus,lrp-epsilon-plus-flat,lrp-epsilon-gamma-box,"
                                            "lrp-epsilon-alpha2-beta1")
    args = ap.parse_args()

    import torch
    from common import forward_flops, matmul_peak, median_time, vgg16_pair
    from zennit import composites as zc
    from zennit.attribution import Gradient

    from convlens.engine.runtime.adapter import apply_numpy
    from convlens.engine.runtime.objectives import one_hot
    from convlens.engine.techniques.saliency import input_relevance, pixel_gradients, zbox_bounds

    net, model, _ = vgg16_pair(args.threads)
    spec = model.input_spec
    pixels = (np.random.default_rng(0).random((1, 224, 224, 3)) * 255).astype(np.float32)
    x = torch.tensor(apply_numpy(pixels, spec))
    with torch.no_grad():
        logits = net(x)
    c = int(logits.argmax())
    start = float(logits[0, c])
    low, high = zbox_bounds(spec)
    params = (("eps", 1e-6), ("gamma", 0.25), ("low", low), ("high", high))
    lt, ht = (torch.tensor(v).reshape(1, 3, 1, 1).float() for v in (low, high))
    zennit = {"lrp-epsilon-plus": lambda: zc.EpsilonPlus(), "lrp-epsilon-plus-flat": lambda: zc.EpsilonPlusFlat(),
              "lrp-epsilon-gamma-box": lambda: zc.EpsilonGammaBox(low=lt, high=ht),
              "lrp-epsilon-alpha2-beta1": lambda: zc.EpsilonAlpha2Beta1()}

    grad_s = median_time(lambda: pixel_gradients(model, pixels, [c]), args.repeat)
    peak = matmul_peak(torch)
    flops = forward_flops(model, (224, 224))
    print(f"machine: {args.threads} threads, float32 matmul peak {peak:.0f} GFLOP/s; VGG16 forward "
          f"{flops / 1e9:.1f} GFLOP")
    print(f"convlens input gradient: {grad_s:.3f} s")
    print("| composite | convlens s | Zennit s | convlens / Zennit | LRP / gradient | rel. L2 vs Zennit | "
          "share of peak |")
    print("|---|---|---|---|---|---|---|")
    for name in args.composites.split(","):
        def ours():
            return input_relevance(model, pixels, [c], [start], overrides=(name,), params=params)[0]

        def theirs():
            with Gradient(model=net, composite=zennit[name]()) as attributor:
                _, rel = attributor(x.clone().requires_grad_(), torch.tensor(one_hot([c], 1000)) * start)
            return rel[0].permute(1, 2, 0).numpy()

        ours_s = median_time(ours, args.repeat)
        theirs_s = median_time(theirs, args.repeat)
        a, b = ours(), theirs()
        diff = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        # a forward pass, and per rule copy of each layer a forward and a backward: read the share from the
        # gradient's 3 forward-equivalents as a floor, not an exact count
        share = 3 * flops / ours_s / 1e9 / peak
        print(f"| {name} | {ours_s:.3f} | {theirs_s:.3f} | {ours_s / theirs_s:.2f} | {ours_s / grad_s:.2f} | "
              f"{diff:.1e} | >= {share:.0%} |")


if __name__ == "__main__":
    main()
