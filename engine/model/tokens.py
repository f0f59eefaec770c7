"""Token layers of vision transformers, laid out on the patch grid.

A transformer layer's output is (N, T, C): T = P + h * w tokens, the P prefix tokens (class, distillation,
register) first and the h x w patches after them, row by row, as the patch embedding flattens its grid
(torchvision, timm, Hugging Face and Keras ViTs all put the prefix first). The grid is read from the graph,
never asked of the user: it is the output grid of the patch embedding (a convolution whose stride is its
kernel), the convolution whose output becomes the token sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConvlensError
from ..graph import needed_nodes

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")


@dataclass(frozen=True)
class TokenGrid:
    prefix: int  # class, distillation and register tokens, before the patches
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return self.prefix + self.height * self.width

    def to_nchw(self, arr: np.ndarray) -> np.ndarray:
        """(N, T, C) -> (N, C, h, w): prefix tokens dropped, patches laid out row by row."""
        if arr.ndim != 3 or arr.shape[1] != self.tokens:
            raise ConvlensError(f"A token tensor {arr.shape} does not hold {self.prefix} prefix tokens and a "
                                f"{self.height}x{self.width} patch grid.")
        n, _, c = arr.shape
        return arr[:, self.prefix:, :].reshape(n, self.height, self.width, c).transpose(0, 3, 1, 2)

    def patches(self, row: np.ndarray) -> np.ndarray:
        """One token row (..., T) -> its patch part as a (..., h, w) grid."""
        return row[..., self.prefix:].reshape(row.shape[:-1] + (self.height, self.width))


def scores_path(model) -> list:
    """The nodes the class scores depend on, in graph order."""
    scores = model.meta.logits or model.meta.probabilities or model.graph_outputs[0]
    return needed_nodes(model.nodes, [scores])


def patch_grid(model, shapes: dict) -> tuple[int, int] | None:
    """(h, w) of the patch embedding: the convolution whose output the graph first flattens into a sequence
    (a rank-3 tensor) on the path to the scores. A model with no such sequence (a convnet, Swin's 4-D stages)
    gets its last convolution's grid. A conv decoder after the tokens (a DINOv2-style backbone with a dense
    head) is never the patch grid. ONNX Conv outputs are NCHW."""
    def grid(node):
        shape = shapes.get(node.output[0])
        if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
            return int(shape[2]), int(shape[3])
        return None

    path = scores_path(model)
    last_conv = None
    for node in path:
        if node.op_type in CONV_OPS:
            last_conv = node
        elif last_conv is not None and any(len(shapes.get(o) or ()) == 3 for o in node.output):
            return grid(last_conv)  # the tokens are made here: their grid is the conv's before them
    return grid(last_conv) if last_conv is not None else None


def token_grid(model, tensor: str, shapes: dict) -> TokenGrid | None:
    """The TokenGrid of a (N, T, C) tensor whose T is some prefix tokens plus the patch grid, else None."""
    shape = shapes.get(tensor)
    if shape is None or len(shape) != 3 or not isinstance(shape[1], int):
        return None
    grid = patch_grid(model, shapes)
    if grid is None:
        return None
    prefix = shape[1] - grid[0] * grid[1]
    return TokenGrid(prefix, *grid) if 0 <= prefix < grid[0] * grid[1] else None
