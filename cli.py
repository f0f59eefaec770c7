"""convlens command line: parse, call the engine or a converter, write files, print a summary.

Exit codes: 0 done, 1 a user error (one sentence on stderr), 2 an internal error (traceback),
3 a comparison that ran and found a difference beyond its tolerance.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np

from . import api

EXAMPLES = {
    "convert": "convlens convert torch:vgg16 --weights none -o vgg16.onnx",
    "convert-timm": "convlens convert timm:deit_tiny_patch16_224 --weights deit.safetensors -o deit.onnx",
    "layers": "convlens layers vgg16.onnx",
    "activations": "convlens activations vgg16.onnx cat.jpg --layers features.1,features.29 -o acts/",
    "cam": "convlens cam vgg16.onnx cat.jpg --class \"African elephant\" --method gradcam++ -o cam/",
    "attention": "convlens attention vit_b_16.onnx cat.jpg --block 11 -o attention/",
    "export": "convlens export vgg16.onnx --method gradcam -o vgg16_gradcam.onnx",
    "saliency": "convlens saliency vgg16.onnx cat.jpg --method smoothgrad -o saliency/",
    "filters": "convlens filters vgg16.onnx --layer features.10 --filters 0-7 -o filters/",
    "demo": "convlens demo -o demo-out",
    "compare": "convlens compare vgg16_keras.onnx vgg16_torch.onnx cat.jpg -o compare/",
    "sanity": "convlens sanity vgg16.onnx cat.jpg --method guided-backprop -o sanity/",
    "verify": "convlens verify vgg16_torch.onnx --source torch:vgg16 --weights vgg16.pth",
    "report": "convlens report vgg16.onnx cat.jpg dog.jpg -o report.html",
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
    p.add_argument("--verbose", action="store_true", help="also show the frameworks' own warnings and logs")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file (converted by convlens or foreign)")
    p.add_argument("--preprocess", choices=["caffe", "torch", "tf", "raw"], help="input preset for files without metadata")
    p.add_argument("--layout", choices=["nchw", "nhwc"], help="input layout for files without metadata")
    p.add_argument("--scores", metavar="TENSOR", help="the class-score output, for files with several outputs")
    p.add_argument("--labels", help="class names: imagenet (shipped) or a file with one name per line")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="ONNX Runtime provider")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's choice)")


def build_parser() -> argparse.ArgumentParser:
    from convlens.engine.techniques.cam_methods import CAM_METHODS
    from convlens.engine.techniques.saliency import SALIENCY_METHODS

    parser = _Parser(prog="convlens", description="See what an image model (convnet or vision transformer) has learned, from an .onnx file.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()))
    from . import __version__

    parser.add_argument("--version", action="version", version=f"convlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, help_text, methods=None):
        epilog = f"example:\n  {EXAMPLES[name]}"
        if methods:  # the method tables document themselves
            epilog = "methods:\n" + "\n".join(f"  {k}: {m.formula}" for k, m in methods.items()) + "\n\n" + epilog
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        return p

    p = add("convert", "Convert a Keras or PyTorch model to ONNX with its layer outputs exposed.")
    p.add_argument("source", help="keras:NAME, torch:NAME, timm:NAME, FILE.keras or FILE.pt2")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--weights", help="imagenet, none (the default: random), or a weights file (.weights.h5, .pth, "
                   ".safetensors for timm)")
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
    p = add("cam", "Class activation heatmaps (Grad-CAM family) with overlays and top-5 predictions.", CAM_METHODS)
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--layer", default="auto", help="a layer with a spatial grid or a transformer's token layer; auto: "
                   "the last one after the last convolution's activation or residual add, before pooling (on a "
                   "class-token transformer, the last block's first norm)")
    p.add_argument("--class", dest="target", default="top", help="an index, a label, top or top5")
    p.add_argument("--method", default="gradcam", choices=list(CAM_METHODS))
    p.add_argument("--score", default="logit", choices=["logit", "prob"], help="differentiate the logit (paper) or the softmax (lesson)")
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"], help="rollout: how heads are fused")
    p.add_argument("--discard", type=float, default=0.0, help="rollout: fraction of the weakest attention set to zero")
    p.add_argument("--batch", type=int, default=8, help="images per run")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("attention", "Per-head attention maps of a transformer's class token (or one patch) in one block.")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--block", type=int, required=True, help="the block, 0-based (see attention.K in `convlens layers`)")
    p.add_argument("--patch", help="ROW,COL of a patch whose attention to show instead of the class token's")
    p.add_argument("-o", "--output", required=True, help="output folder")

    from convlens.engine.explainer import SALIENCY_EXPORTS

    exportable = [m for m, row in CAM_METHODS.items() if row.onnx_map is not None] + list(SALIENCY_EXPORTS)
    p = add("export", "Write a standalone explainer .onnx: uint8 image in; probabilities, class, heatmap, overlay out.")
    _model_args(p)
    p.add_argument("--method", default="gradcam", choices=exportable)
    p.add_argument("--layer", default="auto", help="CAM methods: the layer (auto: as convlens cam picks it)")
    p.add_argument("--steps", type=int, default=32, help="integrated-gradients: path points")
    p.add_argument("--samples", type=int, default=25, help="smoothgrad: noisy copies per image")
    p.add_argument("--seed", type=int, default=0, help="smoothgrad: the seed of the noise baked into the graph")
    p.add_argument("-o", "--output", required=True, help="the explainer .onnx file to write")

    p = add("saliency", "Gradient attributions in pixel space.", SALIENCY_METHODS)
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--method", default="vanilla", choices=list(SALIENCY_METHODS))
    p.add_argument("--class", dest="target", default="top", help="an index, a label or top")
    p.add_argument("--score", default="logit", choices=["logit", "prob"])
    p.add_argument("--samples", type=int, default=25, help="smoothgrad: noisy copies per image")
    p.add_argument("--steps", type=int, default=32, help="integrated-gradients: path points")
    p.add_argument("--seed", type=int, default=0, help="smoothgrad: the noise's seed")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("filters", "Filter patterns by gradient ascent in input space.")
    _model_args(p)
    p.add_argument("--layer", required=True, help="the layer whose filters to visualize")
    p.add_argument("--filters", default="0-7", help="0-63, 0,5,9 or all")
    p.add_argument("--recipe", default="chollet", choices=["chollet", "lucid"])
    p.add_argument("--steps", type=int, help="ascent steps (chollet 40, lucid 512)")
    p.add_argument("--size", type=int, help="image side in pixels (chollet 150, lucid 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="start from this image or .npy array instead of noise")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p = add("report", "One self-contained HTML page with every technique on a model and images.")
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="the .html file to write")

    p = add("compare", "Compare two models (e.g. Keras and PyTorch VGG16) layer by layer and technique by technique.")
    p.add_argument("model_a", help="the reference .onnx file")
    p.add_argument("model_b", help="the .onnx file to check against it")
    p.add_argument("image", help="an image file")
    p.add_argument("--layers", help="pairs A1:B1,A2:B2 (default: aligned from metadata names)")
    p.add_argument("--class", dest="target", default="top", help="the class for Grad-CAM and gradients")
    p.add_argument("--activation-rtol", type=float, default=1e-4)
    p.add_argument("--logits-rtol", type=float, default=1e-4, help="also bounds the probabilities' max abs difference")
    p.add_argument("--cam-tol", type=float, default=1e-3)
    p.add_argument("--gradient-rtol", type=float, default=1e-3)
    p.add_argument("--filter-psnr", type=float, default=40.0)
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("verify", "Check the engine against the source framework's own forward pass and autograd.")
    _model_args(p)
    p.add_argument("--source", required=True, help="keras:NAME, torch:NAME, timm:NAME or FILE.keras, as converted")
    p.add_argument("--weights", default="none", help="the same weights the file was converted with")
    p.add_argument("--image", help="an image (default: the bundled photo)")

    p = add("sanity", "Cascading weight randomization (Adebayo et al. 2018): does the map depend on the model?")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--method", default="gradcam", choices=list(CAM_METHODS) + list(SALIENCY_METHODS),
                   help="a CAM method or a saliency method")
    p.add_argument("--steps", type=int, default=6, help="randomization steps from the top layer down")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("demo", "Convert a real pretrained model (EfficientNet-Lite0) and show every technique on a cat photo.")
    p.add_argument("-o", "--output", default="convlens-demo", help="output folder")
    p.add_argument("--filter-steps", type=int, default=96, help="lucid steps for the filter section")
    return parser


def main(argv: list[str] | None = None) -> int:
    from convlens.engine.errors import ConvlensError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1)
        return int(exc.code or 0)
    _route_warnings(getattr(args, "verbose", False))
    try:
        if args.command in FOLDER_OUTPUTS:  # refuse an unusable -o before any work is done
            from convlens.engine.onnx_file import output_folder

            output_folder(args.output)
        result = COMMANDS[args.command](args)
    except ConvlensError as exc:
        print(f"convlens: {exc}", file=sys.stderr)
        return 1
    except ComparisonFailed as exc:  # the comparison ran; its figures are beyond tolerance
        result = exc.args[0]
        print(json.dumps(result, default=str) if args.json else result.pop("summary"))
        print(f"convlens: comparison failed: first difference at {result['first_failure']}.", file=sys.stderr)
        return 3
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


def _route_warnings(verbose: bool) -> None:
    """convlens's own warnings (about the user's model) as one line each; third-party ones only with --verbose."""
    import warnings

    from convlens.engine.errors import ConvlensWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ConvlensWarning):
            print(f"convlens: warning: {message}", file=sys.stderr)
        elif verbose:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    if not verbose:
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", ConvlensWarning)


def _load(args):
    return api.load(args.model, preprocess=args.preprocess, layout=args.layout, scores=args.scores, labels=args.labels,
                    device=args.device, threads=args.threads)


def cmd_convert(args) -> dict:
    path = api.convert(args.source, args.output, weights=args.weights, no_top=args.no_top,
                       input_size=args.input_size, preprocess=args.preprocess, force=args.force, verbose=args.verbose)
    model = api.load(path)
    spec = model.input_spec
    size = f"{spec.size[0]}x{spec.size[1]}" if spec.size else "of any size"
    return {"files": [str(path)], "layers": len(model.layers), "input": vars(spec),
            "summary": f"wrote {path} ({len(model.layers)} layers exposed, input {spec.layout} {size}, "
                       f"{spec.preset or 'custom'} preprocessing)"}


def cmd_layers(args) -> dict:
    model = _load(args)
    rows = api.layers(model)
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'name':<{width}}  {'kind':<10}  {'shape':<20}  layout"]
    lines += [f"{r['name']:<{width}}  {r['kind']:<10}  {str(tuple(r['shape'])):<20}  {r['layout']}" for r in rows]
    spec = model.input_spec
    attention = sum(r["kind"] == "attention" for r in rows)
    lines.append(f"{len(rows) - attention} layers" + (f" and {attention} attention maps" if attention else "") +
                 f"; source {model.meta.source} ({model.meta.source_name}); input {spec.layout} "
                 f"{spec.size}, {spec.color_name}, preset {spec.preset}" + (" (inferred: no convlens metadata)" if model.meta.inferred else ""))
    return {"layers": rows, "source": model.meta.source, "input": vars(spec), "files": [], "summary": "\n".join(lines)}


def cmd_activations(args) -> dict:
    from convlens.engine.render import channel_grid, colorize, upscale, write_npy, write_png
    from convlens.engine.techniques.activations import as_channels

    model = _load(args)
    values = api.activations(model, args.image, args.layers)
    names = list(values)
    out = Path(args.output)
    files, shapes = [], {}
    for name in names:
        arr = values[name]
        layer = model.layer(name)
        safe = name.replace("/", "_").replace(":", "_")
        grid = upscale(colorize(channel_grid(as_channels(model, layer, arr)[0])))
        files.append(str(write_png(out / f"{safe}.png", grid, args.force)))
        files.append(str(write_npy(out / f"{safe}.npy", arr, args.force)))
        shapes[name] = list(arr.shape)
    return {"files": files, "shapes": shapes,
            "summary": f"wrote {len(files)} files to {out} ({', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())})"}


def cmd_export(args) -> dict:
    explainer = api.export(_load(args), args.output, method=args.method, layer=args.layer, steps=args.steps,
                           samples=args.samples, seed=args.seed, force=args.force)
    outputs = [o.name for o in explainer.proto.graph.output]
    lines = [f"wrote {args.output}: {args.method}" + (f" at {explainer.layer}" if explainer.layer else "") +
             f"; inputs image (uint8 N x H x W x 3), target (int64 N, optional); outputs {', '.join(outputs)}"]
    lines += [f"note: {n}" for n in explainer.notes]
    return {"files": [args.output], "method": args.method, "layer": explainer.layer, "outputs": outputs,
            "notes": explainer.notes, "summary": "\n".join(lines)}


def cmd_attention(args) -> dict:
    from convlens.engine.errors import ConvlensError
    from convlens.engine.render import channel_grid, colorize, upscale, write_npy, write_png

    patch = None
    if args.patch is not None:
        try:
            patch = tuple(int(v) for v in args.patch.split(","))
        except ValueError:
            patch = ()
        if len(patch) != 2:
            raise ConvlensError(f"--patch must look like ROW,COL (two integers), not {args.patch!r}.")
    maps = api.attention(_load(args), args.image, block=args.block, patch=patch)
    out = Path(args.output)
    stem = f"attention_block{args.block}_" + ("class" if patch is None else f"patch{patch[0]}_{patch[1]}")
    files = [str(write_npy(out / f"{stem}.npy", maps, args.force)),
             str(write_png(out / f"{stem}.png", upscale(colorize(channel_grid(maps, per_row=min(len(maps), 6)))), args.force))]
    who = "the class token" if patch is None else f"patch {patch[0]},{patch[1]}"
    return {"files": files, "heads": len(maps), "grid": list(maps.shape[1:]),
            "summary": f"{len(maps)} heads of block {args.block}, attention of {who} over a "
                       f"{maps.shape[1]}x{maps.shape[2]} patch grid\nwrote {len(files)} files to {out}"}


def _image_batches(items: list[str], size: int, free_size: bool):
    """Batches of (path, RGB image). A model that takes any size runs images of one size together, so a
    folder of mixed sizes is batched by size (in order of first appearance) instead of refused."""
    from convlens.engine.images import image_paths, load_image

    paths = image_paths(items)
    if not free_size:
        for s in range(0, len(paths), size):
            yield [(p, load_image(p)) for p in paths[s:s + size]]
        return
    groups: dict[tuple, list] = {}
    for p in paths:
        img = load_image(p)
        groups.setdefault(img.shape[:2], []).append((p, img))
        if len(groups[img.shape[:2]]) == size:
            yield groups.pop(img.shape[:2])
    yield from (g for g in groups.values() if g)


def cmd_cam(args) -> dict:
    from convlens.engine.errors import ConvlensError
    from convlens.engine.images import image_paths
    from convlens.engine.render import jet_overlay, progress, write_npy, write_png

    if args.batch < 1:
        raise ConvlensError(f"--batch must be 1 or more, not {args.batch}.")
    model = _load(args)
    out = Path(args.output)
    files, report = [], []
    total = len(image_paths(args.images))
    done = 0
    for batch in _image_batches(args.images, args.batch, model.input_spec.size is None):
        paths = [p for p, _ in batch]
        maps, tops = api.cam(model, [img for _, img in batch], target=args.target, layer=args.layer,
                             method=args.method, score=args.score, head_fusion=args.head_fusion, discard=args.discard)
        for (path, original), results, top in zip(batch, maps, tops):
            entry = {"image": str(path), "top5": [{"index": i, "label": l, "prob": p} for i, l, p in top], "maps": []}
            for r in results:
                stem = f"{path.stem}_{r.method}_{r.class_index}"
                heat = __import__("cv2").resize(r.cam, (original.shape[1], original.shape[0]))
                files.append(str(write_npy(out / f"{stem}_layer.npy", r.cam, args.force)))
                files.append(str(write_npy(out / f"{stem}_image.npy", heat, args.force)))
                files.append(str(write_png(out / f"{stem}_overlay.png", jet_overlay(original, heat), args.force)))
                entry["maps"].append({"class": r.class_index, "label": r.label, "score": r.score, "layer": r.layer,
                                      "zero": r.zero, "peak_yx": [int(v) for v in np.unravel_index(np.argmax(heat), heat.shape)]})
            report.append(entry)
        done += len(paths)
        progress(done, total, "images", args.quiet or args.json)
    lines = []
    for e in report:
        lines.append(f"{e['image']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in e["top5"]))
        for m in e["maps"]:
            lines.append(f"  {args.method} for {m['label']} ({m['class']}) at {m['layer']}" + (" (zero map: nothing to show)" if m["zero"] else ""))
    lines.append(f"wrote {len(files)} files to {out}")
    from convlens.engine.techniques.cam_layer import AUTO_RULE

    layer = report[0]["maps"][0]["layer"] if report and report[0]["maps"] else None
    rule = AUTO_RULE if args.layer in (None, "auto") else "given by --layer"
    return {"files": files, "images": report, "layer": layer, "layer_rule": rule, "summary": "\n".join(lines)}


def cmd_saliency(args) -> dict:
    from convlens.engine.images import image_paths
    from convlens.engine.render import write_npy, write_png
    from convlens.engine.techniques.saliency import saliency_image

    model = _load(args)
    out = Path(args.output)
    files, report = [], []
    for path in image_paths(args.images):
        r = api.saliency(model, str(path), target=args.target, method=args.method, score=args.score,
                         samples=args.samples, steps=args.steps, seed=args.seed)[0]
        stem = f"{path.stem}_{args.method}_{r.class_index}"
        files.append(str(write_npy(out / f"{stem}.npy", r.attribution, args.force)))
        files.append(str(write_png(out / f"{stem}.png", saliency_image(r.saliency), args.force)))
        report.append({"image": str(path), "class": r.class_index, "label": r.label,
                       "completeness_error": r.completeness_error})
    summary = "\n".join(f"{e['image']}: {args.method} for {e['label']} ({e['class']})"
                         + (f", completeness error {e['completeness_error']:.2%}" if e["completeness_error"] is not None else "")
                         for e in report)
    return {"files": files, "images": report, "summary": summary + f"\nwrote {len(files)} files to {out}"}


def cmd_filters(args) -> dict:
    from convlens.engine.images import load_image
    from convlens.engine.render import filter_grid, write_npy, write_png
    model = _load(args)
    init = None
    if args.init:
        init = np.load(args.init) if args.init.endswith(".npy") else load_image(args.init)
    res = api.filters(model, args.layer, filters=args.filters, recipe=args.recipe, steps=args.steps, size=args.size,
                      seed=args.seed, init=init, quiet=args.quiet or args.json)
    out = Path(args.output)
    safe = args.layer.replace("/", "_").replace(":", "_")
    files = [str(write_png(out / f"{safe}_{f}.png", img, args.force)) for f, img in zip(res.filters, res.images)]
    files.append(str(write_png(out / f"{safe}_grid.png", filter_grid(res.images), args.force)))
    files.append(str(write_npy(out / f"{safe}.npy", res.raw, args.force)))
    objectives = {int(f): float(o) for f, o in zip(res.filters, res.objectives)}
    summary = (f"{len(res.filters)} filters of {args.layer} ({args.recipe}); mean final activation "
               f"{np.mean(res.objectives):.3g}" + (f"; dead filters: {res.dead}" if res.dead else "")
               + f"\nwrote {len(files)} files to {out}")
    return {"files": files, "objectives": objectives, "dead": res.dead, "summary": summary}


def cmd_report(args) -> dict:
    from convlens.engine.images import image_paths
    from convlens.engine.onnx_file import check_writable, write_atomic
    check_writable(args.output, args.force)
    model = _load(args)
    page, results = api.report(model, [str(p) for p in image_paths(args.images)], title=f"convlens: {Path(args.model).name}")
    path = write_atomic(args.output, page.encode(), args.force)
    return {"files": [str(path)], **results, "summary": f"wrote {path} ({len(page) // 1024} KB)"}


def cmd_demo(args) -> dict:
    """Convert EfficientNet-Lite0 (weights ship with a package), then report on the bundled cat photo."""
    import time

    from convlens.converters.pretrained import efficientnet_lite0
    from convlens.converters.torch_converter import convert_module
    from convlens.engine import load
    from convlens.engine.images import sample_image
    from convlens.engine.onnx_file import save_onnx, write_atomic
    from convlens.engine.render import write_png
    from convlens.engine.report import build_report

    out = Path(args.output)
    onnx_path = out / "efficientnet_lite0.onnx"
    start = time.perf_counter()
    if onnx_path.exists() and not args.force:
        note = f"reused {onnx_path}"
    else:
        import torch

        from convlens.converters.quiet import quiet_frameworks

        with quiet_frameworks(args.verbose):
            net = efficientnet_lite0()
            save_onnx(convert_module(net, torch.zeros(1, 3, 224, 224), name="efficientnet-lite0", preprocess="tf"),
                      onnx_path, args.force)
        note = f"converted EfficientNet-Lite0 to {onnx_path}"
    model = load(onnx_path)
    photo = out / "chelsea.png"
    if not photo.exists():
        write_png(photo, sample_image().astype("uint8"))
    page, results = build_report(model, [str(photo)], "convlens demo: EfficientNet-Lite0 on Chelsea the cat",
                                 filter_steps=args.filter_steps)
    report = write_atomic(out / "report.html", page.encode(), True)
    top = results["images"][0]["top5"][0]
    return {"files": [str(onnx_path), str(report)], **results,
            "summary": f"{note}\ntop prediction: {top[1]} ({top[2]:.1%})\nwrote {report} in {time.perf_counter() - start:.0f} s"}


class ComparisonFailed(Exception):
    """A comparison ran and found a figure beyond its tolerance (exit code 3)."""


def cmd_compare(args) -> dict:
    import json as _json

    from convlens.engine.onnx_file import write_atomic
    from convlens.engine.render import filter_grid, jet_overlay, write_png
    from convlens.engine.techniques.common import prepare
    from convlens.engine.techniques.compare import markdown

    a, b = api.load(args.model_a), api.load(args.model_b)
    pairs = None
    if args.layers:
        pairs = [tuple(p.split(":")) for p in args.layers.split(",")]
        if not all(len(p) == 2 and all(p) for p in pairs):  # not an assert: `python -O` strips those
            from convlens.engine.errors import ConvlensError

            raise ConvlensError(f"--layers must look like A1:B1,A2:B2, not {args.layers!r}.")
    c = api.compare(a, b, args.image, layers=pairs, target=args.target, activation_rtol=args.activation_rtol,
                    logits_rtol=args.logits_rtol, cam_tol=args.cam_tol, gradient_rtol=args.gradient_rtol,
                    filter_psnr=args.filter_psnr)
    out = Path(args.output)
    table = markdown(c, Path(args.model_a).name, Path(args.model_b).name)
    result = {"rows": c.rows, "figures": c.figures, "passed": c.passed, "first_failure": c.first_failure}
    files = [str(write_atomic(out / "compare.md", table.encode(), args.force)),
             str(write_atomic(out / "compare.json", _json.dumps(result, indent=1, default=str).encode(), args.force))]
    shown = prepare(a, args.image)[0]
    if "gradcam" in c.pictures:
        ha, hb = c.pictures["gradcam"]
        files.append(str(write_png(out / "gradcam_side_by_side.png",
                                   np.concatenate([jet_overlay(shown, ha), jet_overlay(shown, hb)], axis=1), args.force)))
    if "filters" in c.pictures:
        fa, fb = c.pictures["filters"]
        files.append(str(write_png(out / "filters_side_by_side.png", filter_grid(np.concatenate([fa, fb]), per_row=len(fa)), args.force)))
    result.update(files=files, summary=table + f"\nwrote {len(files)} files to {out}")
    if not c.passed:
        raise ComparisonFailed(result)
    return result


def cmd_sanity(args) -> dict:
    import json as _json

    from convlens.engine.onnx_file import write_atomic
    from convlens.engine.render import line_plot, write_png
    from convlens.engine.techniques.sanity import markdown as sanity_markdown

    model = _load(args)
    rows = api.sanity(model, args.image, method=args.method, steps=args.steps)
    out = Path(args.output)
    table = sanity_markdown(rows)
    files = [str(write_atomic(out / f"sanity_{args.method}.md", table.encode(), args.force)),
             str(write_atomic(out / f"sanity_{args.method}.json", _json.dumps(rows).encode(), args.force)),
             str(write_png(out / f"sanity_{args.method}.png", line_plot([r["spearman"] for r in rows]), args.force))]
    return {"rows": rows, "files": files, "summary": table + f"\nwrote {len(files)} files to {out}"}


def cmd_verify(args) -> dict:
    from convlens.converters.quiet import quiet_frameworks
    from convlens.engine.techniques.verification import markdown as verification_markdown

    model = _load(args)
    with quiet_frameworks(args.verbose):
        rows = api.verify(model, source=args.source, weights=args.weights, image=args.image)
    passed = all(r["ok"] for r in rows)
    result = {"rows": rows, "passed": passed, "files": [],
              "summary": verification_markdown(rows) + ("\nPASSED" if passed else "\nFAILED")}
    if not passed:
        result["first_failure"] = next(r["figure"] for r in rows if not r["ok"])
        raise ComparisonFailed(result)
    return result


FOLDER_OUTPUTS = {"attention", "activations", "cam", "saliency", "filters", "compare", "sanity", "demo"}
COMMANDS = {"report": cmd_report, "verify": cmd_verify, "sanity": cmd_sanity, "compare": cmd_compare, "demo": cmd_demo, "convert": cmd_convert, "layers": cmd_layers, "activations": cmd_activations, "attention": cmd_attention, "export": cmd_export, "cam": cmd_cam,
            "saliency": cmd_saliency, "filters": cmd_filters}

if __name__ == "__main__":
    sys.exit(main())
