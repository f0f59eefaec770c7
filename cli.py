"""convlens command line: parse the arguments, dispatch to commands.py, print the result, map errors to exit codes.

Exit codes: 0 done, 1 a user error (one sentence on stderr), 2 an internal error (traceback),
3 a comparison that ran and found a difference beyond its tolerance.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from . import __version__
from .commands import COMMANDS, FOLDER_OUTPUTS, ComparisonFailed
from .engine.errors import ConvlensError, ConvlensWarning
from .engine.export.explainer import SALIENCY_EXPORTS
from .engine.model.onnx_file import output_folder
from .engine.techniques.cam_methods import CAM_METHODS
from .engine.techniques.saliency import SALIENCY_METHODS

EXAMPLES = {
    "convert": "convlens convert torch:vgg16 --weights none -o vgg16.onnx",
    "convert-timm": "convlens convert timm:deit_tiny_patch16_224 --weights deit.safetensors -o deit.onnx",
    "annotate": "convlens annotate model.onnx --channel-order bgr --scale 1/255 --labels classes.txt "
    "-o model_described.onnx",
    "layers": "convlens layers vgg16.onnx",
    "activations": "convlens activations vgg16.onnx cat.jpg --layers features.1,features.29 -o acts/",
    "cam": 'convlens cam vgg16.onnx cat.jpg --class "African elephant" --method gradcam++ -o cam/',
    "attention": "convlens attention vit_b_16.onnx cat.jpg --block 11 -o attention/",
    "export": "convlens export vgg16.onnx --method gradcam -o vgg16_gradcam.onnx",
    "saliency": "convlens saliency vgg16.onnx cat.jpg --method smoothgrad -o saliency/",
    "filters": "convlens filters vgg16.onnx --layer features.10 --filters 0-7 -o filters/",
    "demo": "convlens demo -o demo-out",
    "compare": "convlens compare vgg16_keras.onnx vgg16_torch.onnx cat.jpg -o compare/",
    "sanity": "convlens sanity vgg16.onnx cat.jpg --method guided-backprop -o sanity/",
    "verify": "convlens verify vgg16_torch.onnx --source torch:vgg16 --weights vgg16.pth",
    "report": "convlens report vgg16.onnx cat.jpg dog.jpg -o report.html",
    "atlas": "convlens atlas vgg16.onnx images/ --layers auto --units 0-15 -o atlas/",
    "example-files": "convlens example-files .",
    "evaluate": "convlens evaluate lite0.onnx images/ --methods gradcam,gradcam++,vanilla "
    "--metrics deletion,insertion,road "
    "-o run/",
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


def _recipe_args(p: argparse.ArgumentParser) -> None:
    """The input recipe: x = (pixels[channel order] * scale - mean) / std, pixels 0..255; a flag refines a preset."""
    p.add_argument("--preprocess", choices=["caffe", "torch", "tf", "raw"],
                   help="an input preset (caffe: BGR minus the ImageNet means; torch: /255 then ImageNet mean/std; "
                        "tf: /127.5 - 1; raw: pixels as they are); the flags below refine it")
    p.add_argument("--channel-order", choices=["rgb", "bgr"], help="the channel order the model was trained on")
    p.add_argument("--scale", help="pixels (0..255) are multiplied by this first: a number or a fraction, e.g. 1/255")
    p.add_argument("--mean", help="subtracted after scaling: A,B,C in the model's channel order (or one number)")
    p.add_argument("--std", help="divided by after the mean: A,B,C in the model's channel order (or one number)")
    p.add_argument("--resize", choices=["stretch", "center-crop", "letterbox"],
                   help="how a photo becomes the input's size (default stretch); maps are drawn back on the photo")
    p.add_argument("--crop-fraction", help="center-crop: the short side is resized to size / this (default 0.875)")
    p.add_argument("--pad-value", help="letterbox: the padding's pixel value, 0..255 (default 0)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file (converted by convlens or foreign)")
    _recipe_args(p)
    p.add_argument("--layout", choices=["nchw", "nhwc"], help="input layout for files without metadata")
    p.add_argument("--scores", metavar="TENSOR", help="the class-score output, for files with several outputs")
    p.add_argument("--labels", help="class names: imagenet (shipped) or a file with one name per line")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="ONNX Runtime provider")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's choice)")


def _target_args(p: argparse.ArgumentParser) -> None:
    """What to explain when the output is not class scores (--scores names it where the file has several)."""
    g = p.add_argument_group("outputs that are not class scores")
    g.add_argument("--region", help="dense maps: predicted (default: where the class wins, or where a one-channel "
                                    "map's sigmoid exceeds 0.5), all, x1,y1,x2,y2 (pixels of the photo) or MASK.png")
    g.add_argument("--sequence", action="store_true", help="(N, T, C) sequences: the greedy path's log-probability "
                                                           "(the default for such outputs)")
    g.add_argument("--position", type=int, metavar="T", help="(N, T, C) sequences: the logits of step T (--class C)")
    g.add_argument("--like", metavar="IMAGE", help="embeddings: the cosine similarity with this image's embedding")
    g.add_argument("--like-vector", metavar="FILE.npy", help="embeddings: the cosine similarity with this vector")
    g.add_argument("--index", type=int, metavar="I", help="any output: its I-th value (flattened), raw")
    g.add_argument("--box", help="detectors: K (the K-th detection by score, 0-based; default 0), all, or "
                                 "x1,y1,x2,y2 (pixels of the photo: the detection of highest IoU with it)")
    g.add_argument("--conf", type=float, default=0.25, help="detectors: the score a detection needs (default 0.25)")
    g.add_argument("--iou", type=float, default=0.7, help="detectors: NMS's IoU threshold (default 0.7)")
    g.add_argument("--box-objective", default="score", choices=["score", "score+iou"],
                   help="detectors: the class logit, or plus the candidate box's IoU with the detected box")


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(
        prog="convlens",
        description="See what an image model (convnet or vision transformer) has learned, from an .onnx file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
    )

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
    _recipe_args(p)
    p.add_argument("--labels", help="class names to record: imagenet or a file with one name per line")

    p = add("annotate", "Describe a file convlens did not write, once: its input recipe, scores and labels, stored "
                        "as convlens metadata in a copy that every command then reads.")
    _model_args(p)
    p.add_argument("--input-size", help="HxW or one number: fixes a dynamic input size (export, evaluate need one)")
    p.add_argument("-o", "--output", required=True, help="the annotated copy to write (the original is kept)")

    p = add("layers", "List the layers of a model: name, op kind, output shape and layout.")
    _model_args(p)

    p = add("activations", "Write every channel of chosen layers for an image as a grid PNG and a .npy array.")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--layers", required=True, help="comma-separated layer names (see `convlens layers`)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p = add("cam", "Class activation heatmaps (Grad-CAM family) with overlays and top-5 predictions.", CAM_METHODS)
    _model_args(p)
    _target_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--layer", default="auto", help="a layer with a spatial grid or a transformer's token layer; auto: "
                   "the last one after the last convolution's activation or residual add, before pooling (on a "
                   "class-token transformer, the last block's first norm)")
    p.add_argument("--class", dest="target", default="top", help="an index, a label, top or top5")
    p.add_argument("--method", default="gradcam", choices=list(CAM_METHODS))
    p.add_argument(
        "--score",
        default="logit",
        choices=["logit", "prob"],
        help="differentiate the logit (paper) or the softmax (lesson)",
    )
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"], help="rollout: how heads are fused")
    p.add_argument("--discard", type=float, default=0.0, help="rollout: fraction of the weakest attention set to zero")
    p.add_argument("--batch", type=int, default=8, help="images per run")
    p.add_argument("--overlay", default="blend", choices=["blend", "additive"],
                   help="blend: the map mixed half and half with the photo, visible on any background; additive: "
                        "the lesson's recipe (map x 0.4 added onto the photo), which washes out on white pages")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("attention", "Per-head attention maps of a transformer's class token (or one patch) in one block.")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--block", type=int, required=True, help="the block, 0-based (see attention.K in `convlens layers`)")
    p.add_argument("--patch", help="ROW,COL of a patch whose attention to show instead of the class token's")
    p.add_argument("-o", "--output", required=True, help="output folder")


    exportable = [m for m, row in CAM_METHODS.items() if row.onnx_map is not None] + list(SALIENCY_EXPORTS)
    p = add("export", "Write a standalone explainer .onnx: uint8 image in; probabilities, class, heatmap, overlay out.")
    _model_args(p)
    _target_args(p)
    p.add_argument("--method", default="gradcam", choices=exportable)
    p.add_argument("--layer", default="auto", help="CAM methods: the layer (auto: as convlens cam picks it)")
    _attribution_args(p, baked=True)
    p.add_argument("--input-size", help="HxW or one number: the size for a file whose graph leaves it dynamic")
    p.add_argument("--max-boxes", type=int, default=10, help="detectors: the most detections the explainer explains")
    p.add_argument("-o", "--output", required=True, help="the explainer .onnx file to write")

    p = add("saliency", "Attributions in pixel space: gradients and relevance propagation (LRP).", SALIENCY_METHODS)
    _model_args(p)
    _target_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--method", default="vanilla", choices=list(SALIENCY_METHODS))
    p.add_argument("--class", dest="target", default="top", help="an index, a label or top")
    p.add_argument("--score", default="logit", choices=["logit", "prob"])
    _attribution_args(p, baked=False)
    p.add_argument("--condition", metavar="LAYER:CHANNELS",
                   help="relevance methods: keep only these channels' relevance at LAYER (concept-conditional "
                        "relevance, e.g. features.28:5,10); --json lists each channel's share of the layer's relevance")
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
    p.add_argument("--objective", default="channel", choices=["channel", "neuron", "direction", "deepdream"],
                   help="channel: a filter's mean; neuron: one position of it (--position, the centre by default); "
                        "direction: cosine with --direction over the grid; deepdream: the mean square of the layer")
    p.add_argument("--position", help="neuron: ROW,COL on the layer's grid")
    p.add_argument("--direction", help="direction: a vector in channel space, FILE.npy")
    p.add_argument("--diversity", type=int, default=1, help="N images per filter pushed apart (Lucid's diversity)")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("atlas", "A static site of every unit of chosen layers: its feature visualization, the images of a set "
                     "that excite it most (whole and cropped to its receptive field), its activation distribution.")
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files or folders (the set)")
    p.add_argument("--layers", default="auto", help="L1,L2 or auto (the first convolution at each grid size)")
    p.add_argument("--units", default="0-15", help="0-15, 0,5,9 or all (per layer, clipped to its channels)")
    p.add_argument("--top", type=int, default=9, help="images per unit")
    p.add_argument("--recipe", default="chollet", choices=["chollet", "lucid"], help="feature visualization recipe")
    p.add_argument("--steps", type=int, help="feature visualization steps (the recipe's default)")
    p.add_argument("--size", type=int, help="feature visualization size, and the set's for a model of any size")
    p.add_argument("--shard-size", type=int, default=32, help="images per shard (a killed run resumes by shards)")
    p.add_argument("--diversity", type=int, default=1, help="N feature visualizations per unit, pushed apart")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run the dataset pass on Ray: auto starts or joins a local "
                                                         "cluster")
    p.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs / --threads); needs --ray")
    p.add_argument("-o", "--output", required=True, help="the site's folder (a folder with a run in it resumes)")

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
    p.add_argument("--weights", help="the weights the file was converted with: none, imagenet or a file (default: "
                   "the ones the file records)")
    p.add_argument("--image", help="an image (default: the bundled photo)")

    p = add("sanity", "Cascading weight randomization (Adebayo et al. 2018): does the map depend on the model?")
    _model_args(p)
    p.add_argument("image", help="an image file")
    p.add_argument("--method", default="gradcam", choices=list(CAM_METHODS) + list(SALIENCY_METHODS),
                   help="a CAM method or a saliency method")
    p.add_argument("--steps", type=int, default=6, help="randomization steps from the top layer down")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = add("evaluate", "Score explanation methods over an image set: deletion/insertion, ROAD, pointing games, "
                        "confidence; resumable, and on a Ray cluster with --ray.")
    _model_args(p)
    p.add_argument("images", nargs="+", help="image files, folders, or CSV/Parquet lists (columns path, label)")
    p.add_argument("--methods", default="gradcam,vanilla",
                   help="comma-separated CAM and saliency methods (a random baseline is always added)")
    p.add_argument("--metrics", default="deletion,insertion",
                   help="comma-separated: deletion, insertion, road, pointing, energy-pointing, confidence")
    p.add_argument(
        "--boxes", help="CSV with the header path,class,x0,y0,x1,y1 (original pixels), for the pointing games"
    )
    p.add_argument("--steps", type=int, default=50, help="deletion/insertion: equal steps from 0 to all pixels")
    p.add_argument("--layer", default="auto", help="the CAM methods' layer (auto: as convlens cam picks it)")
    p.add_argument("--road-noise", type=float, default=0.01, help="ROAD: std of the imputation noise (network input)")
    p.add_argument("--batch", type=int, default=4, help="images per shard (and per Ray task)")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run on Ray: auto starts or joins a local cluster")
    p.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs / --threads); needs --ray")
    g = p.add_argument_group("outputs that are not class scores (as cam's; a drawn region or --like IMAGE do not "
                             "apply to a set)")
    g.add_argument("--region", choices=["predicted", "all"], help="dense maps: the class's pixels, or every pixel")
    g.add_argument("--sequence", action="store_true", help="(N, T, C) sequences: the greedy path's log-probability")
    g.add_argument("--position", type=int, metavar="T", help="(N, T, C) sequences: the logits of step T")
    g.add_argument("--like-vector", metavar="FILE.npy", help="embeddings: the cosine similarity with this vector")
    g.add_argument("--index", type=int, metavar="I", help="any output: its I-th value (flattened), raw")
    g.add_argument("--box", help="detectors: K, the detection of that rank by score in each image (default 0)")
    g.add_argument("--conf", type=float, default=0.25, help="detectors: the score a detection needs (default 0.25)")
    g.add_argument("--iou", type=float, default=0.7, help="detectors: NMS's IoU threshold (default 0.7)")
    p.add_argument("-o", "--output", required=True, help="the run folder (a rerun into it resumes)")

    p = add("example-files", "Write the files the README's Commands block names (photos, a list, VGG16 weights, a "
                             "Keras file, a plain ONNX export), made here: no download.")
    p.add_argument("output", help="the folder to write them into")

    p = add("demo", "Convert a real pretrained model (EfficientNet-Lite0) and show every technique on a cat photo.")
    p.add_argument("-o", "--output", default="convlens-demo", help="output folder")
    p.add_argument("--filter-steps", type=int, default=96, help="lucid steps for the filter section")
    return parser

def _attribution_args(p, baked: bool):
    """The saliency methods' parameters, shared by `saliency` and `export` (where the draws are baked in)."""
    at_export = ", baked into the graph" if baked else ""
    p.add_argument("--steps", type=int, default=32, help="integrated-gradients: path points")
    p.add_argument("--samples", type=int, default=25, help="smoothgrad: noisy copies per image; gradient-shap: points")
    p.add_argument("--seed", type=int, default=0, help=f"smoothgrad, gradient-shap, deeplift-shap: the draws' seed"
                   f"{at_export}")
    p.add_argument("--epsilon", type=float, default=1e-6, help="lrp-*: the epsilon rule's epsilon (dense layers)")
    p.add_argument("--gamma", type=float, default=0.25, help="lrp-epsilon-gamma-box: the gamma rule's gamma")
    blur = "" if baked else "blur, "  # a blurred copy depends on the image: not a constant an explainer can hold
    p.add_argument("--baseline", default="black", help=f"deeplift: black, {blur}mean (what the preprocessing maps "
                   f"to 0) or an image file{at_export}")
    p.add_argument("--baselines", default="8", help="deeplift-shap, gradient-shap: a folder of images, or N seeded "
                   f"noise images{at_export}")
    p.add_argument("--stdevs", type=float, default=0.0, help="gradient-shap: the standard deviation of the noise "
                   f"added to the image at each point, in the model input's units (Captum's stdevs){at_export}")


def main(argv: list[str] | None = None) -> int:

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1)
        return int(exc.code or 0)
    _route_warnings(getattr(args, "verbose", False))
    try:
        if args.command in FOLDER_OUTPUTS:  # refuse an unusable -o before any work is done

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


if __name__ == "__main__":
    sys.exit(main())
