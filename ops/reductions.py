"""Reductions: sum and mean over ``axis`` (None, an int or a tuple), ``keepdims``."""
from __future__ import annotations

import numpy as np

from .base import NONDIFF, Op, apply, as_node, float_dtype, normalize_axis
from .broadcast import broadcast_to_like
from .shape import expand_dims


def reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def unreduce(g, x, axes, keepdims):
    """The adjoint ``g`` of a reduction of ``x`` spread back over ``x``'s shape."""
    if not keepdims and axes:
        g = expand_dims(g, axes)
    return broadcast_to_like(g, x)


def _sum_infer(x, axis, keepdims):
    dtype = x.dtype if x.dtype.kind in "fc" else np.result_type(x.dtype, np.int_)
    return reduced_shape(x.shape, axis, keepdims), dtype


_sum = Op("sum", lambda xp, x, axis, keepdims: xp.sum(x, axis=axis, keepdims=keepdims),
          _sum_infer,
          vjp=(lambda g, ans, x, axis, keepdims: unreduce(g, x, axis, keepdims),),
          multilinear=True, doc="Σ over axis.  ∂/∂x = 1 (the adjoint is spread back).")


def sum(x, axis=None, keepdims=False):
    """Sum of x over ``axis`` (all axes when None)."""
    x = as_node(x)
    return apply(_sum, x, axis=normalize_axis("sum", x, axis), keepdims=bool(keepdims))


def _count(xp, x, axis):
    return xp.asarray(int(np.prod([x.shape[a] for a in axis])), dtype=x.dtype)


reduced_size = Op("reduced_size", _count, lambda x, axis: ((), float_dtype(x.dtype)),
                  vjp=(NONDIFF,), jvp=(NONDIFF,),
                  doc="How many entries a reduction over axis averages (known at run time).")


def _count_node(x, axes):
    dims = [x.shape[a] for a in axes]
    if None in dims:
        return apply(reduced_size, x, axis=axes)
    return int(np.prod(dims))


def _mean_vjp(g, ans, x, axis, keepdims):
    return unreduce(g, x, axis, keepdims) / _count_node(x, axis)


_mean = Op("mean", lambda xp, x, axis, keepdims: xp.mean(x, axis=axis, keepdims=keepdims),
           lambda x, axis, keepdims: (reduced_shape(x.shape, axis, keepdims),
                                      float_dtype(x.dtype)),
           vjp=(_mean_vjp,), multilinear=True,
           doc="Mean over axis.  ∂/∂x = 1/N (the adjoint is spread back and divided).")


def mean(x, axis=None, keepdims=False):
    """Mean of x over ``axis`` (all axes when None)."""
    x = as_node(x)
    return apply(_mean, x, axis=normalize_axis("mean", x, axis), keepdims=bool(keepdims))
