"""ViT-B/16 at 224: convlens's ONNX backward graphs against torch eager autograd on the same weights.

    python benchmarks/bench_vit.py [--threads 2] [--repeat 3] [--batches 1,8]

Tasks, at each batch size: the input gradient of each image's top logit, Grad-CAM at the auto layer (the
last block's first norm), and GAE (gradient-weighted attention over all 12 blocks). The torch side computes
only the gradients convlens computes (weights frozen). Targets: convlens / torch <= 0.9 for all three.

Also printed: the FLOPs each task does (counted from the graph's MatMul/Gemm/Conv shapes: the forward pass,
plus one backward-data pass per MatMul the gradient crosses, which doubles them) and the fraction of this
machine's matmul peak (a float32 torch.mm of 2048^2 at the same thread count) that each run reaches.
"""
import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    import torch
    import torchvision
    from common import forward_flops, matmul_peak, median_time, scratch_dir

    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.runtime.adapter import PIXELS
    from convlens.engine.runtime.objectives import TOP_CLASS
    from convlens.engine.techniques.cam import gradcam
    from convlens.engine.techniques.gradients import gradient_program
    from convlens.engine.techniques.targets import Target

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None).eval()
    torch.nn.init.normal_(net.heads.head.weight, std=0.02)  # torchvision initializes the head to zero
    net.requires_grad_(False)  # the baselines compute only the gradients convlens computes
    model = load(save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224)), scratch_dir() / "vit_b_16.onnx"),
                 threads=args.threads)
    torch.backends.mha.set_fastpath_enabled(False)  # eager autograd through the same explicit attention
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    peak = matmul_peak(torch)
    fwd = forward_flops(model, (224, 224))
    layer = net.encoder.layers[-1].ln_1

    kept = []

    def keep_attention(on: bool):
        """torch's attention probabilities per block, kept with their gradients (need_weights: the explicit
        softmax path); only for GAE, so that the other baselines keep torch's fused attention kernel."""
        for block in net.encoder.layers:
            attention = block.self_attention
            if not on:
                attention.forward = type(attention).forward.__get__(attention)
                continue

            def forward(q, k, v, need_weights=False, _original=attention.forward, **kw):
                out, weights = _original(q, k, v, need_weights=True, average_attn_weights=False, **kw)
                # the returned map is a view; its base (the softmax output) is what the output is computed from
                base = weights._base if weights._base is not None else weights
                base.retain_grad()
                kept.append(base)
                return out, weights
            attention.forward = forward

    rows = []
    rng = np.random.default_rng(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        pixels = (rng.random((batch, 224, 224, 3)) * 255).astype(np.float32)
        prog, _ = gradient_program(model, Target(), (224, 224), fetch=(TOP_CLASS,), top=True)
        ours = median_time(lambda: prog.run(pixels)[prog.grads[PIXELS]], args.repeat)

        def torch_input_grad():
            p = torch.tensor(pixels, requires_grad=True)
            y = net((p.permute(0, 3, 1, 2) / 255 - mean) / std)
            y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
            return p.grad

        theirs = median_time(torch_input_grad, args.repeat)
        rows.append((f"input gradient, batch {batch}", ours, theirs, 2 * fwd * batch))

        ours = median_time(lambda: gradcam(model, pixels, "top", "auto"), args.repeat)

        def torch_gradcam():
            acts = {}
            # the frozen net needs one gradient: the last block's input is made a leaf that requires it
            pre = layer.register_forward_pre_hook(lambda _m, inp: (inp[0].requires_grad_(True),))
            hook = layer.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
            try:
                y = net((torch.tensor(pixels).permute(0, 3, 1, 2) / 255 - mean) / std)
            finally:
                pre.remove()
                hook.remove()
            (g,) = torch.autograd.grad(y.gather(1, y.argmax(1, keepdim=True)).sum(), acts["a"])
            tokens, grads = acts["a"][:, 1:], g[:, 1:]
            cam = torch.relu((tokens * grads.mean(1, keepdim=True)).mean(2)).reshape(batch, 14, 14)
            return cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)

        theirs = median_time(torch_gradcam, args.repeat)
        agree = [
            np.abs(
                np.stack([r[0].cam for r in gradcam(model, pixels, "top", "auto")]) - torch_gradcam().detach().numpy()
            ).max()
        ]
        # forward, then backward-data through the last block and the head only (about 1/12 of the MatMuls)
        rows.append((f"Grad-CAM (auto layer), batch {batch}", ours, theirs, fwd * batch * (1 + 1 / 12)))

        ours = median_time(lambda: gradcam(model, pixels, "top", method="gae"), args.repeat)

        def torch_gae():
            kept.clear()
            y = net(((torch.tensor(pixels).permute(0, 3, 1, 2) / 255 - mean) / std).requires_grad_(True))
            y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
            r = torch.eye(197).expand(batch, 197, 197)
            for a in kept:
                a, g = a.reshape(batch, -1, 197, 197), a.grad.reshape(batch, -1, 197, 197)
                r = r + (g * a).clamp(min=0).mean(1) @ r
            cam = r[:, 0, 1:].reshape(batch, 14, 14)
            return cam / cam.amax(dim=(1, 2), keepdim=True)

        keep_attention(True)
        theirs = median_time(torch_gae, args.repeat)
        mine = np.stack([r[0].cam for r in gradcam(model, pixels, "top", method="gae")])
        agree.append(np.abs(mine - torch_gae().detach().numpy()).max())
        keep_attention(False)
        print(
            f"batch {batch}: max |convlens - torch| of the normalized maps: Grad-CAM {agree[0]:.1e}, GAE {agree[1]:.1e}"
        )
        rows.append((f"GAE (12 blocks), batch {batch}", ours, theirs, 2 * fwd * batch))

    print(f"ViT-B/16 at 224, {args.threads} threads; forward pass {fwd / 1e9:.1f} GFLOP per image; "
          f"matmul peak {peak:.0f} GFLOP/s (torch.mm 2048^2 float32)")
    print(f"{'task':<36} {'convlens s':>10} {'torch s':>9} {'ratio':>6} {'target':>7} {'GFLOP':>7} {'% peak':>7}")
    for name, o, t_, flops in rows:
        print(f"{name:<36} {o:>10.3f} {t_:>9.3f} {o / t_:>6.2f} {'<= 0.9':>7} {flops / 1e9:>7.0f} "
              f"{100 * flops / o / 1e9 / peak:>6.0f}%")


if __name__ == "__main__":
    main()
