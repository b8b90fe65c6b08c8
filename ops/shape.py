"""Shape ops: reshape, transpose, broadcast_to, expand_dims, squeeze.

All are linear, so each forward rule is the op itself applied to the tangent,
and each reverse rule is the inverse re-arrangement of the adjoint.
"""
from __future__ import annotations

import numpy as np

from .base import NONDIFF, Op, apply, as_node, fmt_shape, normalize_axis, shape_error


# -- reshape ----------------------------------------------------------------------

def _reshape_infer(x, shape):
    known = [s for s in x.shape if s is not None]
    size = int(np.prod(known)) if None not in x.shape else None
    if shape.count(-1) > 1:
        raise shape_error("reshape", (x,), f"at most one -1 in the new shape {shape}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if size is None:
            out = tuple(None if s == -1 else s for s in shape)
        elif rest == 0 or size % rest:
            raise shape_error("reshape", (x,), f"cannot reshape to {shape}")
        else:
            out = tuple(size // rest if s == -1 else s for s in shape)
    else:
        if size is not None and size != int(np.prod(shape)):
            raise shape_error("reshape", (x,), f"cannot reshape to {fmt_shape(shape)}")
        out = shape
    return out, x.dtype


def _reshape_vjp(g, ans, x, shape):
    if x.shape.count(None) <= 1:
        return reshape(g, tuple(-1 if s is None else s for s in x.shape))
    return apply(reshape_like, g, x)


_reshape = Op("reshape", lambda xp, x, shape: xp.reshape(x, shape), _reshape_infer,
              vjp=(_reshape_vjp,), multilinear=True)


def reshape(x, shape):
    """x with a new shape (numpy's rules, one -1 allowed)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    return apply(_reshape, x, shape=shape)


reshape_like = Op(
    "reshape_like", lambda xp, x, ref: xp.reshape(x, ref.shape),
    lambda x, ref: (ref.shape, x.dtype),
    vjp=(lambda g, ans, x, ref: apply(reshape_like, g, x), NONDIFF),
    jvp=(lambda t, ans, x, ref: apply(reshape_like, t, ref), NONDIFF),
    doc="x reshaped to the run-time shape of ref (for shapes with several None).")


# -- transpose --------------------------------------------------------------------

def _transpose_infer(x, axes):
    if sorted(axes) != list(range(len(x.shape))):
        raise shape_error("transpose", (x,), f"axes {axes} are not a permutation of the "
                          f"{len(x.shape)} axes")
    return tuple(x.shape[a] for a in axes), x.dtype


_transpose = Op("transpose", lambda xp, x, axes: xp.transpose(x, axes), _transpose_infer,
                vjp=(lambda g, ans, x, axes: transpose(g, tuple(np.argsort(axes))),),
                multilinear=True, doc="Permute axes; the adjoint permutes back.")


def transpose(x, axes=None):
    """Permute the axes of x (reverse them when ``axes`` is None), as numpy."""
    x = as_node(x)
    axes = tuple(reversed(range(len(x.shape)))) if axes is None else \
        tuple(int(a) % max(len(x.shape), 1) for a in axes)
    if axes == tuple(range(len(x.shape))):
        return x
    return apply(_transpose, x, axes=axes)


def swap_last_axes(x):
    """x with its last two axes swapped (the matrix transpose of a batch)."""
    n = len(x.shape)
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


# -- broadcast_to -------------------------------------------------------------------

def _broadcast_to_infer(x, shape):
    if len(shape) < len(x.shape) or any(
            s is not None and s not in (1, t) for s, t in zip(x.shape[::-1], shape[::-1])):
        raise shape_error("broadcast_to", (x,), f"cannot broadcast to {fmt_shape(shape)}")
    return shape, x.dtype


def _broadcast_to_vjp(g, ans, x, shape):
    from .broadcast import sum_to_like
    return sum_to_like(g, x)


_broadcast_to = Op("broadcast_to", lambda xp, x, shape: xp.broadcast_to(x, shape),
                   _broadcast_to_infer, vjp=(_broadcast_to_vjp,), multilinear=True,
                   doc="A broadcast view; its adjoint sums back (sum_to).")


def broadcast_to(x, shape):
    """x broadcast to ``shape`` (numpy's rules)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    x = as_node(x)
    if x.shape == shape:
        return x
    return apply(_broadcast_to, x, shape=shape)


# -- expand_dims / squeeze ---------------------------------------------------------

def _expand_infer(x, axis):
    out = list(x.shape)
    for a in axis:
        out.insert(a, 1)
    return tuple(out), x.dtype


_expand_dims = Op("expand_dims", lambda xp, x, axis: xp.expand_dims(x, axis), _expand_infer,
                  vjp=(lambda g, ans, x, axis: squeeze(g, axis),), multilinear=True)


def expand_dims(x, axis):
    """x with new length-1 axes at positions ``axis`` (of the result), as numpy."""
    x = as_node(x)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    ndim = len(x.shape) + len(axes)
    norm = sorted(int(a) % ndim for a in axes if -ndim <= a < ndim)
    if len(norm) != len(axes) or len(set(norm)) != len(norm):
        raise shape_error("expand_dims", (x,), f"bad axis {axis} for a {ndim}-d result")
    return apply(_expand_dims, x, axis=tuple(norm))


def _squeeze_infer(x, axis):
    if any(x.shape[a] not in (1, None) for a in axis):
        raise shape_error("squeeze", (x,), f"axis {axis} does not have length 1")
    return tuple(s for i, s in enumerate(x.shape) if i not in axis), x.dtype


_squeeze = Op("squeeze", lambda xp, x, axis: xp.squeeze(x, axis), _squeeze_infer,
              vjp=(lambda g, ans, x, axis: expand_dims(g, axis),), multilinear=True)


def squeeze(x, axis=None):
    """x without the length-1 axes ``axis`` (all statically known ones when None)."""
    x = as_node(x)
    axes = tuple(i for i, s in enumerate(x.shape) if s == 1) if axis is None else \
        normalize_axis("squeeze", x, axis)
    if not axes:
        return x
    return apply(_squeeze, x, axis=axes)
