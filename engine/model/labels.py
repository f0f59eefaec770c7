"""Class labels: the 1000 ImageNet names ship with convlens; files may carry their own list."""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

import onnx

from ..errors import ConvlensError

# metadata_props keys under which exporters store class names (ultralytics: names; PaddleOCR: character)
LABEL_KEYS = ("labels", "names", "classes", "class_names", "categories", "character", "id2label")


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    return (Path(__file__).parent.parent / "data" / "imagenet_labels.txt").read_text().splitlines()


def read_labels(source: str) -> str | list[str]:
    """--labels: "imagenet" (shipped) or a text file with one class name per line."""
    if source.lower() == "imagenet":
        return "imagenet"
    path = Path(source)
    if not path.is_file():
        raise ConvlensError(f"Labels file not found: {path} (or pass --labels imagenet).")
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise ConvlensError(f"Labels file {path} holds no names (one class name per line).")
    return names


def labels_in_file(proto: onnx.ModelProto) -> list[str] | None:
    """Class names a foreign file carries in its metadata_props: a JSON list or object, a Python dict literal
    ({0: 'person', ...}, as ultralytics writes `names`), or one name per line. Whether they fit the class
    count is checked by check_label_count."""
    props = {p.key.lower(): p.value for p in proto.metadata_props}
    for key in LABEL_KEYS:
        if key in props:
            names = parse_label_list(props[key])
            if names:
                return names
    return None


def parse_label_list(text: str) -> list[str] | None:
    value = None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if isinstance(value, dict):
        try:
            order = sorted(value, key=int)
        except (TypeError, ValueError):
            return None
        if [int(k) for k in order] != list(range(len(order))):
            return None
        return [str(value[k]) for k in order]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] if value and all(isinstance(v, (str, int, float)) for v in value) else None
    if value is None and "\n" in text:
        # one name per line: split on newlines only and strip ASCII blanks only, so a character list keeps its
        # other whitespace characters (PaddleOCR's lists hold U+3000) and every name keeps its index
        names = [line.strip(" \t\r") for line in text.split("\n")]
        while names and not names[-1]:
            names.pop()
        return names or None
    return None


def check_label_count(labels, classes: int | None, flag: str | None, path) -> str | list[str] | None:
    """The labels, where they fit the model's class count. Names a user gave (`flag`) that do not fit are
    refused; names a file carries that do not fit are dropped (a list of another length names something else)."""
    if labels is None or classes is None:
        return labels
    count = 1000 if labels == "imagenet" else len(labels)
    if count == classes:
        return labels
    if flag:
        what = "the 1000 ImageNet names" if labels == "imagenet" else f"{count} names"
        raise ConvlensError(f"{flag} gives {what}, but {Path(str(path)).name} scores {classes} classes; "
                            "give a list with one name per class.")
    return None


def resolve_labels(labels, num_classes: int | None) -> list[str] | None:
    """The list of class names for metadata `labels` ("imagenet", a list, or None)."""
    if labels == "imagenet":
        return imagenet_labels()
    if isinstance(labels, list):
        return labels
    if num_classes == 1000:
        return imagenet_labels()
    return None
