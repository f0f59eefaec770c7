"""Exported explainers against the plain model's inference, in the same run.

    python benchmarks/bench_export.py [--threads 2] [--repeat 3]

VGG16 and ResNet-50 (torchvision, seeded random weights) at 224, batch 1 and 8. For each: the model's forward
pass in ONNX Runtime (preprocessed float input, the class scores its only output), then the `convlens export`
explainers (uint8 images in; probabilities, class, heatmap, overlay out) for Grad-CAM and vanilla saliency.
Targets: Grad-CAM explainer <= 1.3x the inference, saliency <= 2.2x. Also printed: the forward pass's FLOPs
and the share of this machine's matmul peak the inference reaches.
"""
import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import onnxruntime as ort
    import torch
    import torchvision
    from common import forward_flops, matmul_peak, median_time, scratch_dir

    from convlens import export, load
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    torch.set_num_threads(args.threads)
    peak = matmul_peak(torch)
    folder = scratch_dir()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3  # the explainer's overridable `target` default draws a warning per session
    rows = []
    for name in ("vgg16", "resnet50"):
        torch.manual_seed(0)
        net = torchvision.models.get_model(name, weights=None).eval()
        path = save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224)), folder / f"{name}.onnx")
        model = load(path)
        flops = forward_flops(model, (224, 224))
        # the baseline: the same graph with the class scores as its only output (convlens files also expose
        # every layer, which would keep ONNX Runtime from fusing Conv + BatchNorm + ReLU)
        import onnx

        proto = onnx.load(path)
        kept = [o for o in proto.graph.output if o.name == "logits"]
        del proto.graph.output[:]
        proto.graph.output.extend(kept)
        plain_path = save_onnx(proto, folder / f"{name}_plain.onnx")
        plain = ort.InferenceSession(str(plain_path), options, providers=["CPUExecutionProvider"])
        sessions = {}
        for method in ("gradcam", "vanilla"):
            export(model, folder / f"{name}_{method}.onnx", method=method)
            sessions[method] = ort.InferenceSession(str(folder / f"{name}_{method}.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        for batch in (1, 8):
            images = np.random.default_rng(batch).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
            x = (
                ((images / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
                .transpose(0, 3, 1, 2)
                .astype(np.float32)
            )
            base = median_time(lambda: plain.run(["logits"], {"input": x}), args.repeat)
            for method, target in (("gradcam", 1.3), ("vanilla", 2.2)):
                t = median_time(lambda: sessions[method].run(None, {"image": images}), args.repeat)
                rows.append((f"{name} batch {batch}: {method} explainer", t, base, target, flops * batch))
    print(f"{args.threads} threads; matmul peak {peak:.0f} GFLOP/s (torch.mm 2048^2 float32)")
    print(f"{'task':<36} {'explainer s':>11} {'inference s':>11} {'ratio':>6} {'target':>7} {'inference % peak':>16}")
    for name, t, base, target, flops in rows:
        print(f"{name:<36} {t:>11.3f} {base:>11.3f} {t / base:>6.2f} {'<= ' + str(target):>7} "
              f"{100 * flops / base / 1e9 / peak:>15.0f}%")


if __name__ == "__main__":
    main()
