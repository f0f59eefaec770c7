"""Class labels: the 1000 ImageNet names ship with convlens; files may carry their own list."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    return (Path(__file__).parent / "data" / "imagenet_labels.txt").read_text().splitlines()


def resolve_labels(labels, num_classes: int | None) -> list[str] | None:
    """The list of class names for metadata `labels` ("imagenet", a list, or None)."""
    if labels == "imagenet":
        return imagenet_labels()
    if isinstance(labels, list):
        return labels
    if num_classes == 1000:
        return imagenet_labels()
    return None
