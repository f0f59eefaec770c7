"""DeepLIFT's rescale rule (Shrikumar et al. 2017) as backward rules, in Captum's form.

The program runs on a batch of 2N: the N inputs, then their N references (baselines). A nonlinearity's
multiplier is (y - y_ref) / (x - x_ref), the same for an item and its reference, where the input moved
(|x - x_ref| >= 1e-10) and its gradient elsewhere; linear ops keep their gradient rules. The attribution is
(x - x_ref) times the inputs' half of the resulting "gradient", and it sums to F(x) - F(x_ref).

Captum's DeepLift names ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus and MaxPool modules; here every elementwise
activation gets the rule (ReLU6 too, which Captum leaves to the gradient: MobileNets and EfficientNet-Lite then
lose summation-to-delta there), and max-pools get the rule Captum names but, as measured, does not apply
(tests/autodiff/test_propagation.py). Where a net has only the modules Captum covers and no max-pool, the two agree.
"""
from __future__ import annotations

from .registry import RULES

EPS = 1e-10


def _halves(e, t: str) -> tuple[str, str]:
    """(first N, last N) of a 2N batch."""
    half = e.op("Div", e.op("Shape", t, start=0, end=1), e.ints([2]))
    first = e.op("Slice", t, e.ints([0]), half, e.ints([0]))
    second = e.op("Slice", t, half, e.ints([2 ** 62]), e.ints([0]))
    return first, second


def _twice(e, t: str) -> str:
    return e.op("Concat", t, t, axis=0)


def _delta(e, t: str) -> str:
    """t - t_ref for the inputs, repeated for the references: shaped like t."""
    a, b = _halves(e, t)
    return _twice(e, e.op("Sub", a, b))


def _where_moved(e, delta_in: str, gradient: str, rescaled: str) -> str:
    still = e.op("Less", e.op("Abs", delta_in), e.const(EPS))
    return e.op("Where", still, gradient, rescaled)


def rescale(e, node, dy, needs):
    """dx = dy * (y - y_ref) / (x - x_ref), or the gradient where x did not move"""
    x, y = node.input[0], node.output[0]
    gradient = RULES[node.op_type](e, node, dy, needs)[0]
    delta_in, delta_out = _delta(e, x), _delta(e, y)
    safe = e.op("Where", e.op("Less", e.op("Abs", delta_in), e.const(EPS)), e.const(1.0), delta_in)
    return [_where_moved(e, delta_in, gradient, e.op("Div", e.op("Mul", dy[0], delta_out), safe))]


def rescale_max_pool(e, node, dy, needs):
    """Captum's max-pool rule: the output moves from y_ref to max(y, y_ref) for the reference's windows and from
    there to y for the input's; each part goes back through its own argmax, over x - x_ref"""
    x, y = node.input[0], node.output[0]
    gradient = RULES["MaxPool"](e, node, dy, needs)[0]
    out, out_ref = _halves(e, y)
    top = e.op("Max", out, out_ref)
    delta_out = e.op("Concat", e.op("Sub", top, out_ref), e.op("Sub", out, top), axis=0)
    spread = RULES["MaxPool"](e, node, [e.op("Mul", dy[0], delta_out)], needs)[0]
    first, second = _halves(e, spread)
    summed = _twice(e, e.op("Add", first, second))
    delta_in = _delta(e, x)
    safe = e.op("Where", e.op("Less", e.op("Abs", delta_in), e.const(EPS)), e.const(1.0), delta_in)
    return [_where_moved(e, delta_in, gradient, e.op("Div", summed, safe))]


ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Clip",
               "HardSigmoid", "HardSwish", "Gelu", "Mish")
DEEPLIFT = {op: rescale for op in ACTIVATIONS} | {"MaxPool": rescale_max_pool}
