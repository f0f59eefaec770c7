"""The README's figure of attribution methods on EfficientNet-Lite0 (real ImageNet weights) and the bundled photo.

    python benchmarks/propagation_figure.py [-o docs/propagation_lite0.png]

Each map is the attribution summed over the three colors, red positive, blue negative, white zero, scaled by
its 99.5th percentile of |value| (a few pixels dominate every such map); the title gives the attribution's sum
against what it should sum to (the logit for LRP, the logit's difference from the baselines' for DeepLIFT and
GradientSHAP; DeepLIFT against a black image, GradientSHAP over 8 seeded noise images, 25 points).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

# (deconvnet is the gradient on this ReLU6 model, as in Captum: left out)
METHODS = ["vanilla", "input-x-gradient", "deeplift", "gradient-shap", "lrp-epsilon-plus-flat", "lrp-epsilon-gamma-box",
           "lrp-epsilon-alpha2-beta1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "docs" /
                                                  "propagation_lite0.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from convlens import load
    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.model.onnx_file import save_onnx
    from convlens.engine.render.images import SAMPLE_PATH, load_image, resize
    from convlens.engine.techniques.saliency import saliency

    with tempfile.TemporaryDirectory() as folder:
        path = save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), name="efficientnet-lite0",
                                        preprocess="tf"), Path(folder) / "lite0.onnx")
        model = load(path)
        photo = resize(load_image(SAMPLE_PATH), (224, 224))
        results = {m: saliency(model, photo, method=m)[0] for m in METHODS}
    fig, axes = plt.subplots(1, len(METHODS) + 1, figsize=(2.2 * (len(METHODS) + 1), 2.6))
    axes[0].imshow(photo.astype(np.uint8))
    axes[0].set_title(results["vanilla"].label, fontsize=8)
    for ax, (name, r) in zip(axes[1:], results.items()):
        signed = r.attribution.sum(axis=2)
        top = np.percentile(np.abs(signed), 99.5) or 1.0
        ax.imshow(np.clip(signed / top, -1, 1), cmap="bwr", vmin=-1, vmax=1)
        title = name
        if r.relevance_sum is not None:
            title += f"\nsum {r.relevance_sum:.3g} of {r.explained_score:.3g}"
        ax.set_title(title, fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
