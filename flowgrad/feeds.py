"""Turning what a user passes to a Program into checked backend arrays.

Every feed is checked before anything is computed: an unknown name, a missing
placeholder, a wrong shape or an uncastable dtype raises FeedError naming it.
"""
from __future__ import annotations

import numpy as np

from .backends.base import host
from .errors import FeedError
from .graph import Node


def collect(args, kwargs) -> dict:
    """``prog({x: X})``, ``prog({"x": X})`` and ``prog(x=X)`` as one dict."""
    if len(args) > 1:
        raise FeedError("pass feeds as one dict ({node_or_name: value}) and/or as keywords")
    feed = {}
    if args:
        if args[0] is None:
            pass
        elif not isinstance(args[0], dict):
            raise FeedError(f"the positional argument must be a dict of feeds, "
                            f"got {type(args[0]).__name__}")
        else:
            feed.update(args[0])
    for name, value in kwargs.items():
        if name in feed:
            raise FeedError(f"{name!r} is fed twice")
        feed[name] = value
    return feed


def resolve(graph, feed: dict) -> dict[int, object]:
    """{node id: value}; keys may be nodes or names of placeholders and variables."""
    out = {}
    for key, value in feed.items():
        if isinstance(key, Node):
            if key.graph is not graph:
                raise FeedError(f"{key.name!r} belongs to another graph")
            node = key
        elif isinstance(key, str):
            nid = graph._names.get(key)
            if nid is None:
                known = sorted(n.name for n in graph._handles if n.kind == "placeholder")
                raise FeedError(f"unknown feed {key!r}; the graph's placeholders are {known}")
            node = graph.node(nid)
        else:
            raise FeedError(f"feed keys must be nodes or names, got {key!r}")
        if node.kind not in ("placeholder", "variable"):
            raise FeedError(f"{node.name!r} is a {node.kind}; only placeholders and "
                            "variables can be fed")
        if node.id in out:
            raise FeedError(f"{node.name!r} is fed twice")
        out[node.id] = value
    return out


def check(node, value, backend):
    """``value`` as an array of ``backend`` with ``node``'s dtype, its shape checked."""
    arr = value if backend.owns(value) else np.asarray(host(value))
    shape, dtype = tuple(arr.shape), np.dtype(arr.dtype)
    want = node.shape
    if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
        fmt = "(" + ", ".join("None" if w is None else str(w) for w in want) + \
            ("," if len(want) == 1 else "") + ")"
        raise FeedError(f"{node.name!r} expects shape {fmt}, got {shape}")
    if dtype != node.dtype and not np.can_cast(dtype, node.dtype, "same_kind"):
        raise FeedError(f"{node.name!r} expects dtype {node.dtype}, got {dtype}")
    return backend.asarray(arr, dtype=node.dtype)
