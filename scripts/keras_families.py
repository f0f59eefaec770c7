"""Convert one model of every keras.applications family and check it against Keras itself.

    python scripts/keras_families.py [--size 96] [--only ConvNeXtTiny,Xception]

For each family: convert with seeded random weights (saved to a file, passed as --weights), then
`convlens verify` (logits, layers, input gradient, Grad-CAM, a filter step against Keras and
tf.GradientTape). Prints one row per model and exits non-zero if any failed. The test suite keeps two of
these (ConvNeXtTiny in tests/test_keras_transformers.py, VGG16 in the converter tests); this script is the
wide check, too slow for every CI run (about 10 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from convlens.converters.frameworks import preload_triton

preload_triton()  # torch's bundled triton before TensorFlow

import convlens  # noqa: E402
from convlens.converters.keras_converter import applications_model  # noqa: E402

FAMILIES = ["ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionV3", "InceptionResNetV2",
            "MobileNet", "MobileNetV2", "MobileNetV3Small", "NASNetMobile", "ResNet50", "ResNet50V2", "VGG16",
            "Xception"]
# models whose architecture needs a larger input than --size
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetMobile": 224}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--only", help="comma-separated model names")
    args = parser.parse_args()
    import keras

    names = args.only.split(",") if args.only else FAMILIES
    folder = Path(tempfile.mkdtemp(prefix="convlens-families-"))
    failed = 0
    try:
        print("| model | size | convert s | verify | worst figure |\n|---|---|---|---|---|")
        for name in names:
            size = max(args.size, MIN_SIZE.get(name, 0))
            keras.utils.set_random_seed(0)
            weights = folder / f"{name}.weights.h5"
            applications_model(name, "none", True, (size, size)).save_weights(weights)
            start = time.perf_counter()
            try:
                path = convlens.convert(f"keras:{name}", folder / f"{name}.onnx", weights=str(weights), input_size=size)
                seconds = time.perf_counter() - start
                rows = convlens.verify(path, source=f"keras:{name}", weights=str(weights))
                ok = all(r["ok"] for r in rows)
                worst = max(rows, key=lambda r: r["value"] / r["limit"])
                print(f"| {name} | {size} | {seconds:.0f} | {'pass' if ok else 'FAIL'} | {worst['figure']}: "
                      f"{worst['value']:.2g} (limit {worst['limit']:g}) |", flush=True)
            except Exception as exc:  # one row per model, whatever happens
                ok = False
                print(f"| {name} | {size} | - | ERROR | {exc.__class__.__name__}: {str(exc)[:120]} |", flush=True)
            failed += not ok
            for f in folder.glob(f"{name}*"):
                f.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
