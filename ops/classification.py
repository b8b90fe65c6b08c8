"""Classification helpers as ops: ``argmax`` (class indices) and ``one_hot`` (index → row).

Both outputs are piecewise constant in their inputs, so every derivative is zero by
definition (NONDIFF, in both modes): a loss reached only through them has no
gradient, which ``fg.grad`` reports as zeros rather than inventing one. ``argmax``
returns int64 indices; ``one_hot`` a float (or any requested) dtype.
"""
from __future__ import annotations

import numpy as np

from flowgrad.dtypes import as_dtype
from flowgrad.errors import FeedError
from flowgrad.engine.lazy_errors import checked_whole, is_lazy, lazy_backend

from .base import NONDIFF, Op, apply, as_node, normalize_axis, shape_error


# -- argmax ---------------------------------------------------------------------------------

def _argmax(xp, x, axis, keepdims):
    out = xp.argmax(x, axis=axis)
    if keepdims:
        out = xp.expand_dims(out, axis)
    return out.astype(np.int64) if out.dtype != np.int64 else out


def _argmax_infer(x, axis, keepdims):
    shape = list(x.shape)
    if keepdims:
        shape[axis] = 1
    else:
        del shape[axis]
    return tuple(shape), np.dtype(np.int64)


_argmax_op = Op("argmax", _argmax, _argmax_infer, vjp=(NONDIFF,), jvp=(NONDIFF,),
                doc="Index of the largest entry along ``axis`` (the first one on a tie). "
                    "Integer-valued: zero derivative.")


def argmax(x, axis=-1, keepdims=False):
    """The index (int64) of the largest entry along ``axis`` (default the last), the
    first one on ties, as numpy. ``keepdims`` keeps that axis with length 1."""
    x = as_node(x)
    if not x.shape:
        raise shape_error("argmax", (x,), "a 0-d input has no axis to search")
    if x.dtype.kind not in "biuf":
        raise shape_error("argmax", (x,), f"cannot order values of dtype {x.dtype}")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise shape_error("argmax", (x,), f"axis must be one int, got {axis!r}")
    (ax,) = normalize_axis("argmax", x, axis)
    if x.shape[ax] == 0:
        raise shape_error("argmax", (x,), f"axis {axis} has length 0")
    return apply(_argmax_op, x, axis=ax, keepdims=bool(keepdims))


# -- one_hot ---------------------------------------------------------------------------------

def _check_labels(labels, depth):
    """Labels outside [0, depth) would give an all-zero row: refuse them instead."""
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= depth:
            raise FeedError(f"one_hot: class labels must lie in [0, {depth}), "
                            f"got values from {lo} to {hi}")
    return labels


def _one_hot(xp, labels, depth, axis, dtype):
    if is_lazy(xp, labels):
        # dask: check when computed, not by computing now; on the labels' min and max
        # (dask reductions), so that the refusal gives numpy's range of all the labels
        whole = labels.size and not any(n != n for n in labels.shape)
        ends = xp.stack([labels.min(), labels.max()]) if whole else None
        labels = checked_whole(lazy_backend(xp), labels, _check_labels, depth, on=ends)
    else:
        _check_labels(labels, depth)
    nd = labels.ndim + 1
    classes = xp.reshape(xp.arange(depth), (depth,) + (1,) * (nd - axis - 1))
    return (xp.expand_dims(labels, axis) == classes).astype(dtype)


def _one_hot_infer(labels, depth, axis, dtype):
    shape = list(labels.shape)
    shape.insert(axis, depth)
    return tuple(shape), dtype


_one_hot_op = Op("one_hot", _one_hot, _one_hot_infer, vjp=(NONDIFF,), jvp=(NONDIFF,),
                 doc="Integer labels as indicator rows: out[…, k, …] = [labels = k]. "
                     "Integer input: zero derivative.")


def one_hot(labels, depth, axis=-1, dtype="float64"):
    """Integer class ``labels`` as one-hot vectors of length ``depth`` along ``axis``
    (default: a new last axis). A label outside [0, depth) is an error at run time."""
    labels = as_node(labels)
    if labels.dtype.kind not in "iu":
        raise shape_error("one_hot", (labels,),
                          f"labels must be integers (class indices), not {labels.dtype}")
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < 1:
        raise shape_error("one_hot", (labels,), f"depth must be a positive int, got {depth!r}")
    nd = labels.ndim + 1
    if not isinstance(axis, (int, np.integer)) or not -nd <= axis < nd:
        raise shape_error("one_hot", (labels,), f"axis {axis!r} is out of range for the "
                                                f"{nd}-d result")
    dtype = as_dtype(dtype, "one_hot")
    if dtype.kind not in "biuf":
        raise shape_error("one_hot", (labels,), f"cannot build one-hot rows of dtype {dtype}")
    return apply(_one_hot_op, labels, depth=int(depth), axis=int(axis) % nd, dtype=dtype)
