"""Ops that shape how derivatives flow rather than what is computed: ``stop_gradient``."""
from __future__ import annotations

from .base import NONDIFF, Op


def _identity(xp, x):
    """x itself: the kernel returns its input array (the scheduler knows it may alias)."""
    return x


stop_gradient = Op(
    "stop_gradient", _identity, lambda x: (x.shape, x.dtype),
    vjp=(NONDIFF,), jvp=(NONDIFF,),
    doc="x's value, treated as a constant by every derivative.  ∂/∂x = 0: no adjoint flows "
        "back through it and no tangent flows forward (a target network, a "
        "straight-through estimator's detached part).")
