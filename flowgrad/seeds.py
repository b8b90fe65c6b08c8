"""``shaped_like(t, x)``: a tangent (or cotangent) handed to ``fg.jvp``/``fg.vjp``/
``fg.hvp`` for an input ``x`` with a run-time length, held to ``x``'s shape.

When ``x``'s shape is fully known, a seed of another shape is refused at build time.
With a ``None`` length that check cannot be made then, and a seed of shape (1, k) for
a (None, k) input was broadcast against it — the answer for a tangent of ones, never
an error. The seed is therefore read through this op: its value is ``t`` itself, and
its run-time length rule (flowgrad/engine/lengths.py) ties each of ``t``'s axes to
``x``'s, so that every program that reads it checks, per call, that they agree — a
FeedError naming the seed otherwise. ``x`` is read for its shape only.
"""
from __future__ import annotations

import numpy as np

from .errors import DifferentiationError, located
from .graph import Node
from .ops.base import NONDIFF, REGISTRY, Op, apply

__all__ = ["shaped_like", "seed_for"]


def _infer(t, x):
    # every length either side knows (checked equal by seed_for, tied at run time)
    return tuple(a if a is not None else b for a, b in zip(t.shape, x.shape)), t.dtype


shaped_like = REGISTRY.get("shaped_like") or Op(
    "shaped_like", lambda xp, t, x: t, _infer,
    vjp=(lambda g, ans, t, x: g, NONDIFF), jvp=(lambda d, ans, t, x: d, NONDIFF),
    doc="t's value, held to x's shape: a derivative's seed for an input x with a run-time "
        "length (each axis of t is x's, checked per call).  t̄ = Ḡ; x gives its shape only.")


def _read_in(t, x):
    """The dtype to read the seed ``t`` in: a float ``x``'s own where ``t`` is bool or
    an integer, as torch casts a grad_output to its output's dtype. Propagated in its
    own dtype, an int8 tangent of 100 for x + x was 200 wrapped to −56, silently, and
    the result an integer or a float depending on the ops on the path. None: as is (a
    float seed may widen the derivative, as a float64 op after x would, see
    tests/test_custom_api.py; complex seeds and primals keep their own rules)."""
    dtype = np.dtype(t.dtype) if hasattr(t, "dtype") else np.asarray(t).dtype
    return x.dtype if x.dtype.kind == "f" and dtype.kind in "biu" else None


def seed_for(t, x: Node, fn: str, what: str) -> Node:
    """The seed ``t`` (a node or an array) for input ``x`` of ``fn`` (jvp, vjp, hvp),
    an integer one read in x's float dtype (_read_in): refused now where a known length
    disagrees, and read through ``shaped_like`` where ``x`` has a run-time length, so
    the rest is checked per call."""
    from .leaves import constant_in
    dtype = _read_in(t, x)
    if not isinstance(t, Node):
        t = constant_in(x.graph, t, name=f"{what} for {x.name}", dtype=dtype)
    elif dtype is not None:
        from .ops.tensor import astype
        t = astype(t, dtype)
    if None not in x.shape:
        same = t.shape == x.shape          # a known shape: the seed's, exactly
    else:                                  # the known lengths now, the rest per call
        same = len(t.shape) == len(x.shape) and all(
            a is None or b is None or a == b for a, b in zip(t.shape, x.shape))
    if not same:
        raise located(DifferentiationError, f"{fn}: the {what} has shape {t.shape}, but "
                      f"{x.name!r} has shape {x.shape}")
    if None not in x.shape or (t.op is shaped_like and t.inputs[1].id == x.id):
        return t
    return apply(shaped_like, t, x)
