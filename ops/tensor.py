"""Array plumbing: pad, split, astype.

``pad`` writes a constant border (zeros by default); its adjoint is the interior of
Ḡ, a slice that needs no lengths (``Ḡ[b:-a]``), so run-time lengths work. ``split``
returns the pieces as getitem nodes (slices), so it needs no op of its own and its
adjoint is getitem's. ``astype`` converts dtypes; between float dtypes its adjoint
is converted back, and integer or bool results carry no derivative.
"""
from __future__ import annotations

import numbers

import numpy as np

from flowgrad.errors import UsageError
from flowgrad.graph import Node

from .base import Op, apply, as_node, at_user_line, shape_error

# -- pad -------------------------------------------------------------------------------------


def _items(v):
    """``v``'s entries as a list, or None when it is no sequence (a float, a string)."""
    if isinstance(v, (str, bytes)):
        return None
    try:
        return list(v)
    except TypeError:
        return None


def _pad_widths(x, widths):
    """``widths`` as one (before, after) pair of ints ≥ 0 per axis of x, as numpy.pad
    reads it: an int, a pair, a single pair in a sequence, or one pair per axis."""
    ndim = len(x.shape)

    def ints(v):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral)):
            raise UsageError(f"pad: widths must be ints, got {widths!r}" + at_user_line())
        if v < 0:
            raise shape_error("pad", (x,), f"negative pad width in {widths!r}")
        return int(v)

    if isinstance(widths, (numbers.Integral, np.integer)) and not isinstance(widths, bool):
        ints(widths)                       # checked even for a 0-d x, as numpy does
        pairs = [(widths, widths)] * ndim
    else:
        w = _items(widths)
        if w is None:   # pad(x, 1.5): numpy's message would be "not iterable"
            raise UsageError(f"pad: widths must be an int, a (before, after) pair or one "
                             f"pair per axis, got {widths!r}" + at_user_line())
        rows = [_items(p) for p in w]
        if len(w) == 2 and all(isinstance(v, (numbers.Integral, np.integer)) for v in w):
            pairs = [tuple(w)] * ndim
        elif len(w) == 1 and rows[0] is not None and len(rows[0]) == 2:
            pairs = [tuple(rows[0])] * ndim
        elif len(w) == ndim and all(r is not None and len(r) == 2 for r in rows):
            pairs = [tuple(r) for r in rows]
        else:
            raise shape_error("pad", (x,), f"widths {widths!r} give no (before, after) pair "
                              f"for each of the {ndim} axes")
    return tuple((ints(b), ints(a)) for b, a in pairs)


def _pad_infer(x, widths, value):
    shape = tuple(None if s is None else s + b + a for s, (b, a) in zip(x.shape, widths))
    return shape, x.dtype


def _interior(g, widths):
    from .indexing import getitem
    index = tuple(slice(b, -a if a else None) for b, a in widths)
    return g if not any(b or a for b, a in widths) else getitem(g, index)


_pad = Op("pad", lambda xp, x, widths, value: xp.pad(x, widths, constant_values=value),
          _pad_infer,
          vjp=(lambda g, ans, x, widths, value: _interior(g, widths),),
          jvp=(lambda t, ans, x, widths, value: apply(_pad, t, widths=widths, value=0),),
          doc="x inside a constant border.  x̄ = Ḡ's interior (the border's derivative is "
              "0); the forward rule pads the tangent with zeros.")


def _check_pad_attrs(x, widths, value):
    """pad's attributes as pad() hands them over: a number (not a bool) and one
    (before, after) pair of ints ≥ 0 per axis. Its ``check_attrs``: a graph file
    (io/opsig.py) must not give what pad() refuses."""
    _pad_value(value)
    if type(widths) is not tuple or len(widths) != len(x.shape) or \
            not all(type(p) is tuple and len(p) == 2 for p in widths):
        raise UsageError(f"pad: widths must be one (before, after) pair per axis of the "
                         f"{len(x.shape)}-d input, got {widths!r:.80}")
    _pad_widths(x, widths)


def _pad_value(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Number):
        raise UsageError(f"pad: value must be a number, got {value!r}" + at_user_line())


_pad.check_attrs = _check_pad_attrs


def pad(x, widths, value=0):
    """x with a border of ``value`` (numpy.pad's constant mode): ``widths`` is an int,
    a (before, after) pair for every axis, or one pair per axis.
    x̄ = v̄'s interior, the slice where x went."""
    x = as_node(x)
    _pad_value(value)
    widths = _pad_widths(x, widths)
    if not any(b or a for b, a in widths):   # nothing to add (a 0-d x among them)
        return x
    return apply(_pad, x, widths=widths, value=value)


# -- split -----------------------------------------------------------------------------------

def _split_bounds(x, indices_or_sections, axis):
    n = x.shape[axis]
    if isinstance(indices_or_sections, (numbers.Integral, np.integer)) and \
            not isinstance(indices_or_sections, bool):
        k = int(indices_or_sections)
        if k <= 0:
            raise shape_error("split", (x,), f"the number of sections must be ≥ 1, got {k}")
        if n is None:
            raise shape_error("split", (x,), f"{k} equal sections need axis {axis}'s "
                              "length when the graph is built (give indices instead)")
        if n % k:
            raise shape_error("split", (x,), f"axis {axis} of length {n} does not split "
                              f"into {k} equal sections")
        cuts = [n // k * i for i in range(1, k)]
    else:
        cuts = [int(c) for c in indices_or_sections]
    return [0, *cuts, None]


def split(x, indices_or_sections, axis=0):
    """x cut along ``axis`` into a tuple of nodes, as numpy.split: an int k gives k equal
    pieces (an uneven split is refused), a list of indices the pieces between them.
    Each piece is a slice (getitem): its x̄ is v̄ placed where the piece came from."""
    from .indexing import getitem
    x = as_node(x)
    ndim = len(x.shape)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or \
            not -ndim <= axis < ndim:
        raise shape_error("split", (x,), f"axis {axis!r} is out of range for a {ndim}-d input")
    axis = int(axis) % ndim
    bounds = _split_bounds(x, indices_or_sections, axis)
    head = (slice(None),) * axis
    return tuple(getitem(x, head + (slice(lo, hi),)) for lo, hi in zip(bounds, bounds[1:]))


# -- astype ----------------------------------------------------------------------------------

def _dtype(dtype) -> np.dtype:
    from flowgrad.dtypes import as_dtype   # the one reader of a user's dtype
    return as_dtype(dtype, "astype")


def _astype_vjp(g, ans, x, dtype):
    from .creation import zeros_like
    if dtype.kind not in "fc":          # an integer or bool result is piecewise constant
        return zeros_like(x)
    if g.dtype.kind == "c" and x.dtype.kind != "c":   # a real x gets re v̄ (PyTorch's)
        from .complex import real
        g = real(g)
    return astype(g, x.dtype)


def _astype_jvp(t, ans, x, dtype):
    from .creation import zeros_like
    if dtype.kind not in "fc":          # not the tangent truncated: it is 0
        return zeros_like(ans)
    if t.dtype.kind == "c" and dtype.kind != "c":   # to a real dtype: re ẋ
        from .complex import real
        t = real(t)
    return astype(t, dtype)


_astype = Op("astype", lambda xp, x, dtype: xp.asarray(x).astype(dtype),
             lambda x, dtype: (x.shape, dtype),
             vjp=(_astype_vjp,), jvp=(_astype_jvp,),
             doc="x converted to dtype (a copy).  x̄ = Ḡ converted back to x's dtype; "
                 "integer and bool results have no derivative.")


def astype(x, dtype):
    """x converted to ``dtype`` (numpy's astype: floats to ints truncate toward 0).
    x̄ = v̄ converted back to x's dtype; an integer or bool result has no derivative."""
    dtype = _dtype(dtype)
    if not isinstance(x, Node):
        # a number or an array is converted here: as a weak Python-scalar constant it
        # would fold back into a Python number and lose the dtype asked for
        from flowgrad.leaves import constant
        return constant(np.asarray(x).astype(dtype))
    if x.dtype == dtype:
        return x
    if x.op is None and x.weak:
        # so is a weak constant node (a vjp's cotangent 3.0 or 1j folded through the
        # rules): apply would fold it and hand back a weak float64/complex128 again
        from flowgrad.leaves import constant_in
        return constant_in(x.graph, np.asarray(x.value).astype(dtype))
    return apply(_astype, x, dtype=dtype)



def half_in_float32(build, x):
    """``build(x)`` for a float16 node ``x``, built on x in float32 and rounded to float16
    once: the node-level twin of ``ops.base.half_widened`` (which kernels use), for the
    composites and decompositions whose float16 forms follow their kernels (var, std,
    softmax, prod's gradient tree, mse's and l2's decompositions)."""
    return astype(build(astype(x, np.float32)), np.float16)
