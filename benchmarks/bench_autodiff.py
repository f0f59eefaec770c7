"""convlens's ONNX backward graphs against PyTorch eager autograd, same VGG16 weights, side by side.

    python benchmarks/bench_autodiff.py [--threads 2] [--repeat 5]

Prints, per task, the median seconds of each and the ratio convlens / torch (targets: input gradient
<= 0.8, Grad-CAM <= 0.7, filter step <= 0.8 at batch 1 and at the best batch), the time to build the
backward graph of the full VGG16, and peak RSS of an input gradient in a fresh process.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_child(path, threads):
    from convlens.engine import load
    from convlens.engine.runtime.adapter import PIXELS
    from convlens.engine.runtime.objectives import one_hot
    from convlens.engine.techniques.gradients import gradient_program, run_gradient
    from convlens.engine.techniques.targets import Target

    model = load(path, threads=threads)
    prog, c = gradient_program(model, Target(), (224, 224))
    run_gradient(prog, np.random.rand(1, 224, 224, 3).astype(np.float32) * 255, one_hot([386], c))[prog.grads[PIXELS]]
    # VmHWM, not ru_maxrss: the latter can carry the parent's size across fork+exec
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"peak_rss_gib": hwm / 2 ** 20}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rss-child")
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.threads)

    import torch
    from common import median_time, vgg16_pair

    from convlens.engine.runtime.adapter import PIXELS
    from convlens.engine.runtime.objectives import one_hot
    from convlens.engine.techniques.cam import gradcam
    from convlens.engine.techniques.gradients import gradient_program, run_gradient
    from convlens.engine.techniques.targets import Target

    net, model, path = vgg16_pair(args.threads)
    rng = np.random.default_rng(0)
    pixels = (rng.random((1, 224, 224, 3)) * 255).astype(np.float32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rows = []

    # build time of the full VGG16 backward graph (walker + rules, then the ORT session)
    t = time.perf_counter()
    prog, channels = gradient_program(model, Target(), (224, 224))
    build_total = time.perf_counter() - t
    import convlens.engine.autodiff.walker as W
    from convlens.engine.graph import infer_shapes  # noqa: F401

    # 1. input gradient of one logit
    w = one_hot([386], channels)
    ours = median_time(lambda: run_gradient(prog, pixels, w), args.repeat)

    def torch_input_grad():
        p = torch.tensor(pixels, requires_grad=True)
        x = (p.permute(0, 3, 1, 2) / 255 - mean) / std
        net(x)[0, 386].backward()
        return p.grad

    theirs = median_time(torch_input_grad, args.repeat)
    rows.append(("input gradient, VGG16 224, batch 1", ours, theirs, 0.8))

    # 2. Grad-CAM: forward, then the gradient of one class at block5_conv3 (features.29)
    ours = median_time(lambda: gradcam(model, pixels, 386, "features.29"), args.repeat)

    def torch_gradcam():
        p = torch.tensor(pixels)
        x = (p.permute(0, 3, 1, 2) / 255 - mean) / std
        a = net.features[:30](x).requires_grad_(True)
        y = net.classifier(torch.flatten(net.avgpool(net.features[30](a)), 1))
        y[0, 386].backward()
        weights = a.grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * a).mean(1))
        return (cam / cam.max()).detach()

    theirs = median_time(torch_gradcam, args.repeat)
    rows.append(("Grad-CAM, VGG16 224", ours, theirs, 0.7))

    # 3. filter-ascent step on block3_conv1 (features.11 is its ReLU) at 150x150, per image-step
    raw = model.input_spec.with_preset("raw")
    from convlens.engine.techniques.filter_objective import FilterStep

    step = FilterStep(model, "features.11", (150, 150), raw)  # what visualize_filters runs
    for batch in (1, 4, 16):
        x = (rng.random((batch, 150, 150, 3)) * 20 + 128).astype(np.float32)

        def ours_step():
            g, _ = step(x, list(range(batch)))
            return x + g / (np.sqrt(np.mean(g ** 2, axis=(1, 2, 3), keepdims=True)) + 1e-5)

        def torch_step():
            xt = torch.tensor(x, requires_grad=True)
            a = net.features[:12](xt.permute(0, 3, 1, 2))
            a[torch.arange(batch), torch.arange(batch)].mean(dim=(1, 2)).sum().backward()
            g = xt.grad
            return xt + g / (g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-5)

        ours = median_time(ours_step, args.repeat) / batch
        theirs_b = median_time(torch_step, args.repeat) / batch
        rows.append((f"filter step block3_conv1 150, batch {batch} (per image-step)", ours, theirs_b, 0.8))

    # backward-graph construction alone
    from convlens.engine.graph import needed_nodes
    from convlens.engine.runtime.adapter import adapter_nodes
    from convlens.engine.runtime.objectives import channel_objective
    from convlens.engine.runtime.program import program as build_program  # noqa: F401
    from convlens.engine.runtime.shapes import static_shapes

    a_nodes, a_inits = adapter_nodes(model.input_spec)
    extra = channel_objective(model.meta.logits, "flat", 2, 1000)
    nodes = a_nodes + model.nodes + extra.nodes
    inits = {**model.small_inits, **a_inits, **extra.inits}
    from onnx import helper

    winfos = [helper.make_tensor_value_info(n, 1, list(v.shape)) for n, v in model.weights.items()]
    t = time.perf_counter()
    cut = needed_nodes(nodes, ["objective"], stop_at=[PIXELS, "objective_weights"])
    shapes = static_shapes(cut, inits, (224, 224), list(extra.inputs) + winfos, model.opset_imports)
    W.build_backward(cut, "objective", [PIXELS], shapes, model.weights, inits)
    build_graph = time.perf_counter() - t

    res = subprocess.run([sys.executable, __file__, "--rss-child", str(path), "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True)
    rss = json.loads([l for l in res.stdout.splitlines() if l.startswith("{")][-1])["peak_rss_gib"]

    print(f"{'task':<55} {'convlens s':>10} {'torch s':>9} {'ratio':>6} {'target':>7}")
    for name, o, t_, target in rows:
        print(f"{name:<55} {o:>10.4f} {t_:>9.4f} {o / t_:>6.2f} {'<= ' + str(target):>7}")
    print(f"backward graph of full VGG16 built in {build_graph:.3f} s (target < 1 s); "
          f"with ORT session creation {build_total:.2f} s")
    print(f"peak RSS of a VGG16 input gradient at 224: {rss:.2f} GiB (target < 2 GiB)")


if __name__ == "__main__":
    main()
