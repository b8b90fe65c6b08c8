"""Placeholders pinned to values at ONNX export: ``export_onnx(outs, path, feed={training:
False})`` writes ``training`` as a constant, and a ``where`` whose condition is a pinned
0-d value keeps only the branch it takes, so nothing of the other branch is exported.

This is how a model trained with dropout (or any ``where(training, …)`` switch) exports in
inference mode: the dropout branch, with its random mask, is never reached, so it is not
in the file (ONNX has no seeded random op that matches flowgrad's streams anyway).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowgrad.backends import get_backend
from flowgrad.errors import FeedError

from ..engine import binding as feeds


@dataclass
class Pinning:
    """What export_onnx needs to know about a pinned feed.

    ``values``: {placeholder id: its checked value (numpy)}; ``alias``: {where node id: the
    id of the branch it takes}; ``order``: the ids to emit, ascending (only those an output
    still needs once every pinned ``where`` is folded)."""
    values: dict = field(default_factory=dict)
    alias: dict = field(default_factory=dict)
    order: list = field(default_factory=list)


def pin(outs, order, feed) -> Pinning:
    """Fold ``feed`` (a dict {placeholder or name: value}, or None) into the export of
    ``outs``, whose ancestors in ascending id order are ``order``."""
    if not feed:
        return Pinning(order=list(order))
    graph = outs[0].graph
    values = {}
    for nid, value in feeds.resolve(graph, feed).items():
        node = graph.node(nid)
        if node.kind != "placeholder":
            raise FeedError(f"export_onnx pins placeholders; {node.name!r} is a {node.kind} "
                            "(variables are written with their current values)")
        values[nid] = np.asarray(feeds.check(node, value, get_backend("numpy")))
    alias = _fold_wheres(graph, order, values)
    return Pinning(values, alias, _needed(graph, outs, alias))


def _fold_wheres(graph, order, values) -> dict:
    """{where id: taken branch id} for each ``where`` whose condition is a pinned 0-d value."""
    alias = {}
    for nid in order:
        n = graph.node(nid)
        if n.op is None or n.op.name != "where":
            continue
        cond, then, other = (alias.get(i.id, i.id) for i in n.inputs)
        if cond in values and values[cond].shape == ():
            taken = then if bool(values[cond]) else other
            if graph.node(taken).shape == n.shape and graph.node(taken).dtype == n.dtype:
                alias[nid] = taken   # else the where also broadcasts or casts: keep it
    return alias


def _needed(graph, outs, alias) -> list:
    """Ids an output reaches once a folded where reaches only its branch, ascending (the
    where itself stays: export maps it to the branch's tensor). A loop, not a recursion."""
    seen, stack = set(), [o.id for o in outs]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if nid in alias:
            stack.append(alias[nid])
            continue
        stack.extend(i.id for i in graph.node(nid).inputs)
    return sorted(seen)
