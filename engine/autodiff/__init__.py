"""Backward graphs in standard ONNX ops: one rule per op (rules.py), one walker (walker.py)."""
from .rules import OVERRIDES, RULES
from .walker import Backward, build_backward

__all__ = ["build_backward", "Backward", "RULES", "OVERRIDES"]
