"""Conversion time and peak memory of Keras VGG16 with its top (138M parameters), in a fresh process.

    python benchmarks/bench_convert.py [--source keras:VGG16]

Prints seconds and peak RSS (GiB) of `converters.convert`; the targets (under 90 s, under 6 GiB) are
read off the output, never asserted in tests.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(source: str, out: str) -> None:
    from convlens.converters import convert

    start = time.perf_counter()
    convert(source, out, weights="none", force=True)
    seconds = time.perf_counter() - start
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2 ** 20
    print(json.dumps({"source": source, "seconds": round(seconds, 1), "peak_rss_gib": round(peak, 2),
                      "file_mib": round(Path(out).stat().st_size / 2 ** 20)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="keras:VGG16")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args.source, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "model.onnx")
        res = subprocess.run([sys.executable, __file__, "--child", "--source", args.source, "--out", out],
                             capture_output=True, text=True, check=True)
        line = [l for l in res.stdout.splitlines() if l.startswith("{")][-1]
        r = json.loads(line)
        print(f"{r['source']}: converted in {r['seconds']} s (target < 90 s), peak RSS {r['peak_rss_gib']} GiB "
              f"(target < 6 GiB), file {r['file_mib']} MiB")


if __name__ == "__main__":
    main()
