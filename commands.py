"""What each `convlens` command does with its parsed arguments: call the API, write the files, say what was
done. Returns a dict (files written, key results, a one-paragraph summary); cli.py parses and dispatches."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from . import api
from .engine.checks.compare import markdown
from .engine.checks.sanity import markdown as sanity_markdown
from .engine.checks.verification import markdown as verification_markdown
from .engine.errors import ConvlensError
from .engine.model.onnx_file import check_writable, write_atomic
from .engine.render.images import image_paths, load_image, sample_image
from .engine.render.pictures import (
    channel_grid,
    colorize,
    draw_box,
    filter_grid,
    labelled_tiles,
    line_plot,
    overlay,
    saliency_image,
    upscale,
    write_npy,
    write_png,
)
from .engine.render.progress import Progress


def _recipe(args) -> dict:
    return {"preprocess": args.preprocess, "channel_order": args.channel_order, "scale": args.scale,
            "mean": args.mean, "std": args.std, "resize": args.resize, "crop_fraction": args.crop_fraction,
            "pad_value": args.pad_value}


def _load(args):
    return api.load(args.model, **_recipe(args), layout=args.layout, scores=args.scores, labels=args.labels,
                    device=args.device, threads=args.threads, **_target(args))


def _target(args) -> dict:
    """The output-target options of a command that has them, applied once when the model loads; a region drawn
    on a photo waits for the images (_drawn_region)."""
    if not hasattr(args, "region"):
        return {}
    if args.like and args.like_vector:
        raise ConvlensError("Give --like IMAGE or --like-vector FILE.npy, not both.")
    return {"region": args.region if args.region in ("predicted", "all") else None, "sequence": args.sequence,
            "position": args.position, "like": args.like or args.like_vector, "index": args.index}


def _drawn_region(args) -> dict:
    """A region drawn on a photo (a box or a mask image), given to the API with the images it is drawn on."""
    region = getattr(args, "region", None)
    return {"region": region} if region is not None and region not in ("predicted", "all") else {}


def _detector(args) -> dict:
    return ({"box": args.box, "conf": args.conf, "iou": args.iou, "box_objective": args.box_objective}
            if hasattr(args, "box") else {})


def _target_summary(model) -> dict:
    """What an output target explains, for --json and the summary (empty for class scores)."""
    described = api.target_of(model)
    return {"target": described} if described else {}


def _target_lines(model, decoded: dict) -> list[str]:
    head = model.target
    lines = [f"explaining {model.explained_output}: {head.objective}"] if head else []
    return lines + [f"{image}: decoded {text!r}" for image, text in decoded.items()]


def cmd_convert(args) -> dict:
    path = api.convert(args.source, args.output, weights=args.weights, no_top=args.no_top,
                       input_size=args.input_size, **_recipe(args), labels=args.labels, force=args.force,
                       verbose=args.verbose, quiet=args.quiet or args.json)
    model = api.load(path)
    spec = model.input_spec
    size = f"{spec.size[0]}x{spec.size[1]}" if spec.size else "of any size"
    return {"files": [str(path)], "layers": len(model.layers), "input": vars(spec),
            "summary": f"wrote {path} ({len(model.layers)} layers exposed, input {spec.layout} {size}, "
                       f"{spec.preset or 'custom'} preprocessing)"}


def cmd_annotate(args) -> dict:
    model = api.annotate(args.model, args.output, **_recipe(args), layout=args.layout, scores=args.scores,
                         labels=args.labels, input_size=args.input_size, force=args.force)
    spec = model.input_spec
    size = f"{spec.size[0]}x{spec.size[1]}" if spec.size else "any size"
    scores = model.meta.logits or model.meta.probabilities
    names = len(model.labels) if model.labels else 0
    return {"files": [args.output], "input": vars(spec), "scores": scores, "activation": model.meta.activation,
            "labels": names,
            "summary": f"wrote {args.output}: input {spec.layout} {size}, {spec.describe()}; scores {scores} "
                       f"({model.meta.activation}); {names or 'no'} class names"}


def cmd_layers(args) -> dict:
    model = _load(args)
    rows = api.layers(model)
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"{'name':<{width}}  {'kind':<10}  {'shape':<20}  layout"]
    lines += [f"{r['name']:<{width}}  {r['kind']:<10}  {str(tuple(r['shape'])):<20}  {r['layout']}" for r in rows]
    spec = model.input_spec
    attention = sum(r["kind"] == "attention" for r in rows)
    lines.append(
        f"{len(rows) - attention} layers"
        + (f" and {attention} attention maps" if attention else "")
        + f"; source {model.meta.source} ({model.meta.source_name}); input {spec.layout} "
        f"{spec.size}, {spec.color_name}, preset {spec.preset}"
        + (" (inferred: no convlens metadata)" if model.meta.inferred else "")
    )
    return {"layers": rows, "source": model.meta.source, "input": vars(spec), "files": [], "summary": "\n".join(lines)}


def cmd_activations(args) -> dict:
    model = _load(args)
    values = api.activations(model, args.image, args.layers)
    names = list(values)
    out = Path(args.output)
    files, shapes = [], {}
    for name in names:
        arr = values[name]
        safe = name.replace("/", "_").replace(":", "_")
        grid = upscale(colorize(channel_grid(api.channels(model, name, arr)[0])))
        files.append(str(write_png(out / f"{safe}.png", grid, args.force)))
        files.append(str(write_npy(out / f"{safe}.npy", arr, args.force)))
        shapes[name] = list(arr.shape)
    return {"files": files, "shapes": shapes,
            "summary": f"wrote {len(files)} files to {out} ({', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())})"}


def cmd_export(args) -> dict:
    if args.box_objective != "score":
        raise ConvlensError("export --box explains each detection's class logit; --box-objective score+iou applies "
                            "to cam and saliency.")
    explainer = api.export(_load(args), args.output, method=args.method, layer=args.layer, steps=args.steps,
                           samples=args.samples, seed=args.seed, force=args.force, epsilon=args.epsilon,
                           gamma=args.gamma, input_size=args.input_size, box=args.box, max_boxes=args.max_boxes,
                           conf=args.conf, iou=args.iou, baseline=args.baseline, baselines=args.baselines,
                           stdevs=args.stdevs)
    outputs = [o.name for o in explainer.proto.graph.output]
    inputs = ("image (uint8 1 x H x W x 3)" if "boxes" in outputs
              else "image (uint8 N x H x W x 3), target (int64 N, optional)")
    lines = [f"wrote {args.output}: {args.method}" + (f" at {explainer.layer}" if explainer.layer else "") +
             f"; inputs {inputs}; outputs {', '.join(outputs)}"]
    lines += [f"note: {n}" for n in explainer.notes]
    return {"files": [args.output], "method": args.method, "layer": explainer.layer, "outputs": outputs,
            "notes": explainer.notes, "summary": "\n".join(lines)}


def cmd_attention(args) -> dict:
    patch = None
    if args.patch is not None:
        try:
            patch = tuple(int(v) for v in args.patch.split(","))
        except ValueError:
            patch = ()
        if len(patch) != 2:
            raise ConvlensError(f"--patch must look like ROW,COL (two integers), not {args.patch!r}.")
    model = _load(args)
    maps = api.attention(model, args.image, block=args.block, patch=patch)
    out = Path(args.output)
    stem = f"attention_block{args.block}_" + ("class" if patch is None else f"patch{patch[0]}_{patch[1]}")
    # each head's map over the photo at its own shape, labelled, as cam's overlays are
    photo = load_image(args.image)
    size = api.fitted(model, photo).shape[:2]
    overlays = []
    for head in maps:
        scaled = (head - head.min()) / (np.ptp(head) or 1.0)
        grid = cv2.resize(scaled.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        overlays.append(overlay(photo, api.on_photo(model, photo, grid)))
    tiles = labelled_tiles(overlays, [f"head {k}" for k in range(len(maps))], per_row=min(len(maps), 4))
    files = [str(write_npy(out / f"{stem}.npy", maps, args.force)), str(write_png(out / f"{stem}.png", tiles,
                                                                                 args.force))]
    who = "the class token" if patch is None else f"patch {patch[0]},{patch[1]}"
    return {"files": files, "heads": len(maps), "grid": list(maps.shape[1:]),
            "summary": f"{len(maps)} heads of block {args.block}, attention of {who} over a "
                       f"{maps.shape[1]}x{maps.shape[2]} patch grid\nwrote {len(files)} files to {out}"}


def _image_batches(items: list[str], size: int, free_size: bool):
    """Batches of (path, RGB image). A model that takes any size runs images of one size together, so a
    folder of mixed sizes is batched by size (in order of first appearance) instead of refused."""

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
    if args.batch < 1:
        raise ConvlensError(f"--batch must be 1 or more, not {args.batch}.")
    model = _load(args)
    out = Path(args.output)
    files, report = [], []
    stems = unique_stems(image_paths(args.images))
    total = len(stems)
    with Progress(total, "images", args.quiet or args.json) as progress:
        for batch in _image_batches(args.images, args.batch, model.input_spec.size is None):
            paths = [p for p, _ in batch]
            images = [img for _, img in batch]
            explained = api.with_target(model, images, **_drawn_region(args))
            maps, tops = api.cam(
                explained,
                images,
                target=args.target,
                layer=args.layer,
                method=args.method,
                score=args.score,
                head_fusion=args.head_fusion,
                discard=args.discard,
                **_detector(args),
            )
            texts = api.decoded(explained, images) or [None] * len(batch)
            for (path, original), results, top, text in zip(batch, maps, tops, texts):
                entry = {
                    "image": str(path),
                    "top5": [{"index": i, "label": l, "prob": p} for i, l, p in top],
                    "maps": [],
                } | ({"decoded": text} if text is not None else {})
                found = api.detections(model, original, conf=args.conf, iou=args.iou) if model.detector else []
                if found:
                    entry["detections"] = [{"index": k, "class": d.cls, "label": model.label(d.cls), "score": d.score,
                                            "box": [round(v, 2) for v in d.box]} for k, d in enumerate(found)]
                boxed = []  # a detector's overlays, each with its box: one summary picture of them all
                for r in results:
                    stem = f"{stems[path]}_{r.method}_{r.class_index}"
                    heat = api.on_photo(model, original, r.cam)  # the map on the photo the user gave
                    files.append(str(write_npy(out / f"{stem}_layer.npy", r.cam, args.force)))
                    files.append(str(write_npy(out / f"{stem}_image.npy", heat, args.force)))
                    picture = overlay(original, heat, args.overlay)
                    if found:
                        d = found[r.class_index]
                        picture = draw_box(picture, d.box, f"{r.class_index}: {model.label(d.cls)} {d.score:.2f}")
                        boxed.append(picture)
                    files.append(str(write_png(out / f"{stem}_overlay.png", picture, args.force)))
                    entry["maps"].append(
                        {
                            "class": r.class_index,
                            "label": r.label,
                            "score": r.score,
                            "layer": r.layer,
                            "layer_rule": r.layer_rule,
                            "zero": r.zero,
                            "peak_yx": [int(v) for v in np.unravel_index(np.argmax(heat), heat.shape)],
                        }
                    )
                if len(boxed) > 1:
                    summary = labelled_tiles(boxed, [f"detection {r.class_index}" for r in results],
                                             per_row=min(len(boxed), 4), side=320)
                    entry["summary"] = str(write_png(out / f"{stems[path]}_{args.method}_detections.png", summary,
                                                     args.force))
                    files.append(entry["summary"])
                report.append(entry)
            progress.advance(len(paths))
    lines = []
    for e in report:
        lines.append(f"{e['image']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in e["top5"]))
        for m in e["maps"]:
            lines.append(
                f"  {args.method} for {m['label']} ({m['class']}) at {m['layer']}"
                + (" (zero map: nothing to show)" if m["zero"] else "")
            )
    explained = explained if report else model
    lines += _target_lines(explained, {e["image"]: e["decoded"] for e in report if "decoded" in e})
    lines.append(f"wrote {len(files)} files to {out}")
    layer = report[0]["maps"][0]["layer"] if report and report[0]["maps"] else None
    rule = report[0]["maps"][0]["layer_rule"] if report and report[0]["maps"] else None
    return {"files": files, "images": report, "layer": layer, "layer_rule": rule, "summary": "\n".join(lines),
            **_target_summary(explained)}


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """A name per image for its outputs: its stem, or where stems repeat in one run its parent folder and stem,
    then its position, so one run's outputs never collide."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    names = {p: p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths}
    if len(set(names.values())) < len(names):
        names = {p: f"{k:03d}_{p.stem}" if counts[p.stem] > 1 else p.stem for k, p in enumerate(paths)}
    return names


def cmd_saliency(args) -> dict:
    model = _load(args)
    out = Path(args.output)
    files, report = [], []
    paths = image_paths(args.images)
    stems = unique_stems(paths)
    with Progress(len(paths), "images", args.quiet or args.json) as progress:
        for path in paths:
            original = load_image(path)
            explained = api.with_target(model, [original], **_drawn_region(args))
            for r in api.saliency(explained, original, target=args.target, method=args.method, score=args.score,
                                  samples=args.samples, steps=args.steps, seed=args.seed, epsilon=args.epsilon,
                                  gamma=args.gamma, condition=args.condition, baseline=args.baseline,
                                  baselines=args.baselines, stdevs=args.stdevs, **_detector(args)):  # topK: K maps
                stem = f"{stems[path]}_{args.method}_{r.class_index}"
                files.append(str(write_npy(out / f"{stem}.npy", r.attribution, args.force)))  # the model's input grid
                picture = saliency_image(api.on_photo(model, original, r.saliency))  # the photo's shape
                files.append(str(write_png(out / f"{stem}.png", picture, args.force)))
                report.append({"image": str(path), "class": r.class_index, "label": r.label,
                               "completeness_error": r.completeness_error, "relevance_sum": r.relevance_sum,
                               "explained_score": r.explained_score}
                              | ({"concept_shares": [{"channel": k, "share": v} for k, v in r.concept_shares[:10]]}
                                 if r.concept_shares else {}))
            progress.advance()
    summary = "\n".join(
        f"{e['image']}: {args.method} for {e['label']} ({e['class']})"
        + (f", relevance sum {e['relevance_sum']:.4g} of score {e['explained_score']:.4g}"
           if e["relevance_sum"] is not None else
           f", completeness error {e['completeness_error']:.2%}" if e["completeness_error"] is not None else "")
        for e in report
    )
    explained = explained if paths else model
    summary = "\n".join([summary, *_target_lines(explained, {})])
    return {"files": files, "images": report, "summary": summary + f"\nwrote {len(files)} files to {out}",
            **_target_summary(explained)}


def cmd_atlas(args) -> dict:
    data = api.atlas(_load(args), args.images, args.output, layers=args.layers, units=args.units, top=args.top,
                     recipe=args.recipe, steps=args.steps, size=args.size, shard_size=args.shard_size,
                     force=args.force, quiet=args.quiet or args.json, diversity=args.diversity, ray=args.ray,
                     workers=args.workers)
    units = sum(len(layer["units"]) for layer in data["layers"])
    lines = [f"atlas of {units} units in {len(data['layers'])} layers over {len(data['images'])} images:"]
    lines += [f"  {layer['name']}: units {layer['units'][0]['unit']}-{layer['units'][-1]['unit']}, "
              f"{layer['grid'][0]}x{layer['grid'][1]} grid" for layer in data["layers"]]
    lines.append(f"wrote {Path(args.output) / 'index.html'}")
    return {"files": [str(Path(args.output) / "index.html")], "layers": [l["name"] for l in data["layers"]],
            "units": units, "summary": "\n".join(lines)}


def cmd_filters(args) -> dict:
    model = _load(args)
    init = None
    if args.init:
        init = np.load(args.init) if args.init.endswith(".npy") else load_image(args.init)
    res = api.filters(model, args.layer, filters=args.filters, recipe=args.recipe, steps=args.steps, size=args.size,
                      seed=args.seed, init=init, quiet=args.quiet or args.json, objective=args.objective,
                      position=args.position, direction=args.direction, diversity=args.diversity)
    out = Path(args.output)
    safe = args.layer.replace("/", "_").replace(":", "_")
    if args.objective != "channel":
        safe += f"_{args.objective}"
    names = [f"{f}" if res.filters.count(f) == 1 else f"{f}_{k}"
             for k, f in enumerate(res.filters)]  # with --diversity, a filter's N images
    files = [str(write_png(out / f"{safe}_{n}.png", img, args.force)) for n, img in zip(names, res.images)]
    files.append(str(write_png(out / f"{safe}_grid.png", filter_grid(res.images), args.force)))
    files.append(str(write_npy(out / f"{safe}.npy", res.raw, args.force)))
    objectives = {n: float(o) for n, o in zip(names, res.objectives)}
    summary = (f"{len(res.filters)} filters of {args.layer} ({args.recipe}); mean final activation "
               f"{np.mean(res.objectives):.3g}" + (f"; dead filters: {res.dead}" if res.dead else "")
               + f"\nwrote {len(files)} files to {out}")
    return {"files": files, "objectives": objectives, "dead": res.dead, "summary": summary}


def cmd_report(args) -> dict:
    check_writable(args.output, args.force)
    model = _load(args)
    page, results = api.report(
        model,
        [str(p) for p in image_paths(args.images)],
        title=f"convlens: {Path(args.model).name}",
        quiet=args.quiet or args.json,
    )
    path = write_atomic(args.output, page.encode(), args.force)
    return {"files": [str(path)], **results, "summary": f"wrote {path} ({len(page) // 1024} KB)"}


def cmd_example_files(args) -> dict:
    written, missing = api.example_files(args.output, force=args.force)
    lines = [f"wrote {len(written)} files to {args.output}: " + ", ".join(Path(p).relative_to(args.output).as_posix()
                                                                       for p in written)]
    lines += [f"not written: {m}" for m in missing]
    return {"files": [str(p) for p in written], "missing": missing, "summary": "\n".join(lines)}


def cmd_demo(args) -> dict:
    """Convert EfficientNet-Lite0 (weights ship with a package), then report on the bundled cat photo."""
    import time

    out = Path(args.output)
    report_path = check_writable(out / "report.html", args.force)  # a second demo never overwrites without --force
    start = time.perf_counter()
    model, note = api.demo_model(out, force=args.force, verbose=args.verbose)
    photo = out / "chelsea.png"
    if not photo.exists():
        write_png(photo, sample_image().astype("uint8"))
    page, results = api.report(model, [str(photo)], title="convlens demo: EfficientNet-Lite0 on Chelsea the cat",
                               filter_steps=args.filter_steps, quiet=args.quiet or args.json)
    report = write_atomic(report_path, page.encode(), args.force)
    top = results["images"][0]["top5"][0]
    return {
        "files": [str(model.path), str(report)],
        **results,
        "summary": f"{note}\ntop prediction: {top[1]} ({top[2]:.1%})\n"
        f"wrote {report} in {time.perf_counter() - start:.0f} s",
    }


class ComparisonFailed(Exception):
    """A comparison ran and found a figure beyond its tolerance (exit code 3)."""


def cmd_compare(args) -> dict:
    a, b = api.load(args.model_a), api.load(args.model_b)
    pairs = None
    if args.layers:
        pairs = [tuple(p.split(":")) for p in args.layers.split(",")]
        if not all(len(p) == 2 and all(p) for p in pairs):  # not an assert: `python -O` strips those

            raise ConvlensError(f"--layers must look like A1:B1,A2:B2, not {args.layers!r}.")
    c = api.compare(a, b, args.image, layers=pairs, target=args.target, activation_rtol=args.activation_rtol,
                    logits_rtol=args.logits_rtol, cam_tol=args.cam_tol, gradient_rtol=args.gradient_rtol,
                    filter_psnr=args.filter_psnr)
    out = Path(args.output)
    table = markdown(c, Path(args.model_a).name, Path(args.model_b).name)
    result = {"rows": c.rows, "figures": c.figures, "passed": c.passed, "first_failure": c.first_failure}
    files = [str(write_atomic(out / "compare.md", table.encode(), args.force)),
             str(write_atomic(out / "compare.json", json.dumps(result, indent=1, default=str).encode(), args.force))]
    shown = api.fitted(a, args.image)
    if "gradcam" in c.pictures:
        ha, hb = c.pictures["gradcam"]
        files.append(str(write_png(out / "gradcam_side_by_side.png",
                                   np.concatenate([overlay(shown, ha), overlay(shown, hb)], axis=1), args.force)))
    if "filters" in c.pictures:
        fa, fb = c.pictures["filters"]
        files.append(
            str(
                write_png(
                    out / "filters_side_by_side.png", filter_grid(np.concatenate([fa, fb]), per_row=len(fa)), args.force
                )
            )
        )
    result.update(files=files, summary=table + f"\nwrote {len(files)} files to {out}")
    if not c.passed:
        raise ComparisonFailed(result)
    return result


def cmd_sanity(args) -> dict:
    model = _load(args)
    rows = api.sanity(model, args.image, method=args.method, steps=args.steps, quiet=args.quiet or args.json)
    out = Path(args.output)
    table = sanity_markdown(rows)
    files = [str(write_atomic(out / f"sanity_{args.method}.md", table.encode(), args.force)),
             str(write_atomic(out / f"sanity_{args.method}.json", json.dumps(rows).encode(), args.force)),
             str(write_png(out / f"sanity_{args.method}.png", _sanity_figure(rows, args.method), args.force))]
    return {"rows": rows, "files": files, "summary": table + f"\nwrote {len(files)} files to {out}"}


def _sanity_figure(rows: list, method: str):
    """The randomization curve with its axes named: x, the layers randomized so far from the top (the last one
    named), y, the map's Spearman correlation with the trained model's map."""
    labels = ["trained"] + [f"to {r['top_layer']}" for r in rows[1:]]
    return line_plot([r["spearman"] for r in rows], labels, title=f"{method}: cascading randomization, top down",
                     y_label="Spearman with the trained map")


def cmd_verify(args) -> dict:
    model = _load(args)
    rows = api.verify(model, source=args.source, weights=args.weights, image=args.image,
                      quiet=args.quiet or args.json, verbose=args.verbose)
    passed = all(r["ok"] for r in rows)
    result = {"rows": rows, "passed": passed, "files": [],
              "summary": verification_markdown(rows) + ("\nPASSED" if passed else "\nFAILED")}
    if not passed:
        result["first_failure"] = next(r["figure"] for r in rows if not r["ok"])
        raise ComparisonFailed(result)
    return result


def cmd_evaluate(args) -> dict:
    if args.force:
        raise ConvlensError("evaluate never overwrites a run: a rerun into the same folder resumes it; to start over, "
                            "give -o a new folder.")
    run = api.evaluate(args.model, args.images, args.output, methods=args.methods, metrics=args.metrics,
                       boxes=args.boxes, steps=args.steps, layer=args.layer, road_noise=args.road_noise, ray=args.ray,
                       workers=args.workers, batch=args.batch, quiet=args.quiet or args.json,
                       **_recipe(args), layout=args.layout, scores=args.scores, labels=args.labels,
                       device=args.device, threads=args.threads or None, region=args.region, sequence=args.sequence,
                       position=args.position, index=args.index, like_vector=args.like_vector, box=args.box,
                       conf=args.conf, iou=args.iou)
    lines = [f"evaluated {run.evaluated} images ({run.skipped} done before) into {run.folder}"]
    for method, entry in run.summary["methods"].items():
        cells = [f"{k} {v['mean']:.3f}" for k, v in entry.items() if v["mean"] is not None]
        lines.append(f"  {method}: " + ", ".join(cells))
    return {"files": run.files, "summary_json": run.summary, "evaluated": run.evaluated, "skipped": run.skipped,
            "summary": "\n".join(lines)}


FOLDER_OUTPUTS = {"evaluate", "attention", "activations", "cam", "saliency", "filters", "compare", "sanity", "demo",
                  "atlas"}
COMMANDS = {
    "annotate": cmd_annotate,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "verify": cmd_verify,
    "sanity": cmd_sanity,
    "compare": cmd_compare,
    "demo": cmd_demo,
    "example-files": cmd_example_files,
    "convert": cmd_convert,
    "layers": cmd_layers,
    "activations": cmd_activations,
    "attention": cmd_attention,
    "export": cmd_export,
    "cam": cmd_cam,
    "saliency": cmd_saliency,
    "filters": cmd_filters,
    "atlas": cmd_atlas,
}
