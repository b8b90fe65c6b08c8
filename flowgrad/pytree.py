"""Nested containers of nodes ("pytrees") as flat lists and back.

A loop's carry or a branch's result may be one node, or tuples, lists and dicts of
them (an LSTM carries ``(h, c)``). The loops work on flat lists of leaves; a
``TreeDef`` remembers the nesting so the user's function sees, and returns, the
structure it was written for. Leaves are anything that is not a tuple, list or dict
(nodes, numbers, arrays). Dict keys are visited in sorted order, so two dicts with the
same keys flatten alike whatever their insertion order.

User structures are small and shallow, but the walks are still iterative (an explicit
stack), as every walk in flowgrad is.
"""
from __future__ import annotations

from .errors import UsageError

__all__ = ["TreeDef", "flatten", "unflatten"]

_LEAF = "*"


class TreeDef:
    """The nesting of a pytree: ``kind`` is ``"*"`` (a leaf), ``"tuple"``, ``"list"`` or
    ``"dict"``; ``keys`` the dict's sorted keys; ``children`` the sub-structures."""

    __slots__ = ("kind", "keys", "children", "n_leaves")

    def __init__(self, kind, keys=(), children=()):
        self.kind = kind
        self.keys = tuple(keys)
        self.children = tuple(children)
        self.n_leaves = 1 if kind == _LEAF else sum(c.n_leaves for c in children)

    def __eq__(self, other):
        return isinstance(other, TreeDef) and self.describe() == other.describe()

    def __hash__(self):
        return hash(self.describe())

    def describe(self) -> str:
        """A short text of the structure: ``(*, [*, *], {a: *})``."""
        parts, stack = [], [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                parts.append(item)
                continue
            if item.kind == _LEAF:
                parts.append("*")
                continue
            opener, closer = {"tuple": "()", "list": "[]", "dict": "{}"}[item.kind]
            inner = []
            for k, child in enumerate(item.children):
                if k:
                    inner.append(", ")
                if item.kind == "dict":
                    inner.append(f"{item.keys[k]!r}: ")
                inner.append(child)
            stack.extend(reversed([opener, *inner, closer]))
        return "".join(parts)

    def __repr__(self):
        return f"TreeDef{self.describe()}"


def _children(tree):
    if isinstance(tree, dict):
        try:
            keys = sorted(tree)
        except TypeError as e:
            raise UsageError(f"a loop's dict keys must be sortable (strings), got "
                             f"{list(tree)!r}") from e
        return "dict", keys, [tree[k] for k in keys]
    if isinstance(tree, tuple):
        return "tuple", (), list(tree)
    if isinstance(tree, list):
        return "list", (), list(tree)
    return None


def flatten(tree):
    """``(leaves, treedef)``: the leaves in order, and the structure to rebuild it."""
    leaves = []
    # post-order: a container's TreeDef is made once its children's are
    work = [("visit", tree)]
    built = []
    while work:
        tag, item = work.pop()
        if tag == "visit":
            kids = _children(item)
            if kids is None:
                leaves.append(item)
                built.append(TreeDef(_LEAF))
                continue
            kind, keys, children = kids
            work.append(("make", (kind, keys, len(children))))
            work.extend(("visit", c) for c in reversed(children))
        else:
            kind, keys, n = item
            children = built[len(built) - n:] if n else []
            del built[len(built) - n:]
            built.append(TreeDef(kind, keys, children))
    return leaves, built[0]


def unflatten(treedef: TreeDef, leaves):
    """The structure ``treedef`` with ``leaves`` in place of its leaves, in order."""
    leaves = list(leaves)
    if len(leaves) != treedef.n_leaves:
        raise UsageError(f"a structure {treedef.describe()} needs {treedef.n_leaves} "
                         f"leaves, got {len(leaves)}")
    it = iter(leaves)
    work = [("visit", treedef)]
    built = []
    while work:
        tag, item = work.pop()
        if tag == "visit":
            if item.kind == _LEAF:
                built.append(next(it))
                continue
            work.append(("make", item))
            work.extend(("visit", c) for c in reversed(item.children))
        else:
            n = len(item.children)
            kids = built[len(built) - n:] if n else []
            del built[len(built) - n:]
            if item.kind == "dict":
                built.append(dict(zip(item.keys, kids)))
            elif item.kind == "tuple":
                built.append(tuple(kids))
            else:
                built.append(list(kids))
    return built[0]
