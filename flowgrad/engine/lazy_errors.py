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

A guarded function sent to another process (dask's "processes" scheduler, a
``dask.distributed`` cluster) cannot take its node along; it pickles as the function
plus a ``Where``: plain words (the node's description and declared inputs, as
``run_error`` writes them), the node's id and a key that names its graph in this
process (``_GRAPHS``, weak: a graph nobody holds is let go). There the function's
failure is raised as ``TaskFailed``, a RunError carrying that Where and the original;
it pickles so that unpickling it back in this process (dask does, to re-raise it)
gives the very RunError the threaded scheduler gives: same class, same message (its
input lines give declared shapes and dtypes, as a block check's report does), the
original as ``__cause__``, the node as ``.node`` -- whether flowgrad or the user's own
``dask.compute`` fetches the value. Only where the graph is gone (or the report lands
in another process) is ``.node`` None; the message still names the node, its op and
the user's line. An original that does not survive pickling travels as a
RuntimeError holding its class name and message. A loop's task (``guard(fn,
inputs=True)``, whose report summarizes its input values) never travels: under such a
scheduler the dask backend runs it in this process (``DaskBackend.task``); one that
did would report declared shapes instead. Without tblib, dask's processes scheduler
re-raises a failure wrapped in its RemoteException: ``unwrapped`` finds the RunError
in it, and the dask backend raises that where it computes (a user's own
``dask.compute`` gets dask's wrapper, an instance of the same classes, its message
followed by the worker's traceback).

Every other failure of a lazy backend's compute (a task of dask's own: ``1/0`` under
``np.errstate(divide="raise")``, cholesky of a matrix that is not positive definite)
carries no step. Where flowgrad computes a call's outputs (``Program.finish``),
``raise_located`` finds the step: it runs the same program on the numpy backend with the
same feeds (failure path only; the numpy backend names the step whose kernel raised) and
raises that step's RunError with the lazy backend's exception as ``__cause__`` --
numpy's own report (its inputs' values summarized) when numpy failed with the same
class, else ``run_error`` for that node and the lazy backend's exception. Where numpy
computes them without failing, the RunError names the program's outputs instead of a
node (``.node`` None). A user's own ``dask.compute`` of
``lazy=True`` outputs gets dask's exception as it is: only guarded tasks carry a step.
"""
from __future__ import annotations

import copy
import functools
import itertools
import os
import pickle
import threading
import weakref
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ..errors import RunError

__all__ = ["naming", "guard", "building", "reported", "unwrapped", "Where", "TaskFailed",
           "lazy_backend", "is_lazy", "raise_located", "checked_whole"]

_STATE = threading.local()
_LOCK = threading.Lock()
_GRAPHS: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_KEYS: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()
_COUNT = itertools.count(1)


def lazy_backend(xp):
    """The backend computing with namespace ``xp`` when its values are lazy task graphs
    (the declared ``Backend.lazy_tasks``: dask), else None (numpy, cupy, a namespace no
    backend computes with). Kernels ask this, never an array's own methods."""
    if xp is np:
        return None
    from ..backends import backend_of
    from ..errors import FlowgradError
    try:
        backend = backend_of(xp)
    except FlowgradError:
        return None
    return backend if backend.lazy_tasks else None


def is_lazy(xp, value) -> bool:
    """Whether ``value`` is an array of a lazy backend computing with ``xp`` (a task graph
    not computed yet: a check on it must be made when it is, block by block)."""
    backend = lazy_backend(xp)
    return backend is not None and backend.owns(value)


def checked_whole(backend, array, check, *args, on=None, after=()):
    """``array`` (of the lazy ``backend``) made to depend on ``check(values, *args)``,
    run in ONE task (``Backend.task``: a failure is the step's RunError) on ``on``: a
    small lazy summary of ``array`` from which ``check`` raises numpy's error for the
    whole array (its first bad entry in C order, the range of all its entries), else
    ``array`` itself, read whole. Checked block by block instead, the report named one
    block's entries, whichever block failed first (an index 4 or 3 where numpy names
    9), varying from call to call. ``after``: lazy arrays (earlier checks' results)
    the check waits for, so that checks fail in numpy's order."""
    fn = functools.partial(_whole_check, check, args)
    done = backend.task(fn, [array if on is None else on, *after], [()], [np.bool_])[0]
    return array.map_blocks(_after, done, dtype=array.dtype)


def _whole_check(check, args, whole, *earlier):
    check(np.asarray(whole), *args)
    return (np.asarray(True),)          # Backend.task: one value per result


def _after(block, done):
    """``block`` as it is, once ``done`` (the check) has been computed."""
    return block


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


def unwrapped(exc):
    """The guarded task's RunError that a scheduler wrapped as ``exc`` (dask's
    "processes" scheduler without tblib re-raises a task's failure as a RemoteException
    holding it as ``.exception``, its message followed by the worker's traceback), or
    ``exc`` itself."""
    inner = vars(exc).get("exception") if hasattr(exc, "__dict__") else None
    return inner if isinstance(inner, RunError) and reported(inner) else exc


class Where(NamedTuple):
    """A guarded step in words that travel: the process and key that name its graph
    (``_GRAPHS``), its node id, and ``run_error``'s head and input lines for it."""
    pid: int
    key: int
    nid: int
    head: str
    lines: str


def _task_name(fn) -> str:
    """The task graph names a task after its function: a wrapper keeps the wrapped
    function's name (through partials)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


class _Guarded:
    __slots__ = ("fn", "step", "inputs", "__name__", "where")

    def __init__(self, fn, step, inputs):
        self.fn, self.step, self.inputs, self.where = fn, step, inputs, None
        self.__name__ = _task_name(fn)

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
        # to another process: the function and its step in words (the node stays here)
        if self.where is None:
            self.where = _where(*self.step)
        return _Remote, (self.fn, self.where)


def _where(graph, nid) -> Where:
    from ..diagnose import describe_node, input_lines
    node = graph.node(nid)
    with _LOCK:
        key = _KEYS.get(graph)
        if key is None:
            key = _KEYS[graph] = next(_COUNT)
            _GRAPHS[key] = graph
    return Where(os.getpid(), key, nid, describe_node(node),
                 input_lines(node, [None] * len(node.inputs)))


class _Remote:
    """A guarded function in another process: its failure is raised as TaskFailed."""
    __slots__ = ("fn", "where", "__name__")

    def __init__(self, fn, where):
        self.fn, self.where = fn, where
        self.__name__ = _task_name(fn)

    def __call__(self, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except Exception as exc:
            failed = TaskFailed(self.where, _portable(exc))
        # raised outside the handler, the portable original as its cause: tblib (which
        # dask installs) pickles an exception's chain, and sets it again on arrival
        failed.__cause__ = failed.original
        raise failed

    def __reduce__(self):
        return _Remote, (self.fn, self.where)


class TaskFailed(RunError):
    """A guarded task's failure in another process (``where``: its step in words,
    ``original``: the exception). Unpickled, it is the RunError for that step."""

    def __init__(self, where, original):
        from ..diagnose import report_error
        super().__init__(str(report_error(where.head, original, where.lines)))
        self.where, self.original, self.lazy_step = where, original, where.nid

    def __reduce__(self):
        return _arrived, (self.where, self.original)


def _arrived(where, original):
    """A TaskFailed back in a process: the RunError ``run_error`` gives for its node,
    found by ``where``'s key when this is the process that sent the task and the graph
    is alive; else the same words without the node."""
    from ..diagnose import report_error, run_error
    graph = _GRAPHS.get(where.key) if where.pid == os.getpid() else None
    node = None
    if graph is not None:
        try:
            node = graph.node(where.nid)
        except (KeyError, IndexError):
            node = None
    if node is not None:
        err = run_error(node, original, [None] * len(node.inputs))
    else:
        err = report_error(where.head, original, where.lines)
    err.lazy_step = where.nid
    err.__cause__ = original
    return err


def _portable(exc):
    """``exc`` if it can travel back (dask pickles it here and unpickles it there): it
    pickles, and its reduction rebuilds it (``copy.deepcopy`` runs the same
    reconstruction without unpickling any bytes); else a RuntimeError naming its class
    and message."""
    try:
        pickle.dumps(exc)
        copy.deepcopy(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def raise_located(program, exc, args, kwargs):
    """Raise ``exc``, raised while ``program``'s backend computed the outputs of a call
    on the feeds ``args``/``kwargs``, as the numpy backend's RunError for the step that
    failed (``exc`` its ``__cause__``). A FlowgradError (a guarded task's RunError, a
    FeedError) names its failure already and is raised as it is."""
    from ..errors import FlowgradError
    if isinstance(exc, FlowgradError):
        raise exc
    found = _numpy_failure(program, args, kwargs)
    if found is None:
        err = _unlocated(program, exc)
    elif isinstance(exc, type(found.__cause__)):
        err = found        # numpy's own report of the same failure: it summarizes the inputs
    else:
        from ..diagnose import run_error
        err = run_error(found.node, exc, [None] * len(found.node.inputs))
    raise err from exc


#: the most bytes of fed lazy arrays (dask's) the numpy rerun of a failed call reads
#: into memory; beyond it (data larger than memory is what dask is for) no step is named
RERUN_BYTES = 1 << 28


def _numpy_failure(program, args, kwargs):
    """The RunError naming a node that the numpy backend raises for ``program``'s
    outputs on these feeds, or None (it computes them, fails without naming a step --
    a feed it cannot take, memory -- or the fed lazy arrays exceed ``RERUN_BYTES``).
    Its error state is the caller's, as the tasks' was (dask's local schedulers run
    them in the caller's context)."""
    from ..errors import RunError
    from .program import Program
    if not _lazy_feeds_fit(program.backend, list(args) + [kwargs]):
        return None
    try:
        twin = Program(program.outputs, "numpy", codegen=False)
        twin.reference_call(args, kwargs)     # writes no state: the caller's call does
    except RunError as err:
        return err if err.node is not None and err.__cause__ is not None else None
    except Exception:
        return None
    return None


def _lazy_feeds_fit(backend, feeds) -> bool:
    """Whether the lazy arrays among ``feeds`` (values, or dicts, lists and tuples of
    them, one level deep) hold at most ``RERUN_BYTES`` (an unknown length: not)."""
    total = 0.0
    for feed in feeds:
        values = feed.values() if isinstance(feed, Mapping) else \
            feed if isinstance(feed, (list, tuple)) else [feed]
        for v in values:
            if backend.owns(v):
                total += float(v.nbytes)       # NaN for an unknown length
    return total <= RERUN_BYTES


def _unlocated(program, exc):
    """The RunError for a failure no step of the numpy backend reproduces: it names the
    program's outputs and the backend."""
    from ..diagnose import describe_node, report_error
    names = ", ".join(describe_node(o) for o in program.outputs)
    head = f"computing the outputs ({names}) on the {program.backend.name} backend"
    return report_error(head, exc, "    (no step is named: the numpy backend, run on "
                                    "these feeds, did not fail at a step)")
