"""Leaner numpy kernels for a few ops whose generic kernel goes through numpy's Python
layers (``np.mean`` → ``_methods._mean``, ``np.broadcast_to`` → stride tricks, …).

On small arrays those layers, not the arithmetic, are the cost of a step (3–5 µs
each in the linear-regression step at n = 10). Each kernel here calls the ufunc
method underneath directly and returns the same values, dtype and shape — the
tests compare generated code with the interpreter bit for bit. Only used by the
generated code on the numpy backend, and only for float results (numpy's integer
sums promote; those keep the generic kernel).
"""
from __future__ import annotations

import numpy as np

_add_reduce = np.add.reduce
_full, _broadcast_to, _asarray = np.full, np.broadcast_to, np.asarray
SMALL = 4096     # below this many entries a broadcast is materialised (cheaper than a view)


def _sum(axis, keepdims):
    def k(x):
        return _add_reduce(x, axis, None, None, keepdims)
    return k


def _mean(axis, keepdims):
    def k(x):
        n = 1
        shape = x.shape
        for a in axis:
            n *= shape[a]
        r = _add_reduce(x, axis, None, None, keepdims)
        return r / n
    return k


def _reduced_size(axis):
    def k(x):
        n = 1
        shape = x.shape
        for a in axis:
            n *= shape[a]
        return _asarray(n, dtype=x.dtype)
    return k


def _broadcast_like():
    def k(x, ref):
        shape = ref.shape
        if getattr(x, "shape", None) == shape:
            return x
        # a small broadcast is cheaper to fill than to build as a strided view
        return _full(shape, x) if ref.size <= SMALL else _broadcast_to(x, shape)
    return k


def _sum_to(shape):
    def k(x):
        lead = x.ndim - len(shape)
        xs = x.shape
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and xs[lead + i] != 1)
        if axes:
            x = _add_reduce(x, axes, None, None, True)
        if lead:
            x = x.reshape(x.shape[lead:])
        return x
    return k


def kernel(name, attrs, dtype):
    """A lean kernel for op ``name`` with ``attrs`` and result ``dtype``, or None."""
    if np.dtype(dtype).kind != "f":
        return None
    if name == "sum":
        return _sum(attrs["axis"], attrs["keepdims"])
    if name == "mean":
        return _mean(attrs["axis"], attrs["keepdims"])
    if name == "reduced_size":
        return _reduced_size(attrs["axis"])
    if name == "broadcast_like":
        return _broadcast_like()
    if name == "sum_to":
        return _sum_to(attrs["shape"])
    return None
