"""Class labels: the 1000 ImageNet names ship with convlens; files may carry their own list."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    return (Path(__file__).parent / "data" / "imagenet_labels.txt").read_text().splitlines()


def read_labels(source: str) -> str | list[str]:
    """--labels: "imagenet" (shipped) or a text file with one class name per line."""
    from .errors import ConvlensError

    if source.lower() == "imagenet":
        return "imagenet"
    path = Path(source)
    if not path.is_file():
        raise ConvlensError(f"Labels file not found: {path} (or pass --labels imagenet).")
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise ConvlensError(f"Labels file {path} holds no names (one class name per line).")
    return names


def resolve_labels(labels, num_classes: int | None) -> list[str] | None:
    """The list of class names for metadata `labels` ("imagenet", a list, or None)."""
    if labels == "imagenet":
        return imagenet_labels()
    if isinstance(labels, list):
        return labels
    if num_classes == 1000:
        return imagenet_labels()
    return None
