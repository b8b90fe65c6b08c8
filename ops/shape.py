"""Shape ops: reshape, transpose, broadcast_to, expand_dims, squeeze, concatenate, stack.

All are linear, so each forward rule is the op itself applied to the tangent,
and each reverse rule is the inverse re-arrangement of the adjoint.
"""
from __future__ import annotations

import numpy as np

from flowgrad.engine.lazy_errors import lazy_backend
from flowgrad.errors import ArgumentError
from .base import (NONDIFF, Op, apply, as_node, at_user_line, fmt_shape, normalize_axis,
                   result_dtype, shape_error)


# -- reshape ----------------------------------------------------------------------

def _reshape_infer(x, shape):
    known = [s for s in x.shape if s is not None]
    size = int(np.prod(known)) if None not in x.shape else None
    if shape.count(-1) > 1:
        raise shape_error("reshape", (x,), f"at most one -1 in the new shape {shape}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if rest == 0:    # numpy refuses a -1 beside a 0 whatever x's size
            raise shape_error("reshape", (x,), f"cannot reshape to {shape}: a -1 beside "
                                               f"a 0 has no length")
        if size is None:
            out = tuple(None if s == -1 else s for s in shape)
        elif size % rest:
            raise shape_error("reshape", (x,), f"cannot reshape to {shape}")
        else:
            out = tuple(size // rest if s == -1 else s for s in shape)
    else:
        if size is not None and size != int(np.prod(shape)):
            raise shape_error("reshape", (x,), f"cannot reshape to {fmt_shape(shape)}")
        if size is None:
            _check_multiple(x, int(np.prod(known)), shape)
        out = shape
    return out, x.dtype


def _check_multiple(x, k, shape):
    """x's size is k times its run-time lengths: a fixed new shape must hold a multiple
    of k entries (0 too: a run-time length may be 0), or no feed could ever fit it."""
    total = int(np.prod(shape))
    if total % k if k else total:
        why = f"x's size is a multiple of {k} (its known lengths), {total} is not" if k \
            else "x has no entries"
        raise shape_error("reshape", (x,), f"cannot reshape {fmt_shape(x.shape)} to "
                          f"{fmt_shape(shape)}: {why}")


def _reshape_vjp(g, ans, x, shape):
    if x.shape.count(None) <= 1:
        return reshape(g, tuple(-1 if s is None else s for s in x.shape))
    return apply(reshape_like, g, x)


def reshape_of(xp, x, shape):
    """``xp.reshape(x, shape)``, any reshape numpy allows on a lazy backend too. dask
    reshapes only by merging or splitting axes ((2, 3, 4) to (6, 4)); another ((2, 3)
    to (3, 2)) raised NotImplementedError where numpy reshapes. Then the axes from the
    first one the reshape changes are made whole chunks and each block is reshaped
    (the leading axes it keeps keep their chunks). An x of lengths dask does not know
    yet (NaN: rows a mask kept) is measured first, as ``Backend.task`` does."""
    if lazy_backend(xp) is None:
        return xp.reshape(x, shape)
    if any(d != d for d in x.shape):  # dask reshapes only known lengths: learnt now
        x = x.compute_chunk_sizes()
    try:
        return xp.reshape(x, shape)
    except NotImplementedError:
        pass
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if not rest:    # numpy's refusal (a -1 beside a 0 is ambiguous)
            raise ValueError(f"cannot reshape array of size {x.size} into shape {shape}")
        shape = tuple(x.size // rest if s == -1 else s for s in shape)
    k = 0
    while k < min(x.ndim, len(shape)) and x.shape[k] == shape[k]:
        k += 1
    whole = x.rechunk({a: -1 for a in range(k, x.ndim)})
    tail = shape[k:]
    return whole.map_blocks(lambda b: b.reshape(b.shape[:k] + tail), dtype=x.dtype,
                            chunks=whole.chunks[:k] + tuple((s,) for s in tail),
                            drop_axis=list(range(k, x.ndim)),
                            new_axis=list(range(k, len(shape))))


_reshape = Op("reshape", reshape_of, _reshape_infer,
              vjp=(_reshape_vjp,), multilinear=True)


def reshape(x, shape):
    """x with a new shape (numpy's rules, one -1 allowed).  x̄ = v̄ reshaped back."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    return apply(_reshape, x, shape=shape)


reshape_like = Op(
    "reshape_like", lambda xp, x, ref: reshape_of(xp, x, ref.shape),
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
    """Permute the axes of x (reverse them when ``axes`` is None), as numpy.
    x̄ = v̄ with the inverse permutation."""
    x = as_node(x)
    ndim = len(x.shape)
    if axes is not None and any(not -ndim <= int(a) < ndim for a in axes):
        # checked before wrapping: (1,) is no permutation of one axis, not (0,)
        raise shape_error("transpose", (x,), f"axes {tuple(axes)} are out of range for a "
                          f"{ndim}-d input")
    axes = tuple(reversed(range(ndim))) if axes is None else \
        tuple(int(a) % ndim for a in axes)
    if axes == tuple(range(ndim)):
        return x
    return apply(_transpose, x, axes=axes)


def swap_last_axes(x):
    """x with its last two axes swapped (the matrix transpose of a batch)."""
    n = len(x.shape)
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


# -- broadcast_to -------------------------------------------------------------------

def _broadcast_to_infer(x, shape):
    if any(s < 0 for s in shape):
        raise shape_error("broadcast_to", (x,), f"negative length in {fmt_shape(shape)}")
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
    """x broadcast to ``shape`` (numpy's rules).  x̄ = v̄ summed over the broadcast axes."""
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
    """x with new length-1 axes at positions ``axis`` (of the result), as numpy.
    x̄ = v̄ with those axes squeezed."""
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
    """x without the length-1 axes ``axis`` (all statically known ones when None).
    x̄ = v̄ with those axes put back."""
    x = as_node(x)
    axes = tuple(i for i, s in enumerate(x.shape) if s == 1) if axis is None else \
        normalize_axis("squeeze", x, axis)
    if not axes:
        return x
    return apply(_squeeze, x, axis=axes)


# -- concatenate / stack ------------------------------------------------------------

def _concat_infer(*xs, axis):
    ndim = len(xs[0].shape)
    if ndim == 0:
        raise shape_error("concatenate", xs, "zero-dimensional arrays cannot be concatenated")
    if any(len(x.shape) != ndim for x in xs):
        raise shape_error("concatenate", xs, "all operands must have the same number of axes")
    out = []
    for a in range(ndim):
        dims = [x.shape[a] for x in xs]
        if a == axis:
            out.append(None if None in dims else int(np.sum(dims)))
            continue
        known = {d for d in dims if d is not None}
        if len(known) > 1:
            raise shape_error("concatenate", xs, f"lengths differ along axis {a}")
        out.append(known.pop() if known else None)
    return tuple(out), result_dtype(*xs)


def _concat_vjp_all(needed, g, ans, *xs, axis):
    """x̄ₖ = the k-th block of Ḡ along axis, for every k needed: the offsets are found
    once (a node when lengths are known only at run time), each block is one node."""
    sizes = [x.shape[axis] for x in xs]
    if None not in sizes:
        # static lengths: ordinary slices, which draw and simplify like any getitem
        from .indexing import getitem
        ends = np.cumsum(sizes, dtype=int)
        head = (slice(None),) * axis
        return [getitem(g, head + (slice(int(end - n), int(end)),)) if need else None
                for need, n, end in zip(needed, sizes, ends)]
    offsets = apply(_offsets, *xs, axis=axis)
    return [apply(_part, g, offsets, index=k, axis=axis, length=n) if need else None
            for k, (need, n) in enumerate(zip(needed, sizes))]


def _concat_vjp(argnum, g, ans, *xs, axis):
    """One argument's block (for callers that ask argument by argument, like viz)."""
    return _concat_vjp_all([k == argnum for k in range(len(xs))], g, ans, *xs, axis=axis)[argnum]


def _concat_jvp_all(tangents, ans, *xs, axis):
    """The tangent is the concatenation of the tangents (zeros where an input has none):
    one node for all arguments."""
    if all(t is None for t in tangents):
        return None
    from .creation import zeros_like
    parts = [zeros_like(x) if t is None else t for t, x in zip(tangents, xs)]
    return apply(_concatenate, *parts, axis=axis)


def _concat_jvp(argnum, t, ans, *xs, axis):
    """The k-th tangent in its block, zeros in the others: Σₖ of these is concatenate(ẋ)."""
    return _concat_jvp_all([t if k == argnum else None for k in range(len(xs))], ans, *xs,
                           axis=axis)


_concatenate = Op("concatenate", lambda xp, *xs, axis: xp.concatenate(xs, axis=axis),
                  _concat_infer, vjp=_concat_vjp, jvp=_concat_jvp, variadic=True,
                  doc="Join along an axis.  x̄ₖ = Ḡ's k-th block; the tangent is the "
                      "concatenation of the tangents.")
_concatenate.vjp_all = _concat_vjp_all
_concatenate.jvp_all = _concat_jvp_all


def concatenate(xs, axis=0):
    """The nodes ``xs`` joined along an existing ``axis``, as numpy.
    Each x̄ᵢ is v̄'s slice where xᵢ went."""
    xs = [as_node(x) for x in xs]
    if not xs:
        raise ArgumentError("concatenate needs at least one array" + at_user_line())
    if len(xs) == 1:
        return xs[0]
    ndim = len(xs[0].shape)
    if ndim == 0:
        raise shape_error("concatenate", xs, "zero-dimensional arrays cannot be concatenated "
                          "(fg.stack joins them along a new axis)")
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise shape_error("concatenate", xs, f"axis {axis} is out of range for {ndim}-d operands")
    return apply(_concatenate, *xs, axis=int(axis) % ndim)


def stack(xs, axis=0):
    """The nodes ``xs`` (all one shape) stacked along a new ``axis``, as numpy.
    Each x̄ᵢ is v̄ at index i of ``axis``."""
    xs = [as_node(x) for x in xs]
    if not xs:
        raise ArgumentError("stack needs at least one array" + at_user_line())
    shapes = {x.shape for x in xs}
    if len(shapes) > 1 and not all(None in s for s in shapes):
        raise shape_error("stack", xs, "all operands must have the same shape")
    ndim = len(xs[0].shape) + 1
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise shape_error("stack", xs, f"axis {axis} is out of range for a {ndim}-d result")
    axis = int(axis) % ndim
    parts = [expand_dims(x, axis) for x in xs]
    return parts[0] if len(parts) == 1 else apply(_concatenate, *parts, axis=axis)


# -- one block of a concatenation, found from the parts' run-time lengths --------------
# The offsets of all blocks are one node (the lengths' cumulative sum, a small host
# array), and each block reads only Ḡ and the offsets: N blocks are O(N) edges.

def _offsets_forward(xp, *xs, axis):
    return np.cumsum([0] + [x.shape[axis] for x in xs], dtype=np.int64)


_offsets = Op("concat_offsets", _offsets_forward,
              lambda *xs, axis: ((len(xs) + 1,), np.dtype(np.int64)),
              vjp=lambda argnum, g, ans, *xs, axis: None,
              jvp=lambda argnum, t, ans, *xs, axis: None, variadic=True,
              doc="Where each block of a concatenation starts along axis (0, n₀, n₀+n₁, …), "
                  "from the run-time shapes only.  Integer-valued: zero derivative.")


def _block(offsets, index, axis, ndim):
    sl = [slice(None)] * ndim
    sl[axis] = slice(int(offsets[index]), int(offsets[index + 1]))
    return tuple(sl)


def _part_infer(g, offsets, index, axis, length):
    shape = list(g.shape)
    shape[axis] = length
    return tuple(shape), g.dtype


_part = Op("concat_part", lambda xp, g, offsets, index, axis, length:
           g[_block(offsets, index, axis, g.ndim)], _part_infer,
           vjp=(lambda gbar, ans, g, offsets, index, axis, length:
                apply(_unpart, gbar, offsets, index=index, axis=axis, total=g.shape[axis]),
                NONDIFF),
           jvp=(lambda t, ans, g, offsets, index, axis, length:
                apply(_part, t, offsets, index=index, axis=axis, length=length), NONDIFF),
           doc="Block ``index`` along axis of g, between offsets[index] and offsets[index+1].  "
               "∂ is linear: the adjoint puts Ḡ back among zeros, the tangent is the "
               "block of the tangent.")


def _unpart_forward(xp, x, offsets, index, axis, total):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (int(offsets[index]), int(offsets[-1] - offsets[index + 1]))
    return xp.pad(x, pad)


def _unpart_infer(x, offsets, index, axis, total):
    shape = list(x.shape)
    shape[axis] = total
    return tuple(shape), x.dtype


_unpart = Op("concat_unpart", _unpart_forward, _unpart_infer,
             vjp=(lambda g, ans, x, offsets, index, axis, total:
                  apply(_part, g, offsets, index=index, axis=axis, length=x.shape[axis]),
                  NONDIFF),
             jvp=(lambda t, ans, x, offsets, index, axis, total:
                  apply(_unpart, t, offsets, index=index, axis=axis, total=total), NONDIFF),
             doc="x put as block ``index`` along axis among zero blocks (the adjoint of "
                 "concat_part).  x̄ = Ḡ's block; the tangent is the tangent so placed.")
