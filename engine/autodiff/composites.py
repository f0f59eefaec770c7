"""LRP composites: which relevance rule each layer gets, by its role, as one table (Zennit's composites, by name).

A role is read off the ONNX node: the first linear layer from the input (first Conv, Gemm or MatMul with constant
weights), other convolutions, dense layers (Gemm, MatMul), sums (residual adds, a bias added on its own),
average pools, and the layers relevance passes through unchanged (activations, batch norms no canonizer folded).
Every other op keeps its gradient rule: max-pools send relevance to the winner, reshapes and concats route it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from ..errors import ConvlensError
from .rules_relevance import (
    LINEAR_OPS,
    alpha_beta,
    epsilon,
    flat,
    gamma,
    norm,
    passing,
    zbox,
    zplus,
)

PASS_OPS = {"Relu", "LeakyRelu", "PRelu", "Clip", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
            "Tanh", "Softplus", "Softsign", "Gelu", "BatchNormalization", "Dropout", "Identity"}
NORM_OPS = {"Add", "Sum", "AveragePool", "GlobalAveragePool", "ReduceMean"}


@dataclass(frozen=True)
class Composite:
    name: str
    reference: str  # Zennit's class with the same rules
    conv: Callable  # rule(e, node, dy, needs, **params) for convolutions
    dense: Callable  # for Gemm and MatMul
    first: Callable | None = None  # for the first linear layer, when it differs
    first_conv_only: bool = False  # the first rule applies only when that layer is a convolution (ZBox)

    def rule_for(self, e, node, first: bool, params: dict) -> Callable | None:
        """The relevance rule for this node, or None where its gradient rule stands (`e`: the Emitter, which
        knows the constants and the producers)."""
        op = node.op_type
        if op in LINEAR_OPS:
            if op == "MatMul" and e.value(node.input[1]) is None:
                raise ConvlensError(f"Node {node.name!r} multiplies two computed tensors (attention); the LRP "
                                    "composites have rules for convolutional and dense layers only: explain this "
                                    "model with input-x-gradient, integrated-gradients, deconvnet or a CAM method.")
            if first and self.first is not None and (op == "Conv" or not self.first_conv_only):
                return _bind(self.first, params)
            return _bind(self.conv if op == "Conv" else self.dense, params)
        if op in PASS_OPS:
            return passing
        if op in NORM_OPS:
            return _bind(norm, params)
        if op == "Mul" and _silu_input(e, node) is not None:
            return _silu_pass
        return None


def _bind(rule: Callable, params: dict) -> Callable:
    """The rule with the parameters it takes (eps for epsilon, gamma, low/high for z-box, the stabilizer)."""
    names = rule.__code__.co_varnames[4:rule.__code__.co_argcount]
    return partial(rule, **{k: v for k, v in params.items() if k in names})


def _silu_input(e, node) -> int | None:
    """Which input of Mul(x, Sigmoid(x)) is x (SiLU written as two nodes), or None for another Mul."""
    for k in (0, 1):
        made = e.producers.get(node.input[1 - k])
        if made is not None and made[1].op_type == "Sigmoid" and made[1].input[0] == node.input[k]:
            return k
    return None


def _silu_pass(e, node, dy, needs):
    """SiLU is an activation: all relevance to x, none through the gate."""
    return [dy[0], None] if _silu_input(e, node) == 0 else [None, dy[0]]


# the composites of the issue, named as Zennit names them; epsilon for dense layers throughout
COMPOSITES: dict[str, Composite] = {c.name: c for c in [
    Composite("lrp-epsilon", "LayerMapComposite([(Linear, Epsilon)] + layer_map_base())", epsilon, epsilon),
    Composite("lrp-epsilon-plus", "EpsilonPlus", zplus, epsilon),
    Composite("lrp-epsilon-plus-flat", "EpsilonPlusFlat", zplus, epsilon, first=flat),
    Composite("lrp-epsilon-gamma-box", "EpsilonGammaBox", gamma, epsilon, first=zbox, first_conv_only=True),
    Composite("lrp-epsilon-alpha2-beta1", "EpsilonAlpha2Beta1", alpha_beta, epsilon),
    Composite("lrp-epsilon-alpha2-beta1-flat", "EpsilonAlpha2Beta1Flat", alpha_beta, epsilon, first=flat),
]}
