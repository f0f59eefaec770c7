"""Every transformer source issue 14 names, through the CLI as a user runs it, with seeded random weights.

    python scripts/transformer_zoo.py [--only vit_b_16,deit_tiny_patch16_224]

Per model: `convlens convert` (weights saved to a file first, so that `verify` rebuilds the same model),
`convlens verify` against torch autograd, `convlens cam` (Grad-CAM at the auto layer; rollout and GAE on
class-token models), `convlens saliency`, and `convlens filters` (one filter, a few lucid steps) on a
middle layer. One row per model; exit 1 if any step failed. About 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (source, input size or None, a layer for filters)
MODELS = [
    ("torch:vit_b_16", None, "encoder.layers.encoder_layer_5.mlp.0"),
    ("torch:vit_b_32", None, "encoder.layers.encoder_layer_5.mlp.0"),
    ("torch:swin_t", None, "features.3"),
    ("torch:swin_v2_t", None, "features.3"),
    ("torch:maxvit_t", None, "blocks.1"),
    ("timm:deit_tiny_patch16_224", None, "blocks.5.mlp.fc1"),
    ("timm:deit_tiny_distilled_patch16_224", None, "blocks.5.mlp.fc1"),
    ("timm:vit_small_patch16_224", None, "blocks.5.mlp.fc1"),
    ("timm:vit_small_patch14_reg4_dinov2", 224, "blocks.5.mlp.fc1"),
    ("timm:resnet18", None, "layer3"),
]


def save_weights(source: str, size, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    kind, name = source.split(":")
    if kind == "torch":
        import torchvision

        net = torchvision.models.get_model(name, weights=None)
        if name.startswith("vit"):  # torchvision initializes the ViT head to zero: every map would be empty
            torch.nn.init.normal_(net.heads.head.weight, std=0.02)
    else:
        import timm

        net = timm.create_model(name, **({"img_size": size} if size else {}))
    torch.save(net.state_dict(), path)


def cli(*args) -> tuple[bool, dict | str]:
    done = subprocess.run([sys.executable, "-m", "convlens.cli", *args, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        return False, (done.stderr.strip().splitlines() or ["?"])[-1][:160]
    return True, json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated sources (without the torch:/timm: prefix)")
    args = parser.parse_args()
    chosen = [m for m in MODELS if not args.only or m[0].split(":")[1] in args.only.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="convlens-zoo-"))
    image = Path(__file__).resolve().parents[1] / "engine" / "data" / "chelsea.png"
    failed = 0
    print(
        "| source | convert s | verify (input gradient rel. L2) | Grad-CAM layer | rollout / GAE | saliency | filter |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        for source, size, filter_layer in chosen:
            name = source.split(":")[1]
            weights, onnx_path = folder / f"{name}.pth", folder / f"{name}.onnx"
            save_weights(source, size, weights)
            start = time.perf_counter()
            ok, res = cli("convert", source, "--weights", str(weights), "-o", str(onnx_path),
                          *(["--input-size", str(size)] if size else []))
            row = [source, f"{time.perf_counter() - start:.0f}" if ok else f"FAIL {res}"]
            if ok:
                ok_v, res = cli("verify", str(onnx_path), "--source", source, "--weights", str(weights))
                grad = (
                    next((r for r in res["rows"] if r["figure"].startswith("input gradient")), None) if ok_v else None
                )
                row.append(f"pass ({grad['value']:.1e})" if ok_v and grad else f"FAIL {res}")
                ok_c, res = cli("cam", str(onnx_path), str(image), "-o", str(folder / f"{name}_cam"))
                row.append(res["layer"] if ok_c else f"FAIL {res}")
                attention = []
                for method in ("rollout", "gae"):
                    ok_a, res = cli(
                        "cam", str(onnx_path), str(image), "--method", method, "-o", str(folder / f"{name}_{method}")
                    )
                    attention.append(
                        "ok"
                        if ok_a
                        else ("refused" if "no attention over its whole token sequence" in str(res) else f"FAIL {res}")
                    )
                row.append(" / ".join(attention))
                ok_s, res = cli("saliency", str(onnx_path), str(image), "-o", str(folder / f"{name}_sal"))
                row.append("ok" if ok_s else f"FAIL {res}")
                ok_f, res = cli(
                    "filters",
                    str(onnx_path),
                    "--layer",
                    filter_layer,
                    "--filters",
                    "0",
                    "--recipe",
                    "lucid",
                    "--steps",
                    "8",
                    "-o",
                    str(folder / f"{name}_filters"),
                )
                row.append(f"ok ({filter_layer})" if ok_f else f"FAIL {res}")
                ok = ok_v and ok_c and ok_s and ok_f and not any(a.startswith("FAIL") for a in attention)
            failed += not ok
            print("| " + " | ".join(row) + " |", flush=True)
            for f in folder.glob(f"{name}*"):
                shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
