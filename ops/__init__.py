"""flowgrad's ops: one file per family. ``base`` holds the contract and registry."""
from .base import REGISTRY, NONDIFF, Op, apply, as_node  # noqa: F401
from .broadcast import broadcast_to_like, sum_to_like  # noqa: F401
from .elementwise import add, cos, div, exp, log, mul, neg, pow, sin, sub, tanh  # noqa: F401
from .reductions import mean, sum  # noqa: F401
from .shape import (broadcast_to, expand_dims, reshape, squeeze,  # noqa: F401
                    transpose)
from .linalg import matmul  # noqa: F401
from .creation import ones_like, zeros_like  # noqa: F401
from .nn import bce_with_logits, l2, linear, mse, sigmoid, softplus  # noqa: F401

#: the ops that are public as ``fg.NAME`` (some shadow builtins on purpose: fg.sum, fg.pow)
__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh", "sin", "cos",
    "sum", "mean",
    "reshape", "transpose", "broadcast_to", "expand_dims", "squeeze",
    "matmul",
    "linear", "sigmoid", "softplus", "mse", "l2", "bce_with_logits",
    "zeros_like", "ones_like",
]
