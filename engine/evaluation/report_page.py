"""report.html of an evaluation: the summary table, mean curves, each metric's distribution per method,
and the images where the methods disagree most, with their heatmaps. Self-contained: charts are inline
SVG, pictures data URIs."""
from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from ..render.html_page import figure, page
from ..render.images import load_image, resize
from ..render.pictures import overlay
from .metrics import HIGHER_IS_BETTER, METRICS

CSS = """body{max-width:1150px}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}figure{display:inline-block;margin:.4em;vertical-align:top}
figcaption{font-size:.8em;max-width:180px}figure img{width:160px}svg{margin:.5em}
.legend span{display:inline-block;margin-right:1em;font-size:.85em}"""
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
RANDOM_COLOR = "#888888"


def _color(methods, method):
    return (
        RANDOM_COLOR
        if method == "random"
        else COLORS[[m for m in methods if m != "random"].index(method) % len(COLORS)]
    )


def _legend(methods) -> str:
    return "<p class='legend'>" + "".join(
        f"<span><b style='color:{_color(methods, m)}'>&#9632;</b> {html.escape(m)}</span>" for m in methods) + "</p>"


def _curve_chart(title: str, by_method: dict, methods) -> str:
    w, h, pad = 420, 260, 36
    parts = [f"<svg width='{w}' height='{h}' role='img' aria-label='{html.escape(title)}'>",
             f"<text x='{w / 2}' y='16' text-anchor='middle' font-size='13'>{html.escape(title)}</text>",
             f"<rect x='{pad}' y='{pad - 10}' width='{w - 2 * pad}' height='{h - 2 * pad}' fill='none' stroke='#bbb'/>"]
    top = max([max(v) for _, v in by_method.values()] + [1e-9])
    for method in methods:
        if method not in by_method:
            continue
        fx, vy = by_method[method]
        pts = " ".join(
            f"{pad + (w - 2 * pad) * f:.1f},{pad - 10 + (h - 2 * pad) * (1 - v / top):.1f}" for f, v in zip(fx, vy)
        )
        dash = " stroke-dasharray='4 3'" if method == "random" else ""
        parts.append(
            f"<polyline fill='none' stroke='{_color(methods, method)}' stroke-width='2'{dash} points='{pts}'/>"
        )
    parts.append(
        f"<text x='{w / 2}' y='{h - 6}' text-anchor='middle' font-size='11'>fraction of pixels</text>"
        f"<text x='{pad + 4}' y='{pad + 4}' font-size='11'>probability (top of the frame: {top:.3f})</text></svg>"
    )
    return "".join(parts)


def _distribution(column: str, rows, methods) -> str:
    """One row of dots per method (a strip plot) with the mean marked."""
    values = {m: np.array([r[column] for r in rows if r["method"] == m and r[column] is not None
                           and np.isfinite(r[column])]) for m in methods}
    everything = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
    lo, hi = float(everything.min()), float(everything.max())
    hi = hi if hi > lo else lo + 1
    w, row_h, left = 420, 22, 120
    h = row_h * len(methods) + 40
    better = "higher is better" if HIGHER_IS_BETTER[column] else "lower is better"
    parts = [f"<svg width='{w}' height='{h}' role='img' aria-label='{column}'>",
             f"<text x='{w / 2}' y='14' text-anchor='middle' font-size='13'>{column} ({better})</text>"]
    for i, m in enumerate(methods):
        y = 30 + i * row_h
        parts.append(f"<text x='4' y='{y + 4}' font-size='11'>{html.escape(m)}</text>")
        for v in values[m]:
            x = left + (w - left - 10) * (v - lo) / (hi - lo)
            parts.append(f"<circle cx='{x:.1f}' cy='{y}' r='2.5' fill='{_color(methods, m)}' fill-opacity='.5'/>")
        if len(values[m]):
            x = left + (w - left - 10) * (values[m].mean() - lo) / (hi - lo)
            parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y - 8}' y2='{y + 8}' stroke='#000' stroke-width='2'/>")
    parts.append(f"<text x='{left}' y='{h - 4}' font-size='10'>{lo:.3g}</text>"
                 f"<text x='{w - 10}' y='{h - 4}' font-size='10' text-anchor='end'>{hi:.3g}</text></svg>")
    return "".join(parts)


def _disagreements(folder: Path, rows, methods, column: str, count: int = 4) -> str:
    """The images whose methods (the random baseline aside) spread most on `column`, with every map."""
    compared = [m for m in methods if m != "random"]
    by_path: dict = {}
    for r in rows:
        if r[column] is not None and np.isfinite(r[column]):
            by_path.setdefault(r["path"], {})[r["method"]] = r
    spread = sorted(((np.ptp([v[m][column] for m in compared]), p) for p, v in by_path.items()
                     if all(m in v for m in compared) and len(compared) > 1), reverse=True)[:count]
    parts = []
    for gap, path in spread:
        first = by_path[path][compared[0]]
        heat0 = cv2.imread(str(folder / first["heatmap_file"]), cv2.IMREAD_GRAYSCALE)
        try:
            picture = resize(load_image(path), heat0.shape[:2])
        except Exception:  # the image moved since the run: show the maps on gray
            picture = np.full(heat0.shape[:2] + (3,), 128, np.float32)
        figures = []
        for m in methods:
            r = by_path[path].get(m)
            heat = cv2.imread(str(folder / r["heatmap_file"]), cv2.IMREAD_GRAYSCALE) if r else None
            if heat is None:
                continue
            caption = f"{m}: {column} {r[column]:.3f}"
            figures.append(figure(overlay(picture, heat / 255.0), caption))
        parts.append(f"<h3>{html.escape(Path(path).name)}: class {html.escape(first['target_label'])}, "
                     f"spread {gap:.3f}</h3>" + "".join(figures))
    return "".join(parts) or "<p>Fewer than two methods scored the same images.</p>"


def build_page(folder: Path, rows: list[dict], curves: dict, summary: dict, model_name: str) -> str:
    methods = list(summary["settings"]["methods"])
    metrics = summary["settings"]["metrics"]
    columns = [c for k in metrics for c in METRICS[k]]
    title = f"convlens evaluate: {model_name}, {summary['images']} images"
    parts = ["<p>Each value is a mean over images with its 95 % bootstrap interval; <i>random</i> (uniform random "
             "maps) is the baseline a method must beat. Definitions: docs/evaluation.md.</p>",
             "<div style='overflow-x:auto'><table><tr><th>method</th>" + "".join(f"<th>{c}</th>" for c in columns)
             + "</tr>"]
    for m in methods:
        cells = []
        for c in columns:
            s = summary["methods"][m][c]
            cells.append("<td>n/a</td>" if s["mean"] is None else
                         f"<td>{s['mean']:.3f} <small>[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] n={s['n']}</small></td>")
        parts.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    parts.append("</table></div>")
    if curves:
        parts.append("<h2>Mean curves</h2>" + _legend(methods))
        for metric in ("deletion", "insertion"):
            if metric in curves:
                parts.append(_curve_chart(f"{metric} (mean over images)", curves[metric], methods))
    if rows:
        parts.append("<h2>Distributions</h2>" + "".join(_distribution(c, rows, methods) for c in columns))
        parts.append(f"<h2>Where the methods disagree most (on {columns[0]})</h2>")
        parts.append(_disagreements(folder, rows, methods, columns[0]))
    return page(title, CSS, parts, checks="document.body.dataset.charts=document.querySelectorAll('svg').length;")
