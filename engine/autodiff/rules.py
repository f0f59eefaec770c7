"""Gradient rules, one per ONNX op: rule(e, node, dy, needs) -> one gradient name (or None) per input.

`dy[k]` is the gradient of output k (None if nothing flows back through it); `needs[i]` says whether
input i's gradient is wanted (only inputs on the path from `wrt` to the objective are). The first
docstring line of each rule is its formula. Rules for ops in BROADCASTING return gradients in the
output's shape; the walker sums them down to each input's shape, once, in one place.

The rules live by family: rules_elementwise, rules_linear, rules_conv, rules_shape, rules_norm, rules_quant.
"""
from .registry import BROADCASTING, NON_DIFFERENTIABLE, RULES, rule  # noqa: F401
from .rules_conv import *  # noqa: F401,F403  (importing a family registers its rules)
from .rules_elementwise import *  # noqa: F401,F403
from .rules_deeplift import DEEPLIFT
from .rules_elementwise import OVERRIDES as ELEMENTWISE_OVERRIDES
from .rules_elementwise import gelu, guided_clip, guided_relu  # noqa: F401
from .rules_linear import *  # noqa: F401,F403
from .rules_norm import *  # noqa: F401,F403
from .rules_quant import *  # noqa: F401,F403
from .rules_shape import *  # noqa: F401,F403

# rule sets a request may select by name, by op type (the LRP composites, by layer role, are in composites.py)
OVERRIDES = {**ELEMENTWISE_OVERRIDES, "deeplift": DEEPLIFT}
