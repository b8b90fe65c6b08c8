"""Activations and clipping: clip, leaky_relu, elu, gelu.

Values at the kinks follow PyTorch, so that models and gradients compare with it:

* ``clip``: x's derivative is 1 on the closed interval lo ≤ x ≤ hi (torch.clamp's
  convention, so at a bound x still gets the whole adjoint) and 0 outside, and at a NaN;
* ``leaky_relu``: slope at 0 (torch's ``x > 0 ? 1 : slope``);
* ``elu``: α eˣ at 0 (torch's ``x ≤ 0`` branch), 1 for x > 0; its second derivative is
  0 at 0 (torch's double backward takes the ``x < 0`` branch there), α eˣ below.

``elu`` is computed with expm1 (no cancellation near 0) and ``gelu`` as x Φ(x) with
Φ from erfc (no cancellation for large negative x, where 1 + erf(x/√2) would be 0).
"""
from __future__ import annotations

import numbers

import numpy as np

from flowgrad.errors import ArgumentError, UsageError
from .base import Op, apply, as_node, at_user_line, broadcast_shapes, float_dtype, result_dtype
from .elementwise import exp, greater, greater_equal, less, less_equal, where
from .special import INV_SQRT_2PI, as_float, normal_cdf, normal_cdf_kernel


def _number(op_name, what, value):
    """A real number attribute (not a bool, not a node: these are constants of the op)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise UsageError(f"{op_name}: {what} must be a real number, got {value!r} "
                         f"({type(value).__name__})" + at_user_line())
    return float(value)


# -- clip ---------------------------------------------------------------------------------

def _clip_infer(x, lo, hi):
    return broadcast_shapes("clip", x, lo, hi), result_dtype(x, lo, hi)


def _clip_dx(g, ans, x, lo, hi):
    # [lo ≤ x ≤ hi] asked as such, so a NaN x (whose value is NaN) gets 0, as torch.clamp
    return where(greater_equal(x, lo), where(less_equal(x, hi), g, 0.0), 0.0)


def _clip_dlo(g, ans, x, lo, hi):
    # lo is the value where x < lo < hi (at lo = hi both bounds are the value: hi takes
    # it, below, so the derivatives still sum to 1)
    return where(less(x, lo), where(less(lo, hi), g, 0.0), 0.0)


def _clip_dhi(g, ans, x, lo, hi):
    # hi is the value where x > hi, and where x < lo once hi ≤ lo (min(max(x, lo), hi))
    return where(greater(x, hi), g, where(less(x, lo), where(less(lo, hi), 0.0, g), 0.0))


def _clip_forward(xp, x, lo, hi):
    # min(max(x, lo), hi) with the bounds first: numpy's maximum and minimum hand back
    # their second argument on a tie, so x itself is kept wherever lo ≤ x ≤ hi (its sign
    # of zero too: clip(0.0, -1, -0.0) is 0.0, as np.clip with number bounds), and a
    # nan anywhere is still nan
    return xp.minimum(hi, xp.maximum(lo, x))


_clip = Op("clip", _clip_forward, _clip_infer,
           vjp=(_clip_dx, _clip_dlo, _clip_dhi), elementwise=True,
           doc="min(max(x, lo), hi).  ∂/∂x = [lo ≤ x ≤ hi] (1 at the bounds, as "
               "torch.clamp), ∂/∂lo = [x < lo < hi], ∂/∂hi = [x > hi or (x < lo and "
               "hi ≤ lo)] (a tie lo = hi goes to hi).")


def clip(x, lo=None, hi=None):
    """x limited to [lo, hi], elementwise: min(max(x, lo), hi), as numpy.clip; ``lo``
    and ``hi`` are numbers or nodes (broadcast), either may be None (no bound).

    Where lo ≤ x ≤ hi the value is x itself, a zero keeping its sign (clip(−0.0, 0.0,
    1.0) is −0.0, as np.clip with number bounds); with lo > hi it is hi; a nan in x or
    a bound gives nan.

    ∂/∂x = 1 where lo ≤ x ≤ hi — at a bound too, as torch.clamp — and 0 outside;
    ∂/∂lo = [x < lo] and ∂/∂hi = [x > hi] (with lo ≥ hi the value is hi everywhere,
    and so is the derivative).
    """
    x = as_node(x)
    if lo is None and hi is None:
        raise ArgumentError("clip needs at least one of lo and hi" + at_user_line())
    if x.dtype.kind in "iu":
        # a Python int bound past x's range binds nothing: numpy.clip leaves it out, where
        # the kernel's maximum(x, −1) of a uint8 x raises numpy's OverflowError
        info = np.iinfo(x.dtype)
        if _python_int(lo) and lo < info.min:
            lo = None
        if _python_int(hi) and hi > info.max:
            hi = None
    if lo is None or hi is None:
        # the missing bound is the end of the result's dtype, not of x's: with lo a
        # uint8 node, an int8 x's result is int16, and x's end 127 cut lo's 255 to 127
        given = [as_node(b, x.graph) for b in (lo, hi) if b is not None]
        dtype = result_dtype(x, *given)
        small, big = _dtype_ends(dtype)
        if dtype != x.dtype:   # typed: a weak −32768 met an int8 x first, and overflowed
            small, big = np.array(small, dtype), np.array(big, dtype)
        lo = small if lo is None else given[0]
        hi = big if hi is None else given[-1]
    return apply(_clip, x, lo, hi)


def _python_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dtype_ends(dtype):
    """The least and greatest values of ``dtype``, as Python scalars (weak, so they
    never promote)."""
    if dtype.kind in "fc":
        return -float("inf"), float("inf")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return False, True


# -- leaky_relu, elu ---------------------------------------------------------------------

def _leaky_rule(g, ans, x, slope):
    return where(greater(x, 0), g, g * slope)


_leaky_relu = Op("leaky_relu", lambda xp, x, slope: xp.where(x > 0, x, x * slope),
                 lambda x, slope: (x.shape, float_dtype(x.dtype)),
                 vjp=(_leaky_rule,), elementwise=True,
                 doc="x for x > 0, slope·x below.  ∂/∂x = [x > 0] + slope·[x ≤ 0] "
                     "(slope at 0, as torch).")
# what the builder refuses, a graph file may not give either (io/opsig.py)
_leaky_relu.check_attrs = lambda x, slope: _number("leaky_relu", "slope", slope)


def leaky_relu(x, slope=0.01):
    """x for x > 0, ``slope``·x otherwise (PyTorch's default slope 0.01).
    ∂/∂x = 1 for x > 0, ``slope`` for x ≤ 0 (at 0 too, as torch)."""
    return apply(_leaky_relu, x, slope=_number("leaky_relu", "slope", slope))


def _elu(xp, x, alpha):
    x = as_float(xp, x)
    # expm1 of min(x, 0): exact near 0 and never overflows on the branch not taken
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0.0)))


def _elu_rule(g, ans, x, alpha):
    # α eˣ on x ≤ 0; exp only sees x < 0 (x itself) or 0, so no inf meets the adjoint on
    # the other side. exp(0) is the same α at x = 0 as exp(x), but the constant has no
    # derivative: the second derivative at 0 (and −0.0) is 0, as torch's (its elu double
    # backward takes the x < 0 branch), where exp(x) there gave α
    neg = less(x, 0)
    return where(greater(x, 0), g, g * (alpha * exp(where(neg, x, 0.0))))


_elu_op = Op("elu", _elu, lambda x, alpha: (x.shape, float_dtype(x.dtype)),
             vjp=(_elu_rule,), elementwise=True,
             doc="x for x > 0, α(eˣ − 1) below.  ∂/∂x = [x > 0] + α eˣ [x ≤ 0] "
                 "(α at 0, as torch; the second derivative is 0 at 0, as torch's).")
# what the builder refuses, a graph file may not give either (io/opsig.py)
_elu_op.check_attrs = lambda x, alpha: _number("elu", "alpha", alpha)


def elu(x, alpha=1.0):
    """x for x > 0, α(eˣ − 1) otherwise (computed with expm1).
    ∂/∂x = 1 for x > 0, α eˣ for x ≤ 0 (α at 0, as torch); ∂²/∂x² = α eˣ for x < 0
    and 0 from 0 on (torch's at 0)."""
    return apply(_elu_op, x, alpha=_number("elu", "alpha", alpha))


# -- gelu ---------------------------------------------------------------------------------

def _gelu(xp, x):
    x = as_float(xp, x)
    return x * normal_cdf_kernel(xp, x)


def _gelu_rule(g, ans, x):
    return g * (normal_cdf(x) + x * (INV_SQRT_2PI * exp(-0.5 * (x * x))))


gelu = Op("gelu", _gelu, lambda x: (x.shape, float_dtype(x.dtype)),
          vjp=(_gelu_rule,), elementwise=True,
          doc="x Φ(x), Φ the standard normal CDF (the exact form, torch's default).  "
              "∂/∂x = Φ(x) + x φ(x), φ(x) = e^(−x²/2)/√(2π).")
