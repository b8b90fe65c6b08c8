"""Turning what a user passes to a Program into checked backend arrays.

Every feed is checked before anything is computed: an unknown name, a missing
placeholder, a wrong shape or an uncastable dtype raises FeedError naming it.
"""
from __future__ import annotations

import numpy as np

from ..backends.base import host
from ..errors import FeedError, located
from ..graph import Node


def collect(args, kwargs) -> dict:
    """``prog({x: X})``, ``prog({"x": X})`` and ``prog(x=X)`` as one dict."""
    if len(args) > 1:
        raise located(FeedError,
                      "pass feeds as one dict ({node_or_name: value}) and/or as keywords")
    feed = {}
    if args:
        if args[0] is None:
            pass
        elif not isinstance(args[0], dict):
            raise located(FeedError, f"the positional argument must be a dict of feeds, "
                            f"got {type(args[0]).__name__}")
        else:
            feed.update(args[0])
    for name, value in kwargs.items():
        if name in feed:
            raise located(FeedError, f"{name!r} is fed twice")
        feed[name] = value
    return feed


def resolve(graph, feed: dict) -> dict[int, object]:
    """{node id: value}; keys may be nodes or names of placeholders and variables."""
    out = {}
    for key, value in feed.items():
        if isinstance(key, Node):
            if key.graph is not graph:
                raise located(FeedError, f"{key.name!r} belongs to another graph")
            node = key
        elif isinstance(key, str):
            nid = graph.name_id(key)
            if nid is None:
                known = sorted(n.name for n in graph.handles if n.kind == "placeholder")
                raise located(FeedError, f"unknown feed {key!r}; the graph's placeholders "
                                         f"are {known}")
            node = graph.node(nid)
        else:
            raise located(FeedError, f"feed keys must be nodes or names, got {key!r}")
        if node.kind not in ("placeholder", "variable"):
            kind = "an op" if node.kind == "op" else f"a {node.kind}"
            raise located(FeedError, f"{node.name!r} is {kind}; only placeholders and "
                            "variables can be fed")
        if node.id in out:
            raise located(FeedError, f"{node.name!r} is fed twice")
        out[node.id] = value
    return out


def refuse_masked(value, what: str, error=FeedError):
    """Refuse a numpy masked array (as JAX does): flowgrad has no masks, and reading one
    as an array keeps the data under the mask and drops the mask, silently another
    value. ``what`` names the receiver in the message (``'x'``, ``variable 'w'``)."""
    if isinstance(value, np.ma.MaskedArray):
        raise located(error, f"{what} was given a numpy masked array; flowgrad has no masks, and "
                    "reading it as an array would use the values under the mask: pass "
                    "arr.filled(value) for the value masked entries should take")


def check(node, value, backend):
    """``value`` as an array of ``backend`` with ``node``'s dtype, its shape checked."""
    refuse_masked(value, repr(node.name))
    if isinstance(value, np.generic):
        arr = np.asarray(value)   # a numpy scalar: checked as the 0-d array it is
    elif backend.owns(value):
        arr = value
    else:
        try:
            arr = np.asarray(host(value))
        except (ValueError, TypeError) as e:  # a ragged list: numpy cannot make an array
            raise located(FeedError, f"{node.name!r} was fed something that is not an "
                                     f"array: {e}") from e
        if arr.dtype.kind not in "biufc":
            raise located(FeedError, _not_numbers(node, arr))
    shape, dtype = tuple(arr.shape), np.dtype(arr.dtype)
    want = node.shape
    if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
        fmt = "(" + ", ".join("None" if w is None else str(w) for w in want) + \
            ("," if len(want) == 1 else "") + ")"
        raise located(FeedError, f"{node.name!r} expects shape {fmt}, got {shape}")
    if dtype != node.dtype:
        if type(value) is int and dtype.kind in "iu" and node.dtype.kind in "iu":
            # a Python int is weakly typed, as in numpy 2 (np.uint8 array + 3 is uint8):
            # it takes any int dtype it fits; read as int64 it was refused even 3 for a
            # uint8 placeholder (int64 → uint8 is no same_kind cast)
            return backend.asarray(_narrowed_any(node, arr), dtype=node.dtype)
        if not np.can_cast(dtype, node.dtype, "same_kind"):
            raise located(FeedError, f"{node.name!r} expects dtype {node.dtype}, got {dtype}")
        if not np.can_cast(dtype, node.dtype, "safe"):
            arr = _narrowed_any(node, arr)
    return backend.asarray(arr, dtype=node.dtype)


def _not_numbers(node, arr) -> str:
    """Why a fed value numpy could only hold as objects or text is refused: a Python int
    beyond 64 bits (numpy's widest integers) is named; otherwise the usual suspects."""
    if arr.dtype == object and arr.size and all(type(v) is int for v in arr.flat):
        big = next((v for v in arr.flat if not -2**63 <= v < 2**64), None)
        if big is not None:
            return (f"{node.name!r} expects numbers of dtype {node.dtype}; the value given "
                    f"holds the integer {big}, beyond the 64 bits numpy's integers hold "
                    f"(pass it as a float if that is what you mean)")
    return (f"{node.name!r} expects numbers of dtype {node.dtype}, got an array of dtype "
            f"{arr.dtype} (a ragged list, strings or objects?)")


def narrowed(node, arr):
    """``arr`` (an array of any backend, or a numpy scalar) for the narrower dtype of
    ``node``: FeedError for a value that does not fit. Feeds and assignments to a
    variable's ``value`` (flowgrad/leaves.py) both check through here."""
    if isinstance(arr, np.generic):
        arr = np.asarray(arr)
    return _narrowed_any(node, arr)


def _narrowed_any(node, arr):
    """``_narrowed`` for an array of any backend. A dask array is checked lazily, block
    by block, in the task that casts the block (``map_blocks``): no pass over the data
    beyond the one the program makes anyway, and a value that does not fit raises the
    same FeedError when the program's outputs are computed (with ``lazy=True``, when
    the caller computes them). Other arrays (numpy, cupy) are checked now."""
    if hasattr(arr, "map_blocks") and not isinstance(arr, np.ndarray):
        return arr.map_blocks(_block_narrowed, node, dtype=node.dtype)
    return _narrowed(node, arr, located)


def _block_narrowed(block, node):
    # (in a dask task: no frame of the user's to name, so the plain message)
    return np.asarray(_narrowed(node, block, _plain), dtype=node.dtype)


def _plain(cls, message):
    return cls(message)


def _narrowed(node, arr, error):
    """``arr`` cast to the narrower ``node.dtype``; a value that does not fit (2**40 into
    int32, 1e300 into float32) is a FeedError, never a wrapped integer or an inf."""
    want = node.dtype
    if want.kind in "iu" and arr.dtype.kind in "iub" and arr.size:
        info = np.iinfo(want)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise error(FeedError, f"{node.name!r} has dtype {want}, whose range is "
                            f"[{info.min}, {info.max}]; the value given holds {bad}, which "
                            "would wrap around")
    elif want.kind == "f" and arr.dtype.kind == "f" and arr.size:
        with np.errstate(over="ignore"):
            cast = arr.astype(want)
        over = np.isinf(cast) & np.isfinite(arr)
        if over.any():
            bad = arr[over].flat[0]
            raise error(FeedError, f"{node.name!r} has dtype {want}, whose largest value is "
                            f"{np.finfo(want).max:.4g}; the value given holds {bad:.4g}, which "
                            "would become inf")
        return cast
    return arr
