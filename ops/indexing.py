"""Indexing: ``x[index]`` as numpy, and its adjoint, a scatter-add into zeros.

An index may hold ints, slices, ``None`` (newaxis), ``Ellipsis``, integer arrays
or lists, boolean constant arrays (turned into integer arrays at build time, as
numpy does) and integer *nodes* (indices known only at run time, e.g. a batch).
The index is stored as a tuple of tagged items, so it can be hashed and compared
by the compile-time simplifier; integer nodes become extra (non-differentiable)
inputs of the op.

getitem is linear in x: its forward rule is getitem of the tangent and its
reverse rule scatters the adjoint into zeros of x's shape, *adding* at repeated
integer indices (``x[[0, 0]]`` sends both adjoints to x[0]). The scatter is
linear too, and its reverse rule is getitem again, so every order works.
"""
from __future__ import annotations

import builtins
import functools

import numpy as np

from flowgrad.errors import UsageError
from .base import Op, apply, as_node, at_user_line, broadcast_shapes, half_widened, shape_error
from flowgrad.engine.lazy_errors import checked_whole, is_lazy, lazy_backend
from flowgrad.graph import Node

_CONSUMING = ("i", "s", "a", "t")   # items that consume one axis of x


# -- normalising an index into tagged items -------------------------------------------

def _items(index):
    """(items, tensor nodes): each item ("i", k) | ("s", start, stop, step) | ("n",) |
    ("e",) | ("a", int array) | ("t", k-th tensor input)."""
    if not isinstance(index, tuple):
        index = (index,)
    items, tensors = [], []
    for it in index:
        if isinstance(it, Node):
            if it.dtype.kind not in "iu":
                raise UsageError(f"getitem: an index node must have an integer dtype, "
                                 f"{it.name!r} has {it.dtype} (boolean masks must be constants)"
                                 + at_user_line())
            items.append(("t", len(tensors)))
            tensors.append(it)
        elif it is None:
            items.append(("n",))
        elif it is Ellipsis:
            items.append(("e",))
        elif isinstance(it, (bool, np.bool_)):
            raise UsageError("getitem: a bare True/False index is not supported" + at_user_line())
        elif isinstance(it, (int, np.integer)):
            items.append(("i", int(it)))
        elif isinstance(it, slice):
            items.append(("s",) + tuple(_slice_part(v) for v in (it.start, it.stop, it.step)))
        else:
            items.extend(_array_items(it))
    return tuple(items), tensors


def _slice_part(v):
    if v is None or isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return None if v is None else int(v)
    raise UsageError(f"getitem: slice bounds must be ints or None, got {v!r}" + at_user_line())


def _array_items(it):
    arr = np.asarray(it)
    if arr.dtype == np.bool_:
        # a constant mask selects its nonzero positions: one integer array per mask axis
        if arr.ndim == 0:
            raise UsageError("getitem: a 0-d boolean index is not supported" + at_user_line())
        return [("a", _frozen(a)) for a in np.nonzero(arr)]
    if arr.size == 0:
        arr = arr.astype(np.intp)
    if arr.dtype.kind not in "iu":
        raise UsageError(f"getitem: unsupported index {it!r} (ints, slices, None, Ellipsis, "
                         "integer arrays or nodes, boolean constant arrays)" + at_user_line())
    return [("a", _frozen(arr.astype(np.intp)))]


def _frozen(arr):
    arr = np.array(arr)
    arr.setflags(write=False)
    return arr


# -- shape inference ------------------------------------------------------------------

class _Shaped:
    """Just enough of a node (shape, name) for broadcast_shapes."""
    def __init__(self, shape, name):
        self.shape, self.name = shape, name


def expand_ellipsis(x, items):
    used = sum(1 for it in items if it[0] in _CONSUMING)
    ndim = len(x.shape)
    n_ell = sum(1 for it in items if it[0] == "e")
    if n_ell > 1:
        raise shape_error("getitem", (x,), "an index can only have a single ellipsis ('...')")
    if used > ndim:
        raise shape_error("getitem", (x,), f"too many indices: {used} for a {ndim}-d array")
    fill = (("s", None, None, None),) * (ndim - used)
    if not n_ell:
        return items + fill
    k = [it[0] for it in items].index("e")
    return items[:k] + fill + items[k + 1:]


def _check_bound(x, axis, lo, hi):
    dim = x.shape[axis]
    if dim is not None and (lo < -dim or hi >= dim):
        bad = lo if lo < -dim else hi
        raise shape_error("getitem", (x,), f"index {bad} is out of bounds for axis {axis} "
                          f"with size {dim}")


def _infer(x, *tensors, index):
    items = expand_ellipsis(x, index)
    advanced = any(it[0] in ("a", "t") for it in items)
    out, adv_shapes, adv_pos = [], [], []
    axis = 0
    for pos, it in enumerate(items):
        kind = it[0]
        if kind == "n":
            out.append(1)
            continue
        dim = x.shape[axis]
        if kind == "s":
            out.append(None if dim is None else len(range(*slice(*it[1:]).indices(dim))))
        elif kind == "i":
            _check_bound(x, axis, it[1], it[1])
            if advanced:   # with arrays present, an int is a 0-d array index (numpy)
                adv_shapes.append(()), adv_pos.append(pos)
        elif kind == "a":
            if it[1].size:
                _check_bound(x, axis, int(it[1].min()), int(it[1].max()))
            adv_shapes.append(it[1].shape), adv_pos.append(pos)
        else:
            adv_shapes.append(tensors[it[1]].shape), adv_pos.append(pos)
        if kind in ("a", "t", "i") and advanced:
            out.append(_ADV)
        axis += 1
    if not advanced:
        return tuple(out), x.dtype
    bshape = broadcast_shapes("getitem", *[_Shaped(s, "index") for s in adv_shapes]) \
        if adv_shapes else ()
    # numpy: adjacent advanced indices put their broadcast shape where they stand,
    # separated ones put it first
    adjacent = adv_pos == list(range(adv_pos[0], adv_pos[0] + len(adv_pos)))
    first = out.index(_ADV)
    basic = [d for d in out if d is not _ADV]
    if adjacent:
        return tuple(basic[:first]) + bshape + tuple(basic[first:]), x.dtype
    return bshape + tuple(basic), x.dtype


_ADV = object()   # placeholder in the output shape where advanced indices stand


# -- forward --------------------------------------------------------------------------

def _key(xp, items, tensors):
    out = []
    for it in items:
        kind = it[0]
        if kind == "i":
            out.append(it[1])
        elif kind == "s":
            out.append(slice(*it[1:]))
        elif kind == "n":
            out.append(None)
        elif kind == "e":
            out.append(Ellipsis)
        elif kind == "a":
            out.append(xp.asarray(it[1]))
        else:
            out.append(tensors[it[1]])
    return tuple(out)


def _is_advanced(items):
    return any(it[0] in ("a", "t") for it in items)


def _getitem_forward(xp, x, *tensors, index):
    key = _key(xp, index, tensors)
    if xp is not np:
        key = _bounds_checked(xp, x, index, key)
        if not _dask_can_index(index) and lazy_backend(xp) is not None:
            return _gather_on_host(lazy_backend(xp), x, key, index, tensors)
        p = _lone_array(index, key)
        if p is not None:
            return _gather_flat(xp, x, key, p)
    return x[key]


def _dask_can_index(items) -> bool:
    """Whether dask.array indexes as numpy does with ``items``: at most one integer
    array, beside only slices and an ellipsis. Two arrays raise NotImplementedError;
    an array beside an int or None gives another shape than numpy's (``x[1, :, [0, 2]]``:
    numpy puts the array's axis first, dask where the array stands) or fails."""
    arrays = [it for it in items if it[0] in ("a", "t")]
    return len(arrays) <= 1 and (not arrays or all(it[0] in ("a", "t", "s", "e")
                                                    for it in items))


def _gather_on_host(backend, x, key, items, tensors):
    """``x[key]`` as numpy indexes, where dask cannot (``_dask_can_index``): ONE task
    of the lazy backend's graph (``Backend.task``) that reads x whole and indexes it in
    numpy; an index out of range is numpy's IndexError, as the step's RunError."""
    if any(d != d for d in x.shape):  # lengths dask knows once x is computed: now
        x = x.compute_chunk_sizes()
    where = [k for k, v in enumerate(key) if hasattr(v, "shape")]
    plain = tuple(None if k in where else v for k, v in enumerate(key))
    shape = _gathered_shape(tuple(x.shape), items, [t.shape for t in tensors])
    fn = functools.partial(_take_at, plain, where)
    return backend.task(fn, [x] + [key[k] for k in where], [shape], [x.dtype])[0]


def _gathered_shape(shape, items, tensor_shapes):
    """numpy's shape of ``x[items]`` for an x of ``shape`` (``_infer``'s rules), with
    the bounds of constant indices left to numpy's own check in the task."""
    x = _Shaped(shape, "x")
    unchecked, axis = list(shape), 0
    for it in expand_ellipsis(x, items):
        if it[0] != "n":
            if it[0] in ("i", "a"):
                unchecked[axis] = None      # an advanced axis: not in the result's shape
            axis += 1
    tensors = [_Shaped(tuple(s), "index") for s in tensor_shapes]
    x = _Shaped(tuple(unchecked), "x")
    x.dtype = None                          # _infer hands x's dtype on; not read here
    return _infer(x, *tensors, index=items)[0]


def _take_at(key, where, x, *arrays):
    """The task of ``_gather_on_host``: (``x[key]``,), the items of ``key`` at ``where``
    being ``arrays`` (host values of the index arrays)."""
    key = list(key)
    for k, a in zip(where, arrays):
        key[k] = np.asarray(a)
    return (np.asarray(x)[tuple(key)],)     # Backend.task: one value per result


def _bounds_checked(xp, x, items, key):
    """``key`` with each lazy index array (dask: the index a node gives) checked, whole
    when it is computed, for numpy's IndexError (its first bad entry in C order): dask's
    gather takes an index outside the axis for another row without a word."""
    key, checked = list(key), []
    ndim, used = len(x.shape), sum(1 for it in items if it[0] in _CONSUMING)
    axis = 0
    for k, it in enumerate(items):
        if it[0] == "e":
            axis += ndim - used
            continue
        if it[0] == "t" and is_lazy(xp, key[k]) and \
                isinstance(x.shape[axis], (int, np.integer)):
            size = int(x.shape[axis])
            key[k] = checked_whole(lazy_backend(xp), key[k], _in_bounds, axis, size,
                                   on=_first_bad(xp, key[k], size), after=checked[-1:])
            checked.append(key[k])        # numpy checks the axes in order
        axis += it[0] in _CONSUMING
    return tuple(key)


def _first_bad(xp, idx, size):
    """A lazy 1-entry array: ``idx``'s first entry (C order) outside [-size, size), or
    its first entry if none is; dask reductions, so no task reads idx whole. None
    (read it whole) where idx has no entries or lengths dask does not know."""
    if not idx.size or any(d != d for d in idx.shape):
        return None
    flat = xp.reshape(idx, (-1,))
    return flat[xp.argmax((flat < -size) | (flat >= size))[None]]


def _in_bounds(block, axis, size):
    """``block`` of an index along ``axis`` of length ``size``; numpy's IndexError (the
    first bad entry in C order) for an entry outside [-size, size)."""
    bad = (block < -size) | (block >= size)
    if bad.any():
        value = int(block.reshape(-1)[int(np.argmax(bad.reshape(-1)))])
        raise IndexError(f"index {value} is out of bounds for axis {axis} with size {size}")
    return block


def _lone_array(items, key):
    """The position of the one integer array of an index whose other items are all
    slices, where that array is not 1-d; else None."""
    arrays = [k for k, it in enumerate(items) if it[0] in ("a", "t")]
    if len(arrays) != 1 or any(it[0] != "s" for it in items if it[0] not in ("a", "t")):
        return None
    p = arrays[0]
    return p if key[p].ndim != 1 else None


def _gather_flat(xp, x, key, p):
    """``x[key]`` through a 1-d index: the array at ``key[p]`` flattened, the gather,
    then its axis ``p`` reshaped to the index's shape. Numpy's answer on namespaces
    whose indexers must be 1-d (dask.array), lazily; only slices precede ``p``, so the
    gathered axis stands at ``p``."""
    idx = key[p]
    got = x[key[:p] + (xp.reshape(idx, (-1,)),) + key[p + 1:]]
    shape = tuple(got.shape)
    return xp.reshape(got, shape[:p] + tuple(idx.shape) + shape[p + 1:])


def _added_at(xp, shape, key, g):
    """Zeros of ``shape`` with ``g`` added at ``key`` (repeated indices add up)."""
    out = xp.zeros(shape, dtype=g.dtype)
    if not hasattr(xp.add, "at"):
        return _scatter_add_on_host(xp, out, key, g)
    xp.add.at(out, key, g)
    return out


def _scatter_forward(xp, g, x, *tensors, index):
    key = _key(xp, index, tensors)
    if _is_advanced(index):
        # a float16 g added in float32 and rounded once (ops.base.summed's rule): in
        # float16 the adjoint of 3000 lookups of one row (an embedding's gradient)
        # stalled at 2048, as torch's CPU index backward still does
        return half_widened(lambda v: _added_at(xp, x.shape, key, v), g)
    out = xp.zeros(x.shape, dtype=g.dtype)
    # newaxis items add only length-1 axes: drop them from the key and reshape g,
    # since dask's item assignment takes no None in a key
    if any(it[0] == "n" for it in index):
        key = tuple(k for k in key if k is not None)
        g = xp.reshape(g, out[key].shape)
    out[key] = g
    return out


def _scatter_add_on_host(xp, out, key, g):
    """For namespaces without a scatter-add (dask.array): do this one step in numpy
    on host values and hand the result back as the namespace's array. On a lazy
    backend it is one task of its graph (``Backend.task``: nothing computed now, a
    failure named as numpy names it); else on values materialised now."""
    from flowgrad.backends import to_numpy
    backend = lazy_backend(xp)
    if backend is not None:
        where = [k for k, v in enumerate(key) if hasattr(v, "shape")]
        plain = tuple(None if k in where else v for k, v in enumerate(key))
        fn = functools.partial(_add_at, plain, where, tuple(out.shape), out.dtype)
        return backend.task(fn, [g] + [key[k] for k in where], [tuple(out.shape)],
                            [out.dtype])[0]
    host = to_numpy(out).copy()
    np.add.at(host, tuple(to_numpy(k) if hasattr(k, "shape") else k for k in key)
              if isinstance(key, tuple) else to_numpy(key), to_numpy(g))
    return xp.asarray(host)


def _add_at(key, where, shape, dtype, g, *arrays):
    """The task of ``_scatter_add_on_host``: (zeros of ``shape`` with ``g`` added at
    ``key``,), whose items at ``where`` are ``arrays`` (host values of the index arrays)."""
    key = list(key)
    for k, a in zip(where, arrays):
        key[k] = np.asarray(a)
    out = np.zeros(shape, dtype)
    np.add.at(out, tuple(key), np.asarray(g))
    return (out,)                     # Backend.task: one value per result


# -- rules ----------------------------------------------------------------------------

def _getitem_vjp(argnum, g, ans, x, *tensors, index):
    """x̄ = zeros(x.shape) with Ḡ added at the indexed positions."""
    if argnum:
        return None
    return apply(_scatter, g, x, *tensors, index=index)


def _getitem_jvp(argnum, t, ans, x, *tensors, index):
    """ẏ = ẋ[index]."""
    return apply(_getitem, t, *tensors, index=index) if argnum == 0 else None


def _scatter_vjp(argnum, gbar, ans, g, x, *tensors, index):
    """The adjoint of a scatter-add is a gather: ḡ = Ḡ[index]."""
    return apply(_getitem, gbar, *tensors, index=index) if argnum == 0 else None


def _scatter_jvp(argnum, t, ans, g, x, *tensors, index):
    return apply(_scatter, t, x, *tensors, index=index) if argnum == 0 else None


_getitem = Op("getitem", _getitem_forward, _infer, vjp=_getitem_vjp, jvp=_getitem_jvp,
              variadic=True,
              doc="x[index], as numpy.  x̄ = Ḡ scattered (added) into zeros at index.")

_scatter = Op("scatter_add", _scatter_forward,
              lambda g, x, *tensors, index: (x.shape, g.dtype),
              vjp=_scatter_vjp, jvp=_scatter_jvp, variadic=True,
              doc="zeros shaped like x (a ref) with g added at index: getitem's adjoint. "
                  "It is linear, and its own adjoint is a gather: ḡ = Ḡ[index].")


def getitem(x, index):
    """``x[index]`` with numpy's rules: ints, slices, None, Ellipsis, integer arrays, lists
    or nodes, constant boolean masks. ``Node.__getitem__`` calls this.
    x̄ = v̄ scattered back to the entries read (repeated indices add up); none for indices."""
    x = as_node(x)
    items, tensors = _items(index)
    expand_ellipsis(x, items)   # fail at build time on a bad index, even an identity one
    _check_masks(x, index if isinstance(index, tuple) else (index,))
    if all(it[0] == "e" or it == ("s", None, None, None) for it in items) and \
            sum(1 for it in items if it[0] == "e") <= 1:
        return x     # x[...] and x[:] are x itself (no copy is ever observable)
    return apply(_getitem, x, *tensors, index=items)


def _consumed(it):
    """How many axes of x a raw index item stands for (Ellipsis: None, decided later)."""
    if it is None:
        return 0
    if it is Ellipsis:
        return None
    if isinstance(it, (list, tuple, np.ndarray)) and np.asarray(it).dtype == np.bool_:
        return np.asarray(it).ndim
    return 1


def _check_masks(x, index):
    """Each boolean mask's shape against the axes of x it covers, as numpy requires.

    Why: a mask becomes integer arrays (its nonzero positions) when the graph is built,
    after which a mask shorter than its axis silently selected from the axis's head, and
    one over an axis of run-time length could not be checked at all. A mismatch is
    numpy's error; an axis whose length is known only at run time is refused (the mask
    has a length; index with ``np.nonzero(mask)`` to select positions without one)."""
    counts = [_consumed(it) for it in index]
    axis, ndim = 0, len(x.shape)
    for it, n in zip(index, counts):
        if n is None:
            axis += ndim - builtins.sum(c for c in counts if c is not None)
            continue
        if n and isinstance(it, (list, tuple, np.ndarray)) and \
                np.asarray(it).dtype == np.bool_:
            mask_shape = np.asarray(it).shape
            dims = tuple(x.shape[axis:axis + n])
            for k, (d, m) in enumerate(zip(dims, mask_shape)):
                if d is None:
                    raise shape_error("getitem", (x,), f"a boolean mask on axis {axis + k}, "
                                      "whose length is known only at run time (index "
                                      "with np.nonzero(mask) to select its positions)")
                if d != m:
                    raise shape_error("getitem", (x,), f"boolean index did not match "
                                      f"indexed array along axis {axis + k}; size of axis "
                                      f"is {d} but size of corresponding boolean axis is {m}")
        axis += n


def take(x, indices, axis=0):
    """Entries of x at integer ``indices`` along ``axis`` (numpy.take without modes).
    x̄ = v̄ scattered back along ``axis`` (repeated indices add up)."""
    x = as_node(x)
    ndim = len(x.shape)
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise shape_error("take", (x,), f"axis {axis} is out of range for a {ndim}-d array")
    return getitem(x, (slice(None),) * (int(axis) % ndim) + (indices,))
