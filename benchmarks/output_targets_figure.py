"""The README's figure of outputs that are not class scores, on PaddleOCR's trained text detector and recognizer
(the files rapidocr-onnxruntime's wheel ships) and the bundled photo with a caption drawn on it.

    python benchmarks/output_targets_figure.py [-o docs/output_targets.png]

Panels: the photo; the detector's probability map; Grad-CAM of the detector's region objective (its logit
summed where it sees text) at the auto layer; the caption line as the recognizer reads it, with the decoded
text; the recognizer's input gradient for its greedy sequence (|gradient| summed over colors).
"""
import argparse
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

CAPTION = "Egyptian cat 78.5%"


def captioned(photo: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo with a white strip and black caption at the bottom; and the strip (x1, y1, x2, y2)."""
    out = photo.copy()
    h, w = out.shape[:2]
    strip = (int(w * 0.05), int(h * 0.80), int(w * 0.75), int(h * 0.94))
    cv2.rectangle(out, strip[:2], strip[2:], (255, 255, 255), -1)
    cv2.putText(out, CAPTION, (strip[0] + 8, strip[3] - 12), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2)
    return out, strip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "docs" /
                                                  "output_targets.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import convlens
    from convlens.engine.render.images import SAMPLE_PATH, load_image, resize
    from convlens.engine.render.pictures import overlay
    from convlens.engine.runtime.program import program

    models = Path(find_spec("rapidocr_onnxruntime").submodule_search_locations[0]) / "models"
    photo, strip = captioned(resize(load_image(SAMPLE_PATH), (320, 480)).astype(np.uint8))
    detector = convlens.load(models / "ch_PP-OCRv4_det_infer.onnx", scale="1/255", mean="0.485,0.456,0.406",
                             std="0.229,0.224,0.225", channel_order="bgr")
    pixels = photo.astype(np.float32)
    probability = program(detector, [detector.explained_output], pixels.shape[:2]).run(pixels[None])
    probability = probability[detector.explained_output][0, 0]
    maps, _ = convlens.cam(detector, pixels)
    heat = maps[0][0].heatmap

    recognizer = convlens.load(models / "ch_PP-OCRv4_rec_infer.onnx", scale="1/127.5", mean="1,1,1",
                               channel_order="bgr")
    x1, y1, x2, y2 = strip
    line = photo[y1:y2, x1:x2]
    line = cv2.resize(line, (int(line.shape[1] * 48 / line.shape[0]) // 4 * 4, 48),
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    text = convlens.api.decoded(recognizer, [line])[0]
    (attribution,) = convlens.saliency(recognizer, line)
    strength = np.abs(attribution.attribution).sum(axis=2)

    fig = plt.figure(figsize=(11, 5.2))
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 1])
    panels = [(grid[0, 0], photo, "the photo, a caption drawn on it"),
              (grid[0, 1], probability, f"PaddleOCR v4 detector: text probability\n(max {probability.max():.2f})"),
              (grid[0, 2], overlay(photo, heat), f"Grad-CAM of its region objective\nat {maps[0][0].layer}")]
    for where, picture, title in panels:
        ax = fig.add_subplot(where)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 0])
    ax.imshow(line.astype(np.uint8))
    ax.set_title(f"recognizer reads: {text!r}", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(grid[1, 1:])
    ax.imshow(strength / (np.percentile(strength, 99.5) or 1), cmap="inferno", vmin=0, vmax=1)
    ax.set_title("|input gradient| of the greedy sequence's log-probability", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}: decoded {text!r}, detector auto layer {maps[0][0].layer}")


if __name__ == "__main__":
    main()
