"""fg.nn.init: initial values for variables, as numpy arrays.

Every initialiser is ``f(shape, …, seed=None, dtype="float64")`` and returns a fresh
array; ``seed`` is an int or a ``numpy.random.Generator`` (pass one Generator to
several calls to draw them in sequence from one stream), ``None`` for fresh entropy.
The same seed always gives the same array.

For a weight matrix of shape ``(fan_in, fan_out)`` (a Dense layer's ``W``):

=================  =========================================  ============================
glorot_uniform     U(−a, a),  a = √(6 / (fan_in + fan_out))   Var = 2 / (fan_in + fan_out)
glorot_normal      N(0, σ²),  σ = √(2 / (fan_in + fan_out))   (Glorot & Bengio, 2010)
he_uniform         U(−a, a),  a = √(6 / fan_in)               Var = 2 / fan_in
he_normal          N(0, σ²),  σ = √(2 / fan_in)               (He et al., 2015; for ReLU)
=================  =========================================  ============================

``xavier_*`` are the same as ``glorot_*``. A shape of more than two axes is a
convolution kernel laid out (…receptive field…, in, out), as Conv2D draws it
(kh, kw, C, filters): every entry of the receptive field counts on both sides,
fan_in = in · kh·kw and fan_out = out · kh·kw (as ``torch.nn.init``, Keras and
``jax.nn.initializers``); a vector has fan_in = fan_out = its length.
:func:`get` turns the names Dense takes (``"glorot"`` =
glorot_uniform, ``"he"`` = he_normal, as Keras and the ReLU literature use them)
into functions.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import ArgumentError, UsageError
from ..ops.base import at_user_line
from ..dtypes import as_dtype

__all__ = ["zeros", "ones", "constant", "normal", "uniform", "glorot_uniform",
           "glorot_normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
           "fans", "get", "rng"]


def rng(seed=None) -> np.random.Generator:
    """A Generator from an int seed, a Generator (returned as is) or None (fresh)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
                        and seed >= 0):
        return np.random.default_rng(seed)
    raise UsageError(f"a seed is a non-negative int, a numpy.random.Generator or None, "
                     f"got {seed!r}" + at_user_line())


def _shape(shape) -> tuple:
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    if any(not isinstance(s, numbers.Integral) or s < 0 for s in shape):
        raise ArgumentError(f"an initial value needs a static shape of non-negative ints, "
                            f"got {shape}" + at_user_line())
    return tuple(int(s) for s in shape)


def _float(dtype):
    dtype = as_dtype(dtype, "initial values")
    if dtype.kind != "f":
        raise UsageError(f"random initial values are floats, not {dtype}" + at_user_line())
    return dtype


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape``: a matrix (in, out); a kernel
    (…receptive field…, in, out), whose receptive field multiplies both."""
    shape = _shape(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    field = math.prod(shape[:-2])
    return shape[-2] * field, shape[-1] * field


def zeros(shape, seed=None, dtype="float64"):
    """All zeros (``seed`` is accepted and ignored, so every initialiser is called alike)."""
    return np.zeros(_shape(shape), dtype=dtype)


def ones(shape, seed=None, dtype="float64"):
    """All ones."""
    return np.ones(_shape(shape), dtype=dtype)


def constant(shape, value=0.0, seed=None, dtype="float64"):
    """Every entry ``value``."""
    return np.full(_shape(shape), value, dtype=dtype)


def normal(shape, mean=0.0, std=1.0, seed=None, dtype="float64"):
    """N(mean, std²) draws."""
    if not std >= 0:
        raise ArgumentError(f"std must be ≥ 0, got {std}" + at_user_line())
    return (mean + std * rng(seed).standard_normal(_shape(shape))).astype(_float(dtype))


def uniform(shape, low=0.0, high=1.0, seed=None, dtype="float64"):
    """U[low, high) draws."""
    if not low <= high:
        raise ArgumentError(f"need low ≤ high, got {low} and {high}" + at_user_line())
    return rng(seed).uniform(low, high, _shape(shape)).astype(_float(dtype))


def glorot_uniform(shape, seed=None, dtype="float64"):
    """U(−a, a) with a = √(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)."""
    fan_in, fan_out = fans(shape)
    a = math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return uniform(shape, -a, a, seed, dtype)


def glorot_normal(shape, seed=None, dtype="float64"):
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return normal(shape, 0.0, math.sqrt(2.0 / max(fan_in + fan_out, 1)), seed, dtype)


def he_uniform(shape, seed=None, dtype="float64"):
    """U(−a, a) with a = √(6 / fan_in): variance 2 / fan_in."""
    fan_in, _ = fans(shape)
    a = math.sqrt(6.0 / max(fan_in, 1))
    return uniform(shape, -a, a, seed, dtype)


def he_normal(shape, seed=None, dtype="float64"):
    """N(0, 2 / fan_in): keeps the variance of ReLU activations from layer to layer."""
    fan_in, _ = fans(shape)
    return normal(shape, 0.0, math.sqrt(2.0 / max(fan_in, 1)), seed, dtype)


xavier_uniform, xavier_normal = glorot_uniform, glorot_normal

_NAMES = {
    "zeros": zeros, "ones": ones, "normal": normal, "uniform": uniform,
    "glorot": glorot_uniform, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier": glorot_uniform, "xavier_uniform": glorot_uniform, "xavier_normal": glorot_normal,
    "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
}


def get(init):
    """An initialiser from its name or a callable ``f(shape, seed=, dtype=)``."""
    if callable(init):
        return init
    if isinstance(init, str) and init in _NAMES:
        return _NAMES[init]
    raise ArgumentError(f"unknown initialiser {init!r}; choose one of {sorted(_NAMES)} "
                        f"or pass a function f(shape, seed=None, dtype='float64')"
                        + at_user_line())
