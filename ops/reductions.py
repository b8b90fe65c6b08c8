"""Reductions over ``axis`` (None, an int or a tuple), ``keepdims``: sum, mean, max,
min, logsumexp; and softmax / log_softmax, which are composites of logsumexp.

``max`` splits its derivative equally among tied entries (the same policy as
``maximum``). ``logsumexp`` is a primitive because its stable form (shift by the
max) must be written once; its derivative is the softmax, exp(x − ans), which
reuses the output and so is finite for any finite x.
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import ArgumentError
from flowgrad.engine.lazy_errors import lazy_backend
from .base import (NONDIFF, Op, apply, as_node, at_user_line, float_dtype, keepdims_flag,
                   normalize_axis, shape_error, sum_dtype, summed)
from .broadcast import broadcast_to_like, shape_source
from .elementwise import abs as abs_, exp, less, where
from .gradient import stop_gradient
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


def sum_infer(x, axis, keepdims):
    # numpy's accumulator: a uint8 sum is uint64, not int64 (every backend runs numpy's)
    return reduced_shape(x.shape, axis, keepdims), sum_dtype(x.dtype)


_sum = Op("sum", summed,
          sum_infer,
          vjp=(lambda g, ans, x, axis, keepdims: unreduce(g, x, axis, keepdims),),
          multilinear=True, doc="Σ over axis.  ∂/∂x = 1 (the adjoint is spread back).")


def sum(x, axis=None, keepdims=False):
    """Sum of x over ``axis`` (all axes when None).  ∂/∂x = 1: x̄ is v̄ spread back over
    the summed axes."""
    x = as_node(x)
    return apply(_sum, x, axis=normalize_axis("sum", x, axis),
                 keepdims=keepdims_flag("sum", keepdims))


def _count(xp, x, axis):
    return xp.asarray(int(np.prod([x.shape[a] for a in axis])), dtype=x.dtype)


reduced_size = Op("reduced_size", _count, lambda x, axis: ((), float_dtype(x.dtype)),
                  vjp=(NONDIFF,), jvp=(NONDIFF,),
                  doc="How many entries a reduction over axis averages (known at run time).")


def count_node(x, axes):
    """N, the entries of x over ``axes``: an int, or (run-time lengths) a node of x's
    float dtype."""
    dims = [x.shape[a] for a in axes]
    if None in dims:   # the count's dtype is x's float dtype: a source must agree
        return apply(reduced_size, shape_source(x, float_dtype(x.dtype)), axis=axes)
    return int(np.prod(dims))


_HALF = np.dtype(np.float16)


def wide_count(x, axes):
    """count_node, a float16 x's counted in float32 (N past 65504 is inf in float16): a
    run-time N then reads the shape of x cast to float32 (its one cost: float16 with
    run-time lengths only)."""
    if x.dtype == _HALF and None in [x.shape[a] for a in axes]:
        from .tensor import astype
        return count_node(astype(x, np.float32), axes)
    return count_node(x, axes)


def divided_by_count(g, x, axes):
    """g / N, N the entries of x over ``axes``. A float16 g is divided in float32 and
    rounded back, as torch divides half values: the quotient (a mean's gradient) was 0
    past 65504 entries."""
    if g.dtype != _HALF:
        return g / count_node(x, axes)
    from .tensor import astype
    return astype(astype(g, np.float32) / wide_count(x, axes), _HALF)


def _mean_vjp(g, ans, x, axis, keepdims):
    return divided_by_count(unreduce(g, x, axis, keepdims), x, axis)


def mean_of(xp, x, axis, keepdims):
    """``xp.mean(x, axis, keepdims)``; on a lazy backend, the mean over no entries is
    numpy's 0/0: dask divides under ``errstate(invalid="ignore")``, so a NaN came back
    silently where numpy, under the caller's ``np.errstate(invalid="raise")``, raises
    FloatingPointError. Here that division is numpy's own, now (the step's RunError)."""
    axes = range(x.ndim) if axis is None else axis
    if lazy_backend(xp) is not None and any(x.shape[a] == 0 for a in axes):
        shape = reduced_shape(x.shape, tuple(axes), keepdims)
        if int(np.prod(shape)):                    # numpy divides only a non-empty sum
            zero = np.zeros(shape, float_dtype(x.dtype))[()]  # 0-d: numpy's scalar divide
            return xp.asarray(np.asarray(zero / zero.dtype.type(0)))
    if x.dtype == np.float16 and lazy_backend(xp) is not None:
        # numpy sums float16 in float32; dask's float16 sum and count overflow past
        # 65504 entries (inf / inf: NaN where numpy's mean is right)
        return xp.mean(x, axis=axis, keepdims=keepdims, dtype=np.float32).astype(x.dtype)
    return xp.mean(x, axis=axis, keepdims=keepdims)


_mean = Op("mean", mean_of,
           lambda x, axis, keepdims: (reduced_shape(x.shape, axis, keepdims),
                                      float_dtype(x.dtype)),
           vjp=(_mean_vjp,), multilinear=True,
           doc="Mean over axis.  ∂/∂x = 1/N (the adjoint is spread back and divided).")


def mean(x, axis=None, keepdims=False):
    """Mean of x over ``axis`` (all axes when None).  ∂/∂x = 1/N: x̄ is v̄ spread back
    over the averaged axes and divided by their size N."""
    x = as_node(x)
    return apply(_mean, x, axis=normalize_axis("mean", x, axis),
                 keepdims=keepdims_flag("mean", keepdims))


def keep_dims(r, axes, keepdims):
    """A reduction's result ``r`` with its reduced axes back as length 1 (no broadcast)."""
    return r if keepdims or not axes else expand_dims(r, axes)


# -- max / min -------------------------------------------------------------------------

_NO_IDENTITY = "zero-size array to reduction operation maximum which has no identity"


def max_of(xp, x, axis=None, keepdims=False):
    """``xp.max(x, axis, keepdims)``, with numpy's answer where x has no entries on a
    lazy backend. dask's max of an empty array gets it backwards: a reduced axis of
    length 0 gives an empty result (of a shape other than the one it declares) instead
    of numpy's ValueError, and an empty array reduced along a non-empty axis fails
    instead of giving the empty result. Here the first raises numpy's ValueError now
    (the step's RunError, as on numpy) and the second is built empty."""
    if 0 in x.shape and lazy_backend(xp) is not None:
        axes = range(x.ndim) if axis is None else axis if isinstance(axis, tuple) else (axis,)
        axes = tuple(a % x.ndim for a in axes)
        if any(x.shape[a] == 0 for a in axes):
            raise ValueError(_NO_IDENTITY)
        return xp.zeros(reduced_shape(x.shape, axes, keepdims), dtype=x.dtype)
    return xp.max(x, axis=axis, keepdims=keepdims)


def _max_weights(xp, x, ans, axis, keepdims):
    # 1/k on each of the k entries that attain the max, 0 elsewhere
    top = ans if keepdims else xp.expand_dims(ans, axis)
    hit = (x == top).astype(x.dtype)
    return hit / summed(xp, hit, axis, True)


max_weights = Op("max_weights", _max_weights,
                 lambda x, ans, axis, keepdims: (x.shape, x.dtype),
                 vjp=(NONDIFF, NONDIFF), jvp=(NONDIFF, NONDIFF),
                 doc="The weights of max's derivative: 1/k on each of k tied maxima, 0 elsewhere.")


def _max_vjp(g, ans, x, axis, keepdims):
    return unreduce(g, x, axis, keepdims) * apply(max_weights, x, ans, axis=axis,
                                                  keepdims=keepdims)


def _max_jvp(t, ans, x, axis, keepdims):
    w = apply(max_weights, x, ans, axis=axis, keepdims=keepdims)
    return sum(t * w, axis, keepdims)


def _max_infer(x, axis, keepdims):
    if any(x.shape[a] == 0 for a in axis):
        raise shape_error("max", (x,), "zero-size axis: the max of no entries is undefined")
    return reduced_shape(x.shape, axis, keepdims), x.dtype


_max = Op("max", max_of,
          _max_infer, vjp=(_max_vjp,), jvp=(_max_jvp,),
          doc="Max over axis.  ∂/∂x = the indicator of the argmax; k tied maxima get 1/k each.")


def max(x, axis=None, keepdims=False):
    """Max of x over ``axis`` (all axes when None). Ties share the derivative equally."""
    x = as_node(x)
    return apply(_max, x, axis=normalize_axis("max", x, axis),
                 keepdims=keepdims_flag("max", keepdims))


def min(x, axis=None, keepdims=False):
    """Min of x over ``axis``: −max(−x), through an order-reversing map that is exact
    in x's dtype. Ties share the derivative equally."""
    x = as_node(x)
    if x.dtype == np.bool_:   # bools have no negative: all(x) = not any(not x)
        from .elementwise import equal
        return equal(max(equal(x, False), axis, keepdims), False)
    if x.dtype.kind in "iu":
        # −x overflows at an int's lowest value (−(−128) is −128 in int8) and folds
        # every unsigned value but 0 to another: c − x with c = −1 (signed: ~x) or
        # the dtype's max (unsigned) reverses the order and is exact for every value
        c = -1 if x.dtype.kind == "i" else int(np.iinfo(x.dtype).max)
        return c - max(c - x, axis, keepdims)
    return -max(-x, axis, keepdims)


# -- logsumexp, softmax ---------------------------------------------------------------

def _logsumexp(xp, x, axis, keepdims):
    # shift by the max so exp never overflows; a max of ±inf is replaced by 0 so that
    # all −inf entries give −inf (log 0), not nan from −inf − (−inf)
    m = max_of(xp, x, axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(summed(xp, xp.exp(x - m), axis, True)) + m   # (float16: in float32)
    return out if keepdims else xp.squeeze(out, axis=axis)


def _lse_vjp(g, ans, x, axis, keepdims):
    return unreduce(g, x, axis, keepdims) * exp(x - keep_dims(ans, axis, keepdims))


def _lse_jvp(t, ans, x, axis, keepdims):
    return sum(t * exp(x - keep_dims(ans, axis, keepdims)), axis, keepdims)


def _lse_infer(x, axis, keepdims):
    if any(x.shape[a] == 0 for a in axis):   # the kernel's shift, a max, has no entries
        raise shape_error("logsumexp", (x,), "zero-size axis: logsumexp needs entries")
    return reduced_shape(x.shape, axis, keepdims), float_dtype(x.dtype)


_logsumexp_op = Op(
    "logsumexp", _logsumexp, _lse_infer,
    vjp=(_lse_vjp,), jvp=(_lse_jvp,), floating=True,
    doc="log Σ exp x over axis, shifted by the max.  ∂/∂x = softmax(x) = exp(x − ans).")


def logsumexp(x, axis=None, keepdims=False):
    """log Σ exp(x) over ``axis`` (all axes when None), finite for any finite x.
    ∂/∂x = softmax(x) = exp(x − logsumexp x)."""
    x = as_node(x)
    return apply(_logsumexp_op, x, axis=normalize_axis("logsumexp", x, axis),
                 keepdims=keepdims_flag("logsumexp", keepdims))


def log_softmax(x, axis=-1):
    """(x − m) − logsumexp(x − m) over ``axis`` (default the last), m the max along it (0
    where that is ±inf or nan, as scipy): the log of the softmax, stably, as PyTorch and
    scipy.special.log_softmax compute it.  ∂/∂x: x̄ = v̄ − softmax(x) Σ v̄ along ``axis``.

    Unshifted, x − logsumexp(x) subtracted two numbers of x's size: at x = [1e8, 1e8 + 1]
    in float64 it was off by ~4·10⁶ ulp, at [1.7e308, 1.7e308] it gave 0 for −log 2
    (logsumexp's value rounded to x), in float32 at x ~ 10⁴ by ~7000 ulp; x − m is exact
    near the maximum (Sterbenz), and logsumexp(x − m) lies in [0, log n]. m is a
    constant to every derivative (log_softmax does not change under a shift).
    """
    x = as_node(x)
    if x.dtype.kind in "biu":
        # an int or bool x as float64 (then shifted as a float x is): of uint64
        # [2⁶⁴−2, 2⁶⁴−1], each −log 2, the unshifted form gave 0
        x = _as_float64(x)
    if x.dtype.kind == "f":
        m = stop_gradient(max(x, axis, keepdims=True))
        x = x - where(less(abs_(m), np.inf), m, 0.0)   # (scipy's: [inf, 0] → [nan, −inf])
    return minus_logsumexp(x, axis)


def minus_logsumexp(s, axis):
    """s − logsumexp(s) along ``axis``: log_softmax of an ``s`` already shifted by its
    max (softmax's, which keeps nan where the max is ±inf, as scipy's softmax)."""
    return s - logsumexp(s, axis, keepdims=True)


def _as_float64(x):
    from .tensor import astype
    return astype(x, np.float64)


def softmax(x, axis=-1, keepdims=True):
    """exp(x − logsumexp(x)) over ``axis`` (default the last); sums to 1 along it.

    The result always has x's shape; ``keepdims`` is accepted for the API's uniform
    reduction signature and must not be False (nothing is reduced away).

    A composite: its derivative J = diag(s) − s sᵀ comes from exp and logsumexp's rules.
    It is taken of x shifted by its maximum along ``axis``, a constant to every
    derivative (softmax does not change under a shift): x − logsumexp(x) of large x
    subtracts two numbers of their size, which in float32 at |x| ~ 100 costs ~1e-5 of
    relative accuracy (~1e-3 at 10⁴); x − max is exact near the maximum, so the
    entries that matter are accurate to a few ulp, as PyTorch's. A float16 x is taken
    in float32 and the result rounded once, as torch's half softmax: in float16 the
    rounding of logsumexp (spacing 2⁻⁷ at 8) cost exp up to 0.4 %, ~8 ulps.
    """
    if not keepdims:
        raise ArgumentError("softmax keeps every axis: its result has the input's shape"
                            + at_user_line())
    x = as_node(x)
    if x.dtype.kind in "biu":
        # float64 first, then shifted as a float x is: unshifted, the rounding of
        # logsumexp's value cost large ints their small terms (softmax of uint64
        # [2⁶⁴−2, 2⁶⁴−1] was [1, 1], of int32 edges off by 6e−8)
        x = _as_float64(x)
    if x.dtype == np.float16:
        from .tensor import half_in_float32
        return half_in_float32(lambda v: softmax(v, axis), x)
    if x.dtype.kind == "f":
        x = x - stop_gradient(max(x, axis, keepdims=True))
        return exp(minus_logsumexp(x, axis))     # (shifted already: log_softmax's
    return exp(log_softmax(x, axis))             # second shift would be by 0)
