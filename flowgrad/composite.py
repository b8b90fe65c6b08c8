"""``fg.composite``: group the nodes a function builds, so drawings show one box for it.

    @fg.composite
    def dense(x, W, b):
        return fg.tanh(x @ W + b)

    with fg.composite("attention"):
        ...

Every node built while a group is open records the group's name (``node.group``,
outermost first; groups nest). Each call gets its own name in its graph: ``dense``,
``dense_1``, ``dense_2`` … Nothing else changes: the nodes are ordinary nodes, and
``fg.viz.draw(..., expand=...)`` decides whether a group is drawn as one box.
"""
from __future__ import annotations

import functools
import threading

from .graph import Node, thread_state as _state


def _frames() -> list:
    if not hasattr(_state, "groups"):
        _state.groups = []
    return _state.groups


class _Frame:
    """One open group. Its name is taken lazily, per graph, when its first node is built
    there (a function may build into a graph other than the default one)."""

    def __init__(self, label, args, block=None):
        self.label = label
        self.args = args
        self.block = block   # the fg.composite("name") block that opened it, if one did
        self._names = {}

    def name_in(self, graph) -> str:
        name = self._names.get(id(graph))
        if name is None:
            name = self._names[id(graph)] = _register(graph, self.label, self.args)
        return name


# a fresh name is a test and a write: two threads' calls must not both take "dense"
_REGISTER_LOCK = threading.Lock()


def _register(graph, label, args) -> str:
    """A fresh group name in ``graph`` and its record: {name: {"label", "args"}}."""
    with _REGISTER_LOCK:
        return _fresh_name(graph, label, args)


def _fresh_name(graph, label, args) -> str:
    groups = graph.__dict__.setdefault("_groups", {})
    taken = graph.__dict__.setdefault("_group_next", {})
    k = taken.get(label, 0)
    name = label if k == 0 else f"{label}_{k}"
    while name in groups:
        k += 1
        name = f"{label}_{k}"
    taken[label] = k + 1
    groups[name] = {"label": label,
                    "args": tuple(a.id for a in args if isinstance(a, Node) and a.graph is graph)}
    return name


def groups(graph) -> dict:
    """{group name: {"label": the function's name, "args": ids of its node arguments}}."""
    return getattr(graph, "_groups", {})


def _wrap(fn, label):
    """``fn`` with every call run inside a fresh group named after ``label``; still a plain
    function (``help``, ``inspect.signature`` and method binding work as for ``fn``)."""
    @functools.wraps(fn)
    def grouped(*args, **kwargs):
        frames = _frames()
        frames.append(_Frame(label, args + tuple(kwargs.values())))
        try:
            return fn(*args, **kwargs)
        finally:
            frames.pop()
    return grouped


class _Block:
    """``fg.composite("name")``: a context manager, or a decorator naming the group."""

    def __init__(self, label):
        self.label = label

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError("fg.composite(name) decorates a function or opens a `with` block")
        return _wrap(fn, self.label)

    def __enter__(self):
        _frames().append(_Frame(self.label, (), self))
        return self

    def __exit__(self, *exc):
        # this thread's innermost frame of this block: one block object may be open in
        # several threads at once (a module-level ``attention = fg.composite(...)``), and
        # a list of open frames on the block popped another thread's, leaving this
        # thread's group open for every node it built afterwards
        frames = _frames()
        for k in range(len(frames) - 1, -1, -1):
            if frames[k].block is self:
                del frames[k]
                break
        return False

    def __repr__(self):
        return f"<fg.composite {self.label!r}>"


def composite(fn_or_name):
    """Group the nodes a function builds: ``@fg.composite`` (named after the function),
    ``@fg.composite("name")``, or ``with fg.composite("name"):`` around any code.

    Each call (or ``with`` block) is one group, named ``name``, ``name_1`` … in its
    graph; groups nest. ``fg.viz.draw`` shows a group as one box labelled with the name,
    with its output's value and v̄; ``expand=True`` or ``expand=["name"]`` opens it.
    """
    if callable(fn_or_name):  # a function, or an op (whose name is .name)
        label = getattr(fn_or_name, "__name__", None) or getattr(fn_or_name, "name", None)
        return _wrap(fn_or_name, label or type(fn_or_name).__name__)
    if not isinstance(fn_or_name, str) or not fn_or_name:
        raise ValueError(f"a composite's name must be a non-empty string: {fn_or_name!r}")
    return _Block(fn_or_name)
