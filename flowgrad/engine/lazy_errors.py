"""A lazy backend's task failures (dask) reported as the numpy backend reports them.

On numpy a kernel that fails raises while its step runs, and the executor reports it as
a RunError naming the node, its op, its inputs and the user's line
(executors/base.py's ``raise_step_error``). On a lazy backend (``Backend.lazy_tasks``)
a kernel only builds tasks: a function it hands to the task graph (a loop run as one
task, a check made block by block) fails when the outputs are computed, after every
step has run and outside any executor. So that such a failure is the same RunError:

* ``naming(plan, kernels)`` wraps each kernel of a plan on a lazy backend so that its
  node is known to this thread while it runs (``Plan.kernels`` does this; numpy's
  kernels are never wrapped: no cost on the eager paths);
* a kernel wraps the function it hands to the task graph with ``guard``: called later
  (on any thread, or in the caller's ``compute``), the function's exception is raised
  as ``run_error(node, exc, ...)``, the report the numpy backend gives (same class,
  same message, the original as ``__cause__``);
* a later kernel that computes such a task now (an input it must read on the host)
  lets that RunError through unwrapped (``reported``: executors/base.py), so the
  error names the step that failed, as numpy's does.

A guarded function pickles as the bare function (a node does not travel to another
process): under a scheduler in other processes its failure is the bare exception.
"""
from __future__ import annotations

import functools
import threading

__all__ = ["naming", "guard", "building", "reported"]

_STATE = threading.local()


def building():
    """``(graph, node id)`` of the step whose kernel this thread runs now, or None."""
    return getattr(_STATE, "step", None)


def naming(plan, kernels) -> list:
    """``kernels`` (one per step of ``plan``), each run with its step's node made known
    to this thread (``building``), for a lazy backend's ``guard``."""
    graph = plan.graph
    return [_Named(fn, graph, st.node) for st, fn in zip(plan.made_steps(), kernels)]


class _Named:
    """A kernel that marks its step as the one being built while it runs."""
    __slots__ = ("fn", "step")

    def __init__(self, fn, graph, nid):
        self.fn, self.step = fn, (graph, nid)

    def __call__(self, *args):
        before = getattr(_STATE, "step", None)
        _STATE.step = self.step
        try:
            return self.fn(*args)
        finally:
            _STATE.step = before


def guard(fn, inputs=False):
    """``fn`` made to raise its failure as the RunError of the step being built now (its
    node, op and user's line); ``fn`` itself where no step is being built. ``inputs``:
    ``fn``'s arguments are that step's input values, in order, and the report
    summarizes them (shape, dtype, range) as numpy's does; else it gives their
    declared shapes and dtypes."""
    step = building()
    if step is None or step[0] is None:
        return fn
    return _Guarded(fn, step, bool(inputs))


def reported(exc) -> bool:
    """Whether ``exc`` is a guarded task's RunError: it names the step that failed
    already. A later kernel that computes its inputs now (dask) passes it on as it is,
    as numpy would have stopped at that step, never wraps it as its own failure."""
    return getattr(exc, "lazy_step", None) is not None


def _bare(fn):
    return fn


class _Guarded:
    __slots__ = ("fn", "step", "inputs", "__name__")

    def __init__(self, fn, step, inputs):
        self.fn, self.step, self.inputs = fn, step, inputs
        inner = fn
        while isinstance(inner, functools.partial):
            inner = inner.func
        # the task graph names a task after its function: keep the wrapped one's name
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)

    def __call__(self, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except Exception as exc:
            from ..diagnose import run_error
            graph, nid = self.step
            node = graph.node(nid)
            values = list(args) if self.inputs else [None] * len(node.inputs)
            err = run_error(node, exc, values)
            err.lazy_step = nid
            raise err from exc

    def __reduce__(self):
        return _bare, (self.fn,)
