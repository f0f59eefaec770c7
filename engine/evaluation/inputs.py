"""What `convlens evaluate` reads: image files, folders, CSV or Parquet lists (with labels), and boxes."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConvlensError
from ..render.images import image_paths

LIST_SUFFIXES = (".csv", ".parquet")
BOX_COLUMNS = ("path", "class", "x0", "y0", "x1", "y1")


@dataclass
class ImageItem:
    path: str  # absolute
    label: str | None = None  # as the list gives it (an index or a class name); None: the top-1 class
    boxes: list = field(default_factory=list)  # [(class as given, x0, y0, x1, y1)]


def image_items(sources: list[str]) -> list[ImageItem]:
    """Every image named by `sources` (files, folders, lists), once each, in the order given."""
    items: dict[str, ImageItem] = {}
    for source in sources:
        path = Path(source)
        if path.suffix.lower() in LIST_SUFFIXES:
            found = _listed(path)
        else:
            if not path.exists():
                raise ConvlensError(f"Image file not found: {path}")
            found = [ImageItem(str(p.resolve())) for p in image_paths([str(path)])]
        for item in found:
            items.setdefault(item.path, item)
    if not items:
        raise ConvlensError("No images to evaluate: the sources name no image files.")
    return list(items.values())


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise ConvlensError(f"No such list: {path}.")
    if path.suffix.lower() == ".parquet":
        return parquet_module().read_table(path).to_pylist()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _listed(path: Path) -> list[ImageItem]:
    rows = _rows(path)
    if rows and "path" not in rows[0]:
        raise ConvlensError(f"{path} has no 'path' column (columns: {', '.join(rows[0])}); a list needs path and, "
                            "optionally, label.")
    out = []
    for row in rows:
        image = _resolve(path, row["path"])
        if not os.path.isfile(image):
            raise ConvlensError(f"{path} lists {row['path']!r}, which is not a file.")
        label = row.get("label", row.get("class"))
        out.append(ImageItem(image, None if label in (None, "") else str(label)))
    return out


def read_boxes(path: str | os.PathLike) -> dict[str, list]:
    """{absolute image path: [(class, x0, y0, x1, y1), ...]} from a CSV with the header path,class,x0,y0,x1,y1."""
    path = Path(path)
    rows = _rows(path)
    if rows and tuple(rows[0]) != BOX_COLUMNS:
        raise ConvlensError(f"{path} must have the header {','.join(BOX_COLUMNS)}; it has {','.join(rows[0])}.")
    boxes: dict[str, list] = {}
    for n, row in enumerate(rows, start=2):
        try:
            x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        except (TypeError, ValueError):
            raise ConvlensError(f"{path}, line {n}: box corners must be numbers.") from None
        if not (x1 > x0 and y1 > y0):
            raise ConvlensError(f"{path}, line {n}: a box needs x1 > x0 and y1 > y0.")
        boxes.setdefault(_resolve(path, row["path"]), []).append((str(row["class"]), x0, y0, x1, y1))
    return boxes


def _resolve(list_path: Path, entry: str) -> str:
    p = Path(str(entry))
    return str((p if p.is_absolute() else list_path.parent / p).resolve())


def parquet_module():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConvlensError("Reading and writing Parquet needs pyarrow: pip install 'convlens[eval]'.") from None
    return pq
