"""The README's evaluation figures: EfficientNet-Lite0 (real ImageNet weights) on the shipped sample set.

    python scripts/evaluate_sample_set.py [OUT_FOLDER]

Converts Lite0, builds the sample set from scikit-image's photos, runs `convlens evaluate` with every metric
(50 steps), prints the summary as a Markdown table and draws the mean curves to docs/evaluation_curves.png.
"""
import sys
import tempfile
from pathlib import Path

METHODS = "gradcam,gradcam++,layercam,vanilla,smoothgrad"
METRICS = "deletion,insertion,road,pointing,energy-pointing,confidence"


def main():
    import torch

    import convlens
    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine.evaluation.metrics import METRICS as COLUMNS
    from convlens.engine.evaluation.sample_set import build
    from convlens.engine.model.onnx_file import save_onnx

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="convlens-eval-"))
    model = out / "lite0.onnx"
    if not model.exists():
        save_onnx(convert_module(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), name="efficientnet-lite0",
                                 preprocess="tf"), model)
    listing, boxes = build(out / "set")
    run = convlens.evaluate(str(model), [str(listing)], out / "run", methods=METHODS, metrics=METRICS, boxes=boxes,
                            steps=50, quiet=False)
    columns = [c for k in METRICS.split(",") for c in COLUMNS[k]]
    print(f"{run.images} images; mean [95 % bootstrap interval]\n")
    print("| method | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for method, entry in run.summary["methods"].items():
        cells = [f"{entry[c]['mean']:.3f} [{entry[c]['ci95'][0]:.2f}, {entry[c]['ci95'][1]:.2f}]" for c in columns]
        print(f"| {method} | " + " | ".join(cells) + " |")
    draw_curves(run.folder, Path(__file__).resolve().parent.parent / "docs" / "evaluation_curves.png")
    print(f"\nrun folder: {run.folder}")


def draw_curves(folder: Path, picture: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.parquet as pq

    from convlens.engine.evaluation.summary import mean_curves

    curves = mean_curves(pq.read_table(folder / "curves.parquet"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("deletion", "insertion")):
        for method, (fractions, means) in curves[metric].items():
            ax.plot(fractions, means, label=method, linestyle="--" if method == "random" else "-",
                    color="gray" if method == "random" else None)
        ax.set_title(f"{metric} (mean over images)")
        ax.set_xlabel("fraction of pixels " + ("removed" if metric == "deletion" else "inserted"))
        ax.set_ylabel("probability of the explained class")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(picture, dpi=110)
    print(f"wrote {picture}")


if __name__ == "__main__":
    main()
