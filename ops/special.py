"""Special functions: erf, tan, and the standard normal CDF Φ that gelu's rule uses.

numpy has no erf, so the kernel is written here in ``xp`` operations only (every
backend runs it), to about 1e-15 relative error in float64:

* |x| < 2: erf x = (2/√π) x e^(−x²) Σₙ (2x²)ⁿ / (1·3·5···(2n+1)), a series of positive
  terms (no cancellation), 30 terms by Horner's rule;
* x ≥ 2: erfc x = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …)))), Laplace's
  continued fraction, 50 levels evaluated bottom-up; erf x = 1 − erfc x.

``erfc`` keeps its relative accuracy in the far tail (Φ(−30) ≈ 5e−198 is not 0, and
e^(−x²) is taken without rounding x² first), which is what makes gelu and Φ stable for
large negative arguments. Measured against scipy: erf within 6e−16 relative; erfc and Φ
within 3e−13 relative (where 1 − erf x cancels, 0 < x < 2: 1e−16 absolute). About 80
array operations: on large numpy/cupy arrays each branch runs on its own entries only,
~4× the time of scipy's erf (an op's kernel may not call scipy). The ONNX exporter writes
the same steps (``SPLIT``, ``SERIES_TERMS``, ``CF_TERMS``), as onnxruntime has no
float64 Erf.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Op, float_dtype, shape_error
from .complex import conj_of

SPLIT = 2.0          # series below, continued fraction at and above
SERIES_TERMS = 30    # 6.7e-16 relative error at |x| < 2 (checked against scipy)
CF_TERMS = 50        # 1.1e-15 relative error at x ≥ 2
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
INV_SQRT2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def as_float(xp, x):
    """x as an array of a float dtype (ints and bools become float64, as numpy's ufuncs)."""
    x = xp.asarray(x)
    return x if x.dtype.kind in "fc" else x.astype(np.float64)


def erf_series(xp, x):
    """erf x for |x| < SPLIT (any x gives a finite number; only those are used)."""
    z = 2.0 * x * x
    h = z * (1.0 / (2 * SERIES_TERMS + 1))
    h += 1.0
    for k in range(SERIES_TERMS - 1, 0, -1):
        # in place (h is this function's own array; a namespace without in-place
        # operators rebinds), and by a reciprocal: a product is far cheaper than a quotient
        h *= z
        h *= 1.0 / (2 * k + 1)
        h += 1.0
    return TWO_OVER_SQRT_PI * x * xp.exp(-x * x) * h


def exp_neg_sq(xp, a, scale=1.0):
    """e^(−scale·a²) for a ≥ 0 and scale 1 or ½, without the rounding of a² in the
    exponent (at a = 30 it costs 1e−13 relative): a = h + (a − h) with h a multiple of
    1/16, so h² is exact and a² = h² + (a − h)(a + h), the second term small."""
    a = xp.minimum(a, 40.0)   # e^(−800) is 0 already; inf − inf would be nan
    h = xp.floor(a * 16.0) / 16.0
    return xp.exp(-scale * (h * h)) * xp.exp(-scale * ((a - h) * (a + h)))


def erfc_fraction(xp, x, expo=None):
    """erfc x for x ≥ SPLIT (x = +inf gives 0, nan gives nan); ``expo`` is e^(−x²) when
    the caller has it more accurately than from x (Φ, from x√2 before rounding)."""
    f = (CF_TERMS / 2) / x
    f += x
    for k in range(CF_TERMS - 1, 0, -1):
        f = (k / 2) / f
        f += x
    return (exp_neg_sq(xp, x) if expo is None else expo) * INV_SQRT_PI / f


def _split(xp, x):
    """(|x| < SPLIT, x clamped into the series' range, |x| clamped into the fraction's)."""
    a = xp.abs(x)
    small = a < SPLIT
    # each branch sees only arguments in its own range (no overflow, no warnings); nan
    # goes to the fraction's branch, which returns it
    return small, xp.where(small, x, 0.0), xp.where(small, SPLIT, a)


_MASKABLE = ("numpy", "cupy")   # namespaces whose arrays take a boolean mask as an index
MASK_MIN = 4096                 # below this, one where over both branches is cheaper


def _piecewise(xp, small, low, high):
    """where(small, low, high) for ``low`` and ``high`` given as (function, *arrays).

    Where xp indexes by masks (numpy, cupy) and the array is large, each branch runs on
    its own entries only: the fraction's 50 divisions then cost nothing for the usual
    |x| < 2. Entry by entry the operations are the same, so are the values; other
    namespaces (dask, the scalar path's floats) evaluate both branches everywhere."""
    (lo_fn, *lo_args), (hi_fn, *hi_args) = low, high
    if getattr(xp, "__name__", "") in _MASKABLE and getattr(small, "size", 0) >= MASK_MIN:
        out = xp.empty(small.shape, dtype=lo_args[0].dtype)
        big = ~small
        out[small] = lo_fn(*[a[small] for a in lo_args])
        out[big] = hi_fn(*[a[big] for a in hi_args])
        return out
    return xp.where(small, lo_fn(*lo_args), hi_fn(*hi_args))


def erf_of(xp, x):
    """erf of a float x; ``xp`` may be any namespace with abs, exp, floor, minimum and
    where (the scalar path runs these same steps on Python floats)."""
    def tail(xl, x):
        t = 1.0 - erfc_fraction(xp, xl)
        return xp.where(x < 0, -t, t)
    small, xs, xl = _split(xp, x)
    return _piecewise(xp, small, (lambda xs: erf_series(xp, xs), xs), (tail, xl, x))


def erfc_of(xp, x):
    """1 − erf x, with full relative accuracy for large positive x."""
    def tail(xl, x):
        frac = erfc_fraction(xp, xl)
        return xp.where(x < 0, 2.0 - frac, frac)
    small, xs, xl = _split(xp, x)
    return _piecewise(xp, small, (lambda xs: 1.0 - erf_series(xp, xs), xs), (tail, xl, x))


def normal_cdf_of(xp, x):
    """Φ(x) = ½ erfc(−x/√2); in the fraction's range e^(−x²/2) comes from x itself."""
    def tail(zl, xl, z):
        frac = erfc_fraction(xp, zl, exp_neg_sq(xp, xl, 0.5))
        return 0.5 * xp.where(z < 0, 2.0 - frac, frac)
    z = -x * INV_SQRT2
    small, zs, zl = _split(xp, z)
    xl = xp.where(small, SPLIT / INV_SQRT2, xp.abs(x))
    return _piecewise(xp, small, (lambda zs: 0.5 * (1.0 - erf_series(xp, zs)), zs),
                      (tail, zl, xl, z))


def in_float64(xp, fn, x):
    """fn(xp, x) for a float x, computed in float64 when x is narrower and rounded back.

    Why: the series' 1 − erf for Φ (and erfc) cancels for 1 ≲ |x| < 2, leaving the
    working precision's ulp of 1 as an absolute error: in float32 Φ(−2.79) was off by
    1e−4 relative (800 ulps; gelu with it), in float16 by 60%, and erf itself by 3.6
    ulps; torch's are within an ulp. In float64 the error is ~1e−16 absolute, far below
    a float32 ulp, so one rounding back gives the narrow type's value to ~1 ulp."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and dtype.kind == "f" and dtype.itemsize < 8:
        return fn(xp, x.astype(np.float64)).astype(dtype)
    return fn(xp, x)


def erf_kernel(xp, x):
    return in_float64(xp, erf_of, as_float(xp, x))


def erfc_kernel(xp, x):
    return in_float64(xp, erfc_of, as_float(xp, x))


def normal_cdf_kernel(xp, x):
    return in_float64(xp, normal_cdf_of, as_float(xp, x))


def _float_infer(x):
    return x.shape, float_dtype(x.dtype)


def _real_infer(name):
    """_float_infer, refusing complex x: the kernel's branch test |x| < 2 and its
    continued fraction (valid for Re x > 0, chosen by ``x < 0``) are the real function's,
    so a complex x with |x| ≥ 2 got a silently wrong value (erf(0.1 + 3j) off by 100%);
    torch's erf refuses complex too."""
    def infer(x):
        if np.dtype(x.dtype).kind == "c":
            raise shape_error(name, (x,), "complex values are not supported (the kernel "
                              "is the real function's)")
        return _float_infer(x)
    return infer


def _erf_rule(g, ans, x):
    from .elementwise import exp
    return g * (TWO_OVER_SQRT_PI * exp(-(x * x)))


erf = Op("erf", erf_kernel, _real_infer("erf"), vjp=(_erf_rule,), elementwise=True,
         doc="The error function (2/√π) ∫₀ˣ e^(−t²) dt, accurate to ~1e−15 for any real x "
             "(complex x is refused).  "
             "∂/∂x = (2/√π) e^(−x²).")


def _normal_pdf(x):
    """φ(x) = e^(−x²/2)/√(2π), as nodes."""
    from .elementwise import exp
    return INV_SQRT_2PI * exp(-0.5 * (x * x))


normal_cdf = Op("normal_cdf", normal_cdf_kernel, _real_infer("normal_cdf"),
                vjp=(lambda g, ans, x: g * _normal_pdf(x),), elementwise=True,
                doc="Φ(x) = ½ erfc(−x/√2), the standard normal CDF, with full relative "
                    "accuracy in the far left tail (gelu's rules use it).  ∂/∂x = φ(x) = "
                    "e^(−x²/2)/√(2π).")


tan = Op("tan", lambda xp, x: xp.tan(x), _float_infer,
         vjp=(lambda g, ans, x: g * conj_of(1 + ans * ans),),
         jvp=(lambda t, ans, x: t * (1 + ans * ans),), elementwise=True, floating=True,
         doc="tan x.  ∂/∂x = 1 + tan² x = 1 + ans².")
