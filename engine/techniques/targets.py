"""What to explain, in one place: the target (a class index, a label, 'top' or 'topK'), the tensor whose
score is differentiated, and the logit/probability rule.

--score logit (the Grad-CAM paper) differentiates the pre-softmax score; --score prob (the lesson) the
softmax output. A model that records only probabilities can be explained by them alone; one that records
logits gets its probabilities as softmax(logits) (sigmoid(logits) for a multi-label or binary head), computed
here or in the objective graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConvlensError
from ..model.model import Model
from .common import class_probabilities


@dataclass
class Target:
    """What to differentiate: a class score (logit or probability) or a layer's channel mean."""

    layer: str | None = None  # None: the model's class scores
    score: str = "logit"  # logit or prob, for class targets

    def tensor(self, model: Model) -> tuple[str, str]:
        """(tensor name, layout) of the objective's source."""
        if self.layer is not None:
            info = model.layer(self.layer)
            return info.tensor, info.layout
        if self.score == "prob":
            if model.meta.probabilities:
                return model.meta.probabilities, "flat"
            if model.meta.logits:
                return model.meta.logits, "flat"
        elif model.meta.logits:
            return model.meta.logits, "flat"
        if model.meta.probabilities:
            raise ConvlensError("The model records only probabilities; use --score prob.")
        return model.scores_tensor(), "flat"  # refuses, saying why


def top_k(target) -> int | None:
    """K for a target written 'top' (1) or 'topK', None for a class index or label."""
    if not (isinstance(target, str) and target.lower().startswith("top")):
        return None
    k = target[3:]
    if not (k == "" or (k.isdigit() and int(k) >= 1)):
        raise ConvlensError(f"Target {target!r} is not understood; write 'top', 'topK' with K >= 1, "
                            f"a class index or a label.")
    return int(k or 1)


def class_targets(model: Model, scores: np.ndarray, target) -> list[list[int]]:
    """Per image, the classes to explain: an index, a label, 'top' or 'topK'."""
    k = top_k(target)
    if k is not None:
        return [list(np.argsort(-row)[:k]) for row in scores]
    idx = model.class_index(target)
    if not 0 <= idx < scores.shape[1]:
        raise ConvlensError(f"Class {idx} is out of range; the model has {scores.shape[1]} classes.")
    return [[idx] for _ in scores]


def single_class(model: Model, target):
    """'top' when each image's one class is its top class, the class index when one is named, else None (topK)."""
    k = top_k(target)
    if k is not None:
        return "top" if k == 1 else None
    return model.class_index(target)


def score_values(model: Model, values: np.ndarray, tensor: str, score: str) -> np.ndarray:
    """(N, classes) scores from the values of `tensor`: softmaxed when probabilities are asked of logits."""
    scores = values.reshape(len(values), -1)
    return class_probabilities(model, scores) if (score == "prob" and tensor == model.meta.logits) else scores
