"""Arrays made from another's shape: zeros_like and ones_like (constant in their input)."""
from __future__ import annotations

from .base import NONDIFF, Op, apply

_zeros_like = Op("zeros_like", lambda xp, x: xp.zeros_like(x), lambda x: (x.shape, x.dtype),
                 vjp=(NONDIFF,), jvp=(NONDIFF,), doc="Zeros of x's run-time shape and dtype.")
_ones_like = Op("ones_like", lambda xp, x: xp.ones_like(x), lambda x: (x.shape, x.dtype),
                vjp=(NONDIFF,), jvp=(NONDIFF,), doc="Ones of x's run-time shape and dtype.")


def zeros_like(x):
    """Zeros shaped like x (its value is never read, only its shape).  No derivative flows
    (∂/∂x = 0)."""
    return apply(_zeros_like, x)


def ones_like(x):
    """Ones shaped like x (its value is never read, only its shape).  No derivative flows
    (∂/∂x = 0)."""
    return apply(_ones_like, x)
