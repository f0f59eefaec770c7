"""The README's atlas: EfficientNet-Lite0 (real ImageNet weights) over the sample set (28 images made from
scikit-image's photos) and crops and flips of them (308 images in all), and a screenshot of one unit's page in
headless Chromium.

    python benchmarks/atlas_figure.py [--site /tmp/lite0-atlas] [--units 0-15] [--recipe lucid] [--steps 128]
        [-o docs/atlas_unit.png] [--page _blocks.5/3]

Prints the seconds the dataset pass and the whole atlas took.
"""
import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cv2


def image_set(folder: Path) -> Path:
    """The sample set, and per image four corner crops and a centre crop (70 %), each also flipped."""
    from convlens.engine.evaluation.sample_set import build

    base = folder / "sample"
    build(base)
    out = folder / "images"
    out.mkdir()
    for path in sorted(base.glob("*.png")):
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        ch, cw = int(h * 0.7), int(w * 0.7)
        crops = {"whole": img, "tl": img[:ch, :cw], "tr": img[:ch, -cw:], "bl": img[-ch:, :cw], "br": img[-ch:, -cw:],
                 "c": img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]}
        for name, crop in crops.items():
            cv2.imwrite(str(out / f"{path.stem}_{name}.png"), crop)
            if name != "whole":
                cv2.imwrite(str(out / f"{path.stem}_{name}_flip.png"), crop[:, ::-1])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", default=str(Path(tempfile.gettempdir()) / "lite0-atlas"))
    ap.add_argument("--units", default="0-15")
    ap.add_argument("--recipe", default="lucid", choices=["chollet", "lucid"])
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--page", default="_blocks.5/3")
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "docs" / "atlas_unit.png"))
    args = ap.parse_args()

    import torch

    import convlens
    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx

    site = Path(args.site)
    shutil.rmtree(site, ignore_errors=True)
    with tempfile.TemporaryDirectory() as folder:
        images = image_set(Path(folder))
        count = len(list(images.glob("*.png")))
        model = convlens.load(save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224),
                                                       name="efficientnet-lite0", preprocess="tf"),
                                        Path(folder) / "lite0.onnx"))
        start = time.perf_counter()
        data = convlens.atlas(model, images, site, units=args.units, recipe=args.recipe, steps=args.steps,
                              size=128, quiet=False)
        seconds = time.perf_counter() - start
    units = sum(len(layer["units"]) for layer in data["layers"])
    print(f"atlas of {units} units in {[l['name'] for l in data['layers']]} over {count} images: {seconds:.0f} s")
    page = site / "units" / f"{args.page}.html"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={args.output}",
                    "--window-size=1100,820", page.as_uri()], check=True, capture_output=True)
    print(f"wrote {args.output} from {page}")


if __name__ == "__main__":
    main()
