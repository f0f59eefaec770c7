"""convlens command line: parse, call the engine or a converter, write files, print a summary.

Exit codes: 0 done, 1 a user error (one sentence on stderr), 2 an internal error (traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

EXAMPLES = {
    "convert": "convlens convert torch:vgg16 --weights none -o vgg16.onnx",
    "layers": "convlens layers vgg16.onnx",
    "activations": "convlens activations vgg16.onnx cat.jpg --layers features.1,features.29 -o acts/",
    "gradient": "convlens gradient vgg16.onnx cat.jpg --class 281 -o grad/",
    "cam": "convlens cam vgg16.onnx cat.jpg --class top -o cam/",
    "filters": "convlens filters vgg16.onnx --layer features.10 --filters 0-7 -o filters/",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage mistakes are user errors: exit 1, one sentence
        self.print_usage(sys.stderr)
        print(f"convlens: error: {message}", file=sys.stderr)
        sys.exit(1)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object with the files written and key results")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (and --json output)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file (converted by convlens or foreign)")
    p.add_argument("--preprocess", choices=["caffe", "torch", "tf", "raw"], help="input preset for files without metadata")
    p.add_argument("--layout", choices=["nchw", "nhwc"], help="input layout for files without metadata")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="ONNX Runtime provider")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convlens", description="See what a convnet has learned, from an .onnx file.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        return p

    p = add("convert", "Convert a Keras or PyTorch model to ONNX with its layer outputs exposed.")
    p.add_argument("source", help="keras:NAME, torch:NAME, FILE.keras or FILE.pt2")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--weights", default="none", help="imagenet, none, or a weights file (.weights.h5, .pth)")
    p.add_argument("--no-top", action="store_true", help="keras: without the classifier head")
    p.add_argument("--input-size", help="HxW or one number, e.g. 224")
    p.add_argument("--preprocess", choices=["caffe", "torch", "tf", "raw"], help="override the recorded preprocessing")

    p = add("layers", "List the layers of a model: name, op kind, output shape and layout.")
    _model_args(p)

    p = add("activations", "Write every channel of chosen layers for an image as a grid PNG and a .npy array.")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--layers", required=True, help="comma-separated layer names (see `convlens layers`)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.errors import ConvlensError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1)
        return int(exc.code or 0)
    try:
        result = COMMANDS[args.command](args)
    except ConvlensError as exc:
        print(f"convlens: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return 1
    except Exception:  # a bug in convlens: show everything
        traceback.print_exc()
        print("convlens: internal error (the traceback above is a bug; please report it)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=None, default=str))
    elif not args.quiet:
        print(result.pop("summary", ""))
    return 0


def _load(args):
    from engine import load
    from engine.runtime import configure

    configure(args.device, args.threads)
    return load(args.model, args.preprocess, args.layout)


def cmd_convert(args) -> dict:
    from converters import convert

    path = convert(args.source, args.output, weights=args.weights, include_top=not args.no_top,
                   input_size=args.input_size, preprocess=args.preprocess, force=args.force)
    from engine import load

    model = load(path)
    return {"files": [str(path)], "layers": len(model.layers), "input": vars(model.input_spec),
            "summary": f"wrote {path} ({len(model.layers)} layers exposed, input {model.input_spec.layout} "
                       f"{model.input_spec.size}, {model.input_spec.preset or 'custom'} preprocessing)"}


def cmd_layers(args) -> dict:
    from engine.techniques.layers import layer_table

    model = _load(args)
    rows = layer_table(model)
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'name':<{width}}  {'kind':<10}  {'shape':<20}  layout"]
    lines += [f"{r['name']:<{width}}  {r['kind']:<10}  {str(tuple(r['shape'])):<20}  {r['layout']}" for r in rows]
    spec = model.input_spec
    lines.append(f"{len(rows)} layers; source {model.meta.source} ({model.meta.source_name}); input {spec.layout} "
                 f"{spec.size}, {spec.color}, preset {spec.preset}" + (" (inferred: no convlens metadata)" if model.meta.inferred else ""))
    return {"layers": rows, "source": model.meta.source, "input": vars(spec), "files": [], "summary": "\n".join(lines)}


def cmd_activations(args) -> dict:
    from engine.render import channel_grid, colorize, upscale, write_npy, write_png
    from engine.techniques.activations import activations
    from engine.techniques.common import to_nchw

    model = _load(args)
    names = [n.strip() for n in args.layers.split(",") if n.strip()]
    values = activations(model, args.image, names)
    out = Path(args.output)
    files, shapes = [], {}
    for name in names:
        arr = values[name]
        layer = model.layer(name)
        safe = name.replace("/", "_").replace(":", "_")
        grid = upscale(colorize(channel_grid(to_nchw(arr, layer.layout)[0])))
        files.append(str(write_png(out / f"{safe}.png", grid, args.force)))
        files.append(str(write_npy(out / f"{safe}.npy", arr, args.force)))
        shapes[name] = list(arr.shape)
    return {"files": files, "shapes": shapes,
            "summary": f"wrote {len(files)} files to {out} ({', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())})"}


COMMANDS = {"convert": cmd_convert, "layers": cmd_layers, "activations": cmd_activations}

if __name__ == "__main__":
    sys.exit(main())
