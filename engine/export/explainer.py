"""`convlens export`: a model and its explanation baked into one standalone ONNX graph.

The graph's contract (README, "Exported explainers"):
  inputs   image            uint8 [N, H, W, 3], RGB pixels of any size
           target           int64 [N], optional: the class to explain; -1 or not fed: each image's top-1 class
  outputs  probabilities    float32 [N, classes]
           explained_class  int64 [N] (ONNX cannot give an output the name of an input, so not "target")
           heatmap          float32 [N, H, W] in [0, 1], at the size of the image fed
           cam              float32 [N, h, w] at the layer's grid (CAM methods), normalized as `convlens cam` does
           overlay          uint8 [N, H, W, 3], drawn as `convlens cam` draws its overlay PNG
Inside: the image is resized to the model's input size (bilinear, antialiased when shrinking) and
preprocessed as the metadata says; the model runs once on a batch of N * (1 + K) images (K noisy copies or
path points per image for SmoothGrad, Integrated Gradients and GradientSHAP, 0 otherwise), the first N giving
the prediction; DeepLIFT and DeepLIFT-SHAP run 2 * N * K (each image K times, then its K baselines: the rescale
rule reads the two halves), every K-th item of the first half giving the prediction. Baselines are constants
in the graph, drawn or read at export time as `convlens saliency` draws or reads them. The backward graph
(engine/autodiff) gives the gradient; the CAM or saliency formula, the normalization, the resize to the fed
size and the JET colormap (a Gather into OpenCV's table) finish it.
Standard operators of the default domain only, opset 18 (antialiased Resize).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConvlensError
from ..graph import float_info
from ..model.model import Model
from ..model.tokens import token_grid
from ..render.pictures import BLEND_ALPHA, colorize
from ..autodiff.composites import COMPOSITES
from ..runtime.adapter import GRAY, PIXELS, adapter_nodes
from ..runtime.program import Graph, GradRequest, forward_and_backward
from ..techniques.cam import resolve_layer
from ..techniques.cam_methods import CAM_METHODS
from ..techniques.saliency import gradient_shap_draws, reference_pixels, reference_set, zbox_bounds
from ..techniques.targets import Target
from ..writer import GraphWriter

EXPORT_OPSET = 18
IMAGE, TARGET = "image", "target"
OUTPUT_NAMES = ("probabilities", "explained_class", "heatmap", "cam", "overlay")
# relevance methods differentiate the model's own input, start from the explained logit, and map back to pixels
RELEVANCE_EXPORTS = ("input-x-gradient", *COMPOSITES)
# DeepLIFT's family runs each image beside its baselines (the rescale rule's two halves)
DEEPLIFT_EXPORTS = ("deeplift", "deeplift-shap")
SALIENCY_EXPORTS = ("vanilla", "smoothgrad", "integrated-gradients", "guided-backprop", "deconvnet",
                    *DEEPLIFT_EXPORTS, "gradient-shap", *RELEVANCE_EXPORTS)
OVERRIDES_OF = {"guided-backprop": ("guided",), "deconvnet": ("deconvnet",), "deeplift": ("deeplift",),
                "deeplift-shap": ("deeplift",)} | {c: (c,) for c in COMPOSITES}


@dataclass
class Explainer:
    proto: onnx.ModelProto
    method: str
    layer: str | None  # the CAM layer, None for saliency methods
    notes: list[str] = field(default_factory=list)  # what a user should know (a batch fixed at 1, ...)


def export_explainer(model: Model, method: str = "gradcam", layer: str | None = "auto", steps: int = 32,
                     samples: int = 25, seed: int = 0, noise: float = 0.15, baseline: float = 0.0,
                     epsilon: float = 1e-6, gamma: float = 0.25, reference="black", references=8,
                     stdevs: float = 0.0) -> Explainer:
    """The explainer graph for `method` (a CAM method of the gradient kind, or a saliency method). `reference`:
    DeepLIFT's baseline (black, mean, an image file or pixels); `references`: DeepLIFT-SHAP's and GradientSHAP's
    baselines (N seeded noise images, a folder, or pixels (K, H, W, 3)), baked into the graph; `stdevs`:
    GradientSHAP's input noise (the model input's units), drawn at export."""

    cam_method = method in CAM_METHODS and CAM_METHODS[method].onnx_map is not None
    if not cam_method and method not in SALIENCY_EXPORTS:
        exportable = [m for m, row in CAM_METHODS.items() if row.onnx_map is not None] + list(SALIENCY_EXPORTS)
        raise ConvlensError(f"{method!r} cannot be exported; choose from {', '.join(exportable)}.")
    for name, value in (("--steps", steps), ("--samples", samples)):
        if value < 1:
            raise ConvlensError(f"{name} must be 1 or more, not {value}.")
    size = exported_size(model)
    model = model.with_tensors_renamed({IMAGE, TARGET, *OUTPUT_NAMES})  # a file whose input is called "image"
    info = model.layer(resolve_layer(model, layer, size)) if cam_method else None
    refs = _baselines(model, method, size, reference, references, seed)
    # extra images per image in the batch: SmoothGrad's noisy copies, IG's path points, GradientSHAP's points,
    # DeepLIFT's baselines (each image repeated beside them)
    copies = {"smoothgrad": samples, "integrated-gradients": steps, "gradient-shap": samples}.get(
        method, 0 if refs is None else len(refs))
    notes = []
    if model.single_image:
        if copies:
            raise ConvlensError(f"{method} runs {copies} copies of each image in one batch, but this file was exported "
                                "with a batch of 1 baked in; export the model with a dynamic batch axis.")
        notes.append(
            "the model was exported with a batch of 1 baked in, so the explainer takes one image per run (N = 1)"
        )
    scores = _score_tensor(model)
    params = ()
    if method in COMPOSITES:
        low, high = zbox_bounds(model.input_spec)
        params = (("eps", epsilon), ("gamma", gamma), ("low", low), ("high", high))
    graph = _model_and_backward(model, scores, info, method, size, params)
    e = GraphWriter(EXPORT_OPSET, scope="explainer")
    clean = _image_nodes(e, size)
    shap_draws = gradient_shap_draws(model, refs, copies, seed, stdevs) if method == "gradient-shap" else None
    _batch_nodes(e, clean, method, copies, size, noise, baseline, seed, refs, shap_draws)
    paired = method in DEEPLIFT_EXPORTS
    probabilities, target = _prediction_nodes(e, model, scores, copies, paired)
    _objective_weights(e, target, copies, from_logit=method in COMPOSITES, paired=paired)
    if info is not None:
        raw = _cam_map(e, model, info, graph.grads[info.tensor], method, size)
        cam = _normalized(e, raw, "cam")
    elif method in RELEVANCE_EXPORTS:
        spec = model.input_spec
        relevance = graph.grads[spec.name]
        if method == "input-x-gradient":
            relevance = e.op("Mul", relevance, spec.name)
        raw = _on_pixel_grid(e, relevance, spec)
        cam = None
        raw = _normalized(e, e.reduce("ReduceMax", e.op("Abs", raw), [3], keepdims=0), "saliency")
    else:
        raw = _attribution(e, graph.grads[PIXELS], method, copies, clean, baseline)
        cam = None
        raw = _normalized(e, e.reduce("ReduceMax", e.op("Abs", raw), [3], keepdims=0), "saliency")
    heatmap = _heatmap(e, raw if cam is None else cam)
    _overlay(e, heatmap)
    outputs = [("probabilities", probabilities), ("explained_class", target), ("heatmap", heatmap)]
    if cam is not None:
        outputs.append(("cam", cam))
    outputs.append(("overlay", "overlay"))
    for name, tensor in outputs:
        if tensor != name:
            e.op("Identity", tensor, out=name)
    nodes = graph.nodes + e.nodes
    proto = _assemble(model, nodes, outputs, {**graph.inits, **e.new_inits}, {**graph.weights, **e.new_weights})
    return Explainer(proto, method, info.name if info else None, notes)


def exported_size(model: Model) -> tuple[int, int]:
    """The model's input size, which the graph resizes images to; refused where the file records none, or where
    its images are placed otherwise than by a stretch."""
    if model.input_spec.size is None:
        advice = ("give `convlens export` --input-size H,W, or describe the file once with `convlens annotate "
                  "MODEL.onnx --input-size H,W -o OUT.onnx`" if model.meta.source == "onnx"
                  else "give `convlens export` --input-size H,W")
        raise ConvlensError(f"The model records no input size, so the explainer cannot resize images to it; {advice}.")
    if model.input_spec.resize != "stretch":
        raise ConvlensError(f"An exported explainer stretches each image to the model's size inside its graph; this "
                            f"model's input is described with --resize {model.input_spec.resize}, which the graph "
                            "does not do: resize the images that way before feeding the explainer, and export with "
                            "--resize stretch.")
    return tuple(model.input_spec.size)


# --- input side -----------------------------------------------------------------------------------
def _image_nodes(e: GraphWriter, size) -> str:
    """uint8 NHWC pixels of any size -> float pixels at the model's size (antialiased bilinear when shrinking)."""
    pixels = e.op("Cast", IMAGE, to=TensorProto.FLOAT)
    return e.op("Resize", pixels, "", "", e.ints(list(size)), out="explainer_pixels", mode="linear", antialias=1,
                axes=[1, 2], coordinate_transformation_mode="half_pixel")


def _baselines(model: Model, method: str, size, reference, references, seed: int) -> np.ndarray | None:
    """The baselines (K, h, w, 3) DeepLIFT's family and GradientSHAP bake in, as `convlens saliency` makes them
    for an image of the model's size; None for the other methods."""
    like = np.zeros((*size, 3), np.float32)
    if method == "deeplift":
        if isinstance(reference, str) and reference == "blur":
            raise ConvlensError("--baseline blur is each image blurred, which the exported graph does not compute; "
                                "export with --baseline black, mean or an image file.")
        return reference_pixels(model, like, reference)[None]
    if method in ("deeplift-shap", "gradient-shap"):
        return reference_set(model, like, references, seed)
    return None


def _tiled(e: GraphWriter, t: str, times: int, rank: int) -> str:
    """(N, ...) of `rank` axes -> (N * times, ...): each item repeated `times` times in a row."""
    repeated = e.op("Expand", e.op("Unsqueeze", t, e.ints([1])), e.ints([1, times] + [1] * (rank - 1)))
    return e.op("Reshape", repeated, e.op("Concat", e.ints([-1]), e.op("Shape", t, start=1), axis=0))


MOVED = "explainer_moved"  # DeepLIFT's and GradientSHAP's (noisy) image - baseline, (N, K, h, w, 3)


def _per_image(e: GraphWriter, refs: np.ndarray, clean: str) -> str:
    """The K baselines, once per image: (N * K, h, w, 3), stored once in the file."""
    shape = e.op("Concat", e.op("Shape", clean, start=0, end=1), e.ints(list(refs.shape)), axis=0)
    return e.op("Reshape", e.op("Expand", e.const(refs[None]), shape), e.ints([-1, *refs.shape[1:]]))


def _batch_nodes(e: GraphWriter, clean: str, method: str, copies: int, size, noise: float, baseline: float, seed: int,
                 refs: np.ndarray | None = None, shap_draws: tuple | None = None):
    """PIXELS: the clean images, followed by K copies of each for SmoothGrad (noise), IG and GradientSHAP (path
    points); for DeepLIFT's family, each image K times followed by its K baselines."""
    if not copies:
        e.op("Identity", clean, out=PIXELS)
        return
    h, w = size
    x = e.op("Unsqueeze", clean, e.ints([1]))  # (N, 1, h, w, 3)
    if method in DEEPLIFT_EXPORTS:
        repeated, baselines = _tiled(e, clean, copies, 4), _per_image(e, refs, clean)
        e.op("Concat", repeated, baselines, out=PIXELS, axis=0)
        e.op("Reshape", e.op("Sub", repeated, baselines), e.ints([-1, copies, h, w, 3]), out=MOVED)
        return
    if method == "gradient-shap":
        chosen, alphas, draws = shap_draws
        # (1, K, h, w, 3): each point's baseline, gathered from the set (stored once)
        start = e.op("Unsqueeze", e.op("Gather", e.const(refs), e.ints(chosen.tolist()), axis=0), e.ints([0]))
        if draws is not None:  # each point's noisy image (the noise drawn at export, as saliency draws it)
            x = e.op("Add", x, e.const(draws[None]))
        e.op("Sub", x, start, out=MOVED)
        path = e.op("Add", start, e.op("Mul", e.const(alphas.reshape(1, copies, 1, 1, 1)), MOVED))
    elif method == "smoothgrad":
        # the noise is a constant drawn from the seed, as `convlens saliency` draws it for a first image:
        # sigma * standard normal, sigma = noise * (max - min) of each image
        draws = np.random.default_rng(seed).standard_normal((1, copies, h, w, 3)).astype(np.float32)
        spread = e.op("Sub", e.reduce("ReduceMax", clean, [1, 2, 3]), e.reduce("ReduceMin", clean, [1, 2, 3]))
        sigma = e.op("Unsqueeze", e.op("Mul", spread, e.const(noise)), e.ints([1]))  # (N, 1, 1, 1, 1)
        path = e.op("Add", x, e.op("Mul", e.const(draws), sigma))
    else:
        alphas = ((np.arange(copies) + 0.5) / copies).astype(np.float32).reshape(1, copies, 1, 1, 1)
        path = e.op("Add", e.const(baseline), e.op("Mul", e.const(alphas), e.op("Sub", x, e.const(baseline))))
    flat = e.op("Reshape", path, e.ints([-1, h, w, 3]))
    e.op("Concat", clean, flat, out=PIXELS, axis=0)


def _score_tensor(model: Model) -> str:
    return Target(score="logit").tensor(model)[0]


# --- the model, the objective and its backward graph ------------------------------------------------
OBJECTIVE_WEIGHTS, OBJECTIVE = "explainer_objective_weights", "explainer_objective"
SCORES = "explainer_scores"  # the class scores, flattened to (N, classes)


def _model_and_backward(model: Model, scores: str, info, method: str, size, params: tuple = ()) -> Graph:
    """The adapter, the model (at opset 18) and the objective  sum(flatten(scores) * OBJECTIVE_WEIGHTS), with the
    backward graph to the CAM layer or the pixels, through the same builder as every program."""
    nodes, small = _model_at_export_opset(model)
    a_nodes, a_inits = adapter_nodes(model.input_spec)
    w = GraphWriter(EXPORT_OPSET, scope="explainer_objective")
    flat = w.op("Flatten", scores, out=SCORES, axis=1)
    w.op("ReduceSum", w.op("Mul", flat, OBJECTIVE_WEIGHTS, out="explainer_weighted"), out=OBJECTIVE, keepdims=0)
    spec = model.input_spec
    wrt = [info.tensor] if info is not None else [spec.name] if method in RELEVANCE_EXPORTS else [PIXELS]
    # the layer is a target too: a Keras file exposes it as a relayout beside the path, which the walker follows;
    # the model's input too, which input x gradient multiplies
    targets = [scores, flat] + ([info.tensor] if info else []) + ([spec.name] if method in RELEVANCE_EXPORTS else [])
    return forward_and_backward(model.runtime, a_nodes + nodes + w.nodes, {**small, **a_inits, **w.new_inits},
                                model.weights, targets, size,
                                [float_info(OBJECTIVE_WEIGHTS, ["M", None])], [helper.make_opsetid("", EXPORT_OPSET)],
                                GradRequest(OBJECTIVE, tuple(wrt), OVERRIDES_OF.get(method, ()), params),
                                copy_weights=False)  # each weight stored once in the file (LRP rules' copies aside)


def _model_at_export_opset(model: Model) -> tuple[list, dict]:
    """The model's nodes and small initializers in opset 18 (ONNX's version converter; weights stay out)."""
    if model.opset >= EXPORT_OPSET:
        return list(model.nodes), dict(model.small_inits)
    from onnx import version_converter

    inputs = [float_info(model.input_spec.name, None)]
    inputs += [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
               for n, a in model.weights.items()]
    produced = {o for n in model.nodes for o in n.output}
    outputs = [float_info(o, None) for o in model.graph_outputs if o in produced]
    graph = helper.make_graph(model.nodes, "model", inputs, outputs, initializer=list(model.small_inits.values()))
    proto = helper.make_model(graph, opset_imports=[o for o in model.opset_imports if o.domain not in ("", "ai.onnx")]
                              + [helper.make_opsetid("", max(model.opset, 16))])
    try:
        converted = version_converter.convert_version(proto, EXPORT_OPSET)
    except Exception as exc:
        raise ConvlensError(f"The model's graph could not be upgraded from opset {model.opset} to {EXPORT_OPSET} "
                            f"(antialiased Resize needs it): {str(exc).splitlines()[0][:200]}") from None
    return list(converted.graph.node), {t.name: t for t in converted.graph.initializer}


# --- prediction and target --------------------------------------------------------------------------
def _prediction_nodes(e: GraphWriter, model: Model, scores: str, copies: int, paired: bool = False) -> tuple[str, str]:
    """(probabilities of the clean images, the class each explains: the fed target, or the top-1 where it is
    not fed or is -1). `paired`: DeepLIFT's batch, each image repeated `copies` times first."""
    flat = SCORES
    images = e.op("Shape", "explainer_pixels", start=0, end=1)
    if paired:
        clean = e.op("Slice", flat, e.ints([0]), e.op("Mul", images, e.ints([copies])), e.ints([0]), e.ints([copies]))
    else:
        clean = flat if not copies else e.op("Slice", flat, e.ints([0]), images, e.ints([0]))
    if model.meta.probabilities and scores == model.meta.probabilities:
        probabilities = clean
    elif model.meta.activation == "identity":  # an output target's scores: reported as they are
        probabilities = e.op("Identity", clean)
    else:
        probabilities = (
            e.op("Sigmoid", clean) if model.meta.activation == "sigmoid" else e.op("Softmax", clean, axis=-1)
        )
    top = e.op("ArgMax", clean, axis=1, keepdims=0)
    # the default target (-1, every image's top class) broadcasts against N when no target is fed
    target = e.op("Where", e.op("Less", TARGET, e.const(0, np.int64)), top, e.op("Expand", TARGET, e.op("Shape", top)))
    return probabilities, target


def _objective_weights(e: GraphWriter, target: str, copies: int, from_logit: bool = False, paired: bool = False):
    """One-hot rows of the explained class: on the clean images (K = 0), or on their K copies only, or on every
    item (`paired`: DeepLIFT's repeated images and their baselines, whose multipliers are shared). `from_logit`:
    the row holds the explained score itself (LRP's relevance starts at the logit)."""
    depth = e.op("Gather", e.op("Shape", SCORES), e.ints(1), axis=0)
    values = e.const(np.array([0.0, 1.0], np.float32))
    if paired:
        hot = _tiled(e, e.op("OneHot", target, depth, values, axis=-1), copies, 2)
        e.op("Concat", hot, hot, out=OBJECTIVE_WEIGHTS, axis=0)
        return
    if not copies:
        if from_logit:
            e.op("Mul", e.op("OneHot", target, depth, values, axis=-1), SCORES, out=OBJECTIVE_WEIGHTS)
        else:
            e.op("OneHot", target, depth, values, out=OBJECTIVE_WEIGHTS, axis=-1)
        return
    repeated = e.op("Reshape", e.op("Expand", e.op("Unsqueeze", target, e.ints([1])),
                                    e.op("Concat", e.op("Shape", target), e.ints([copies]), axis=0)), e.ints([-1]))
    hot = e.op("OneHot", repeated, depth, values, axis=-1)
    zeros = e.op("Mul", e.op("OneHot", target, depth, values, axis=-1), e.const(0.0))
    e.op("Concat", zeros, hot, out=OBJECTIVE_WEIGHTS, axis=0)


# --- maps -------------------------------------------------------------------------------------------
def _cam_map(e: GraphWriter, model: Model, info, grad: str, method: str, size) -> str:
    """The method's raw map (N, h, w) from the layer's activations and gradient, viewed as NCHW."""

    tokens = token_grid(model, info.tensor, model.shapes.complete(size))

    def nchw(t):
        if tokens is not None:
            patches = e.op("Slice", t, e.ints([tokens.prefix]), e.ints([2 ** 62]), e.ints([1]))
            grid = e.op("Reshape", patches, e.ints([0, tokens.height, tokens.width, -1]))
            return e.op("Transpose", grid, perm=[0, 3, 1, 2])
        if info.layout == "NHWC":
            return e.op("Transpose", t, perm=[0, 3, 1, 2])
        return t

    return CAM_METHODS[method].onnx_map(e, nchw(info.tensor), nchw(grad))


def _attribution(e: GraphWriter, grad: str, method: str, copies: int, clean: str, baseline: float) -> str:
    """(N, h, w, 3) pixel attribution: the gradient of the clean images, or the mean over their copies (times
    x - baseline for Integrated Gradients, GradientSHAP and DeepLIFT, whose multipliers are the first half's)."""
    if not copies:
        return grad
    images = e.op("Shape", clean, start=0, end=1)
    shape = e.op("Concat", e.ints([-1, copies]), e.op("Shape", clean, start=1), axis=0)
    if method in DEEPLIFT_EXPORTS:  # the repeated images' rows: the first half
        rows = e.op("Slice", grad, e.ints([0]), e.op("Mul", images, e.ints([copies])), e.ints([0]))
    else:  # the copies' rows, after the clean images
        rows = e.op("Slice", grad, images, e.ints([2 ** 62]), e.ints([0]))
    copies_grad = e.op("Reshape", rows, shape)
    if method in (*DEEPLIFT_EXPORTS, "gradient-shap"):  # the mean of ((noisy) x - its baseline) times the multiplier
        return e.reduce("ReduceMean", e.op("Mul", MOVED, copies_grad), [1], keepdims=0)
    mean = e.reduce("ReduceMean", copies_grad, [1], keepdims=0)
    if method == "integrated-gradients":
        return e.op("Mul", e.op("Sub", clean, e.const(baseline)), mean)
    return mean


def _on_pixel_grid(e: GraphWriter, relevance: str, spec) -> str:
    """The model input's map (its layout, color order, channels) on the RGB pixel grid (N, h, w, 3), as
    techniques.saliency.pixel_grid."""
    if spec.layout.upper() == "NCHW":
        relevance = e.op("Transpose", relevance, perm=[0, 2, 3, 1])
    if spec.channels == 1:
        return e.op("Mul", relevance, e.const(GRAY))
    if spec.color.upper() == "BGR":
        return e.op("Gather", relevance, e.ints([2, 1, 0]), axis=3)
    return relevance


def _normalized(e: GraphWriter, raw: str, what: str) -> str:
    """ReLU, then divided by each map's maximum; an all-zero map stays zero (never NaN)."""
    m = e.op("Relu", raw)
    peak = e.reduce("ReduceMax", m, [1, 2])
    positive = e.op("Greater", peak, e.const(0.0))
    return e.op("Where", positive, e.op("Div", m, e.op("Where", positive, peak, e.const(1.0))), e.const(0.0),
                out=f"explainer_{what}")


def _heatmap(e: GraphWriter, grid: str) -> str:
    """The map resized to the fed image (bilinear, as cv2.resize's INTER_LINEAR), clipped to [0, 1]."""
    hw = e.op("Shape", IMAGE, start=1, end=3)
    resized = e.op("Resize", grid, "", "", hw, mode="linear", axes=[1, 2], coordinate_transformation_mode="half_pixel")
    return e.op("Clip", resized, e.const(0.0), e.const(1.0))


def _overlay(e: GraphWriter, heatmap: str) -> None:
    """render.overlay (blend) in ONNX: uint8(heat * 255) through OpenCV's JET table, mixed half and half with the
    image, floored."""
    table = colorize(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    index = e.op("Cast", e.op("Floor", e.op("Mul", heatmap, e.const(255.0))), to=TensorProto.INT64)
    colored = e.op("Gather", e.const(table.astype(np.float32)), index, axis=0)
    image = e.op("Cast", IMAGE, to=TensorProto.FLOAT)
    blended = e.op("Add", e.op("Mul", colored, e.const(BLEND_ALPHA)), e.op("Mul", image, e.const(1 - BLEND_ALPHA)))
    clipped = e.op("Floor", e.op("Clip", blended, e.const(0.0), e.const(255.0)))
    e.op("Cast", clipped, out="overlay", to=TensorProto.UINT8)


# --- the file -----------------------------------------------------------------------------------------
def _assemble(model: Model, nodes: list, outputs, inits: dict, weights: dict) -> onnx.ModelProto:
    ordered = _topological(nodes)
    used = {i for n in ordered for i in n.input}
    initializers = [t for name, t in inits.items() if name in used and name != TARGET]
    initializers += [
        numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in weights.items() if name in used
    ]
    initializers.append(numpy_helper.from_array(np.array([-1], np.int64), TARGET))  # the default: top-1
    batch = 1 if model.single_image else "N"  # a batch of 1 baked into the model fixes the explainer's
    inputs = [helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, [batch, "H", "W", 3]),
              helper.make_tensor_value_info(TARGET, TensorProto.INT64, ["T"])]
    types = {"probabilities": TensorProto.FLOAT, "explained_class": TensorProto.INT64, "heatmap": TensorProto.FLOAT,
             "cam": TensorProto.FLOAT, "overlay": TensorProto.UINT8}
    shapes = {
        "probabilities": ["N", None],
        "explained_class": ["N"],
        "heatmap": ["N", "H", "W"],
        "cam": ["N", None, None],
        "overlay": ["N", "H", "W", 3],
    }
    graph_outputs = [helper.make_tensor_value_info(name, types[name], shapes[name]) for name, _ in outputs]
    graph = helper.make_graph(ordered, "convlens_explainer", inputs, graph_outputs, initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)], producer_name="convlens")
    proto.ir_version = 8
    return proto


def _topological(nodes: list) -> list:
    """Nodes in an order where every input is made before it is used (the pieces are built out of order)."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    done, order, state = set(), [], {}
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            k, expanded = stack.pop()
            if k in done:
                continue
            if expanded:
                done.add(k)
                order.append(nodes[k])
                continue
            if state.get(k) == "open":
                continue
            state[k] = "open"
            stack.append((k, True))
            for i in nodes[k].input:
                p = producer.get(i)
                if p is not None and p not in done:
                    stack.append((p, False))
    return order
