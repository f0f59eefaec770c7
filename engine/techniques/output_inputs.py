"""What an output target needs from images: a region drawn on the photo, mapped onto the model's input grid; the
embedding another image (or a stored vector) gives, for the cosine-similarity target; a detector's detections
on each photo, and the ones `--box` chooses."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConvlensError
from ..model.detections import Detection, box_iou, decode_head
from ..model.model import Model
from ..model.output_targets import greedy_decode
from ..render.images import fit_image
from ..runtime.program import program
from .common import fit_to_model, model_size, photo, prepare


def region_on_input(model: Model, region, images) -> np.ndarray:
    """(H, W) float mask on the model's input grid, 1 inside: `region` is a box 'x1,y1,x2,y2' in the photo's
    pixels or a mask image of the photo's size (nonzero inside), placed by the input's resize policy."""
    photos = [photo(i) for i in images]
    sizes = {p.shape[:2] for p in photos}
    if len(sizes) != 1:
        raise ConvlensError(f"--region {region} is drawn on one photo size, but the images have sizes "
                            f"{sorted(sizes)}; explain them in separate runs.")
    (height, width), = sizes
    text = str(region)
    if Path(text).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        if not Path(text).is_file():
            raise ConvlensError(f"Region mask file not found: {text}.")
        drawn = cv2.imread(text, cv2.IMREAD_GRAYSCALE)
        if drawn is None or drawn.shape != (height, width):
            raise ConvlensError(f"The region mask {text} must be an image of the photo's size {width}x{height}.")
        canvas = (drawn > 0).astype(np.float32)
    else:
        try:
            x1, y1, x2, y2 = (float(v) for v in text.split(","))
        except ValueError:
            raise ConvlensError(f"--region must be predicted, all, x1,y1,x2,y2 (pixels of the photo) or a mask "
                                f"image, not {text!r}.") from None
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ConvlensError(f"--region box {text} is not inside the {width}x{height} photo with x1 < x2, y1 < y2.")
        canvas = np.zeros((height, width), np.float32)
        canvas[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = 1.0
    spec = model.input_spec
    size = model_size(model, photos[0])
    placed, _ = fit_image(np.repeat(canvas[..., None], 3, axis=2), size, spec.resize, spec.crop_fraction, 0.0)
    mask = (placed[..., 0] > 0.5).astype(np.float32)
    if not mask.any():
        raise ConvlensError(f"--region {text} covers no pixel of the model's {size[0]}x{size[1]} input.")
    return mask


def like_vector(model: Model, like) -> np.ndarray:
    """The vector an embedding is compared with: a vector or .npy file as given, else the model's output for
    that image (the output being explained)."""
    if isinstance(like, np.ndarray) and like.ndim == 1:
        return like
    if isinstance(like, (str, os.PathLike)) and str(like).endswith(".npy"):
        if not Path(like).is_file():
            raise ConvlensError(f"Vector file not found: {like}.")
        return np.load(like).reshape(-1)
    output = model.explained_output
    if output is None:
        raise ConvlensError("The model has several outputs; name the embedding with --scores NAME.")
    pixels = prepare(model, [like])
    return program(model, [output], pixels.shape[1:3]).run(pixels)[output][0].reshape(-1)


def decoded_sequences(model: Model, images) -> list[str] | None:
    """Per image, the greedy CTC decoding of the sequence a sequence target explains (None for other targets),
    with the character names stored in the file where they fit."""
    if model.target is None or model.target.kind != "sequence":
        return None
    output = model.explained_output
    names = model.base.meta.labels if isinstance(model.base.meta.labels, list) else None
    out = []
    for item in images:
        pixels = prepare(model, [item])
        out.append(greedy_decode(program(model, [output], pixels.shape[1:3]).run(pixels)[output][0], names))
    return out


def photo_detections(model: Model, image, conf: float = 0.25, iou: float = 0.7) -> list[Detection]:
    """A detector's detections on one photo, highest score first, boxes in the photo's pixels; each keeps its
    candidate (anchor) so that it can be explained."""
    if model.detector is None:
        raise ConvlensError("--box applies to detectors (a YOLO-style or DETR-style head); this model has none.")
    for name, value in (("--conf", conf), ("--iou", iou)):
        if not 0 <= value <= 1:
            raise ConvlensError(f"{name} must be between 0 and 1, not {value}.")
    pixels, place, size = fit_to_model(model, photo(image))
    head = model.detector
    values = program(model, head.tensors, size).run(pixels[None].astype(np.float32))
    (sy, sx), (oy, ox) = place.scale, place.offset
    return [Detection(((d.box[0] - ox) / sx, (d.box[1] - oy) / sy, (d.box[2] - ox) / sx, (d.box[3] - oy) / sy),
                      d.cls, d.score, d.anchor, d.box, tuple(size)) for d in decode_head(head, values, size, conf, iou)]


def chosen_detections(detections: list[Detection], box) -> list[int]:
    """The indices `--box` chooses: K (0-based, by score), all, or x1,y1,x2,y2 in the photo's pixels (the
    detection of highest IoU with it)."""
    if not detections:
        raise ConvlensError("No detection to explain: nothing scored above --conf; lower it, or give another image.")
    text = "0" if box is None else str(box)
    if text == "all":
        return list(range(len(detections)))
    if text.lstrip("-").isdigit():
        k = int(text)
        if not 0 <= k < len(detections):
            raise ConvlensError(f"--box {k} is out of range; the image has {len(detections)} detections "
                                f"(0-{len(detections) - 1}).")
        return [k]
    try:
        given = np.asarray([float(v) for v in text.split(",")])
    except ValueError:
        given = np.zeros(0)
    if given.size != 4 or not (given[0] < given[2] and given[1] < given[3]):
        raise ConvlensError(f"--box must be K (a detection's rank), all or x1,y1,x2,y2 (pixels), not {text!r}.")
    overlap = box_iou(given, np.asarray([d.box for d in detections]))
    return [int(np.argmax(overlap))]


def box_on_input(model: Model, image, box) -> tuple[float, float, float, float]:
    """A box x1, y1, x2, y2 in the photo's pixels, in the model input's pixels (through the resize policy)."""
    _, place, _ = fit_to_model(model, photo(image))
    (sy, sx), (oy, ox) = place.scale, place.offset
    x1, y1, x2, y2 = box
    return (x1 * sx + ox, y1 * sy + oy, x2 * sx + ox, y2 * sy + oy)


def detection_layer(model: Model, detection: Detection, layer):
    """`layer`, or for auto the layer whose output is the feature map the detection's level of the head reads
    ("auto" where the head has no levels: the view's own rule then picks)."""
    if layer != "auto":
        return layer
    for start, end, tensor in model.detector_levels:
        if start <= detection.anchor < end:
            return next((l.name for l in model.layers if l.tensor == tensor), "auto")
    return "auto"
