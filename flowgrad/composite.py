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

from .graph import Node, _state


def _frames() -> list:
    if not hasattr(_state, "groups"):
        _state.groups = []
    return _state.groups


class _Frame:
    """One open group. Its name is taken lazily, per graph, when its first node is built
    there (a function may build into a graph other than the default one)."""

    def __init__(self, label, args):
        self.label = label
        self.args = args
        self._names = {}

    def name_in(self, graph) -> str:
        name = self._names.get(id(graph))
        if name is None:
            name = self._names[id(graph)] = _register(graph, self.label, self.args)
        return name


def _register(graph, label, args) -> str:
    """A fresh group name in ``graph`` and its record: {name: {"label", "args"}}."""
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


class composite:
    """Use as a decorator (``@fg.composite`` or ``@fg.composite("name")``) or as a
    context manager (``with fg.composite("name"):``)."""

    def __init__(self, fn_or_name=None):
        if callable(fn_or_name):
            self._fn, self._label = fn_or_name, fn_or_name.__name__
            functools.update_wrapper(self, fn_or_name)
        else:
            if fn_or_name is not None and (not isinstance(fn_or_name, str) or not fn_or_name):
                raise ValueError(f"a composite's name must be a non-empty string: {fn_or_name!r}")
            self._fn, self._label = None, fn_or_name
        self._open = []

    def __call__(self, *args, **kwargs):
        if self._fn is None:
            if len(args) == 1 and callable(args[0]) and not kwargs:  # @fg.composite("name")
                wrapped = composite(args[0])
                wrapped._label = self._label or args[0].__name__
                return wrapped
            raise TypeError("fg.composite(name) decorates a function or opens a `with` block")
        frames = _frames()
        frames.append(_Frame(self._label, args + tuple(kwargs.values())))
        try:
            return self._fn(*args, **kwargs)
        finally:
            frames.pop()

    def __get__(self, obj, owner=None):  # decorated methods bind like functions
        return self if obj is None else functools.partial(self.__call__, obj)

    def __enter__(self):
        if self._fn is not None:
            raise TypeError("use a decorated function by calling it, not in a `with` block")
        frame = _Frame(self._label or "composite", ())
        _frames().append(frame)
        self._open.append(frame)
        return self

    def __exit__(self, *exc):
        frame = self._open.pop()
        frames = _frames()
        if frames and frames[-1] is frame:
            frames.pop()
        return False

    def __repr__(self):
        return f"<fg.composite {self._label!r}>"
