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

from .errors import DifferentiationError, UsageError, located
from .graph import Node
from .ops.base import NONDIFF, REGISTRY, Op, apply

__all__ = ["shaped_like", "seed_for", "tangent_checked"]

#: the transforms whose seed is a tangent of the input (hvp: the jvp of the gradient)
_TANGENT_FNS = ("jvp", "hvp")


def _infer(t, x):
    # every length either side knows (checked equal by seed_for, tied at run time)
    return tuple(a if a is not None else b for a, b in zip(t.shape, x.shape)), t.dtype


shaped_like = REGISTRY.get("shaped_like") or Op(
    "shaped_like", lambda xp, t, x: t, _infer,
    vjp=(lambda g, ans, t, x: g, NONDIFF), jvp=(lambda d, ans, t, x: d, NONDIFF),
    doc="t's value, held to x's shape: a derivative's seed for an input x with a run-time "
        "length (each axis of t is x's, checked per call).  t̄ = Ḡ; x gives its shape only.")


def _read_in(t, x, fn="vjp"):
    """The dtype to read a cotangent ``t`` in: a float ``x``'s own where ``t`` is bool
    or an integer, as torch casts a grad_output to its output's dtype. Propagated in its
    own dtype, an int8 seed of 100 for x + x was 200 wrapped to −56, silently, and the
    result an integer or a float depending on the ops on the path; a complex output's
    too (z + z). None: as is. A complex cotangent for a real output is a UsageError, as
    torch refuses it: the sweep keeps a real input's real part, so its imaginary part
    was dropped without a word. Tangents never get here unchecked: theirs is their
    input's dtype exactly (tangent_checked)."""
    dtype = np.dtype(t.dtype) if hasattr(t, "dtype") else np.asarray(t).dtype
    if dtype.kind == "c" and x.dtype.kind != "c":
        raise located(UsageError, f"{fn}: the cotangent for {x.name!r} is complex ({dtype}), "
                      f"but {x.name!r} is {x.dtype}: a real output takes a real cotangent "
                      "(as torch); differentiate its real and imaginary parts apart")
    return x.dtype if x.dtype.kind in "fc" and dtype.kind in "biu" else None


def seed_for(t, x: Node, fn: str, what: str) -> Node | None:
    """The seed ``t`` (a node or an array) for input ``x`` of ``fn`` (jvp, vjp, hvp; the
    output ``x`` of adjoints, whose seed is a cotangent):
    refused now where a known length disagrees, and read through ``shaped_like``
    where ``x`` has a run-time length, so the rest is checked per call. A tangent's
    dtype is checked (``tangent_checked``: None for an integer or boolean input's
    absent tangent); an integer or bool cotangent is read in x's float dtype
    (``_read_in``)."""
    from .leaves import constant_in
    if fn in _TANGENT_FNS:
        t = tangent_checked(t, x, fn, what)
        if t is None:
            return None
        dtype = x.dtype
    else:
        dtype = _read_in(t, x, fn)
    if not isinstance(t, Node):
        t = constant_in(x.graph, t, name=f"{what} for {x.name}", dtype=dtype)
    elif dtype is not None and t.dtype != dtype:
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


def tangent_checked(t, x: Node, fn: str, what: str):
    """The tangent ``t`` for input ``x`` of ``fn`` (jvp, hvp), its dtype checked as JAX
    checks it (``jax.jvp``: "primal and tangent arguments ... dtypes must be equal"):

    * a float or complex input takes a tangent of exactly its dtype: a node or numpy
      array of another dtype is a UsageError, a float32 tangent for a float64 input
      included (JAX refuses it; promoting silently changed the result's dtype). Python
      numbers and lists, which carry no dtype of their own (JAX's weak types), take the
      input's: int and float values for a float input, complex ones too for a complex
      input; a bool, or a complex value for a real input, is refused;
    * an integer or boolean input has no tangent (JAX's float0): ``None``, returned as
      it is. Any value there is refused: it was ignored before, silently.
    """
    where = f"{fn}: the {what} for {x.name!r}"
    if x.dtype.kind not in "fc":
        if t is None:
            return None
        raise located(UsageError, f"{where} must be None: {x.name!r} is {x.dtype}, and "
                      f"an integer or boolean input has no tangent (JAX's float0)")
    if t is None:
        raise located(UsageError, f"{where} is None, but {x.name!r} is {x.dtype}: give "
                      f"a tangent of that dtype")
    if isinstance(t, (Node, np.ndarray, np.generic)):
        if t.dtype != x.dtype:
            raise located(UsageError, f"{where} has dtype {t.dtype}, but {x.name!r} is "
                          f"{x.dtype}: a tangent's dtype must be its input's (as JAX)")
        return t
    given = _values(t, where)
    if given.dtype.kind not in ("iuf" if x.dtype.kind == "f" else "iufc"):
        raise located(UsageError, f"{where} holds {given.dtype} values, but {x.name!r} "
                      f"is {x.dtype}: a tangent's dtype must be its input's")
    with np.errstate(over="ignore"):
        cast = given.astype(x.dtype)
    if not np.array_equal(np.isfinite(cast), np.isfinite(given)):
        raise located(UsageError, f"{where} holds values beyond the range of "
                      f"{x.dtype}, {x.name!r}'s dtype")
    return cast


def _values(t, where) -> np.ndarray:
    """The Python number or list ``t`` as numpy reads it (a refusal names ``where``)."""
    try:
        return np.asarray(t)
    except (ValueError, TypeError) as e:
        raise located(UsageError, f"{where} is not an array of numbers: {e}") from None
