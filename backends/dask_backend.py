"""The dask backend: ``dask.array`` as the namespace, for data larger than memory or
spread over a ``dask.distributed`` cluster. Needs ``pip install flowgrad[dask]``.

A program builds one dask graph per call from the ops' forward functions (they are
written against ``xp``, so they build dask tasks instead of computing) and then
computes **all its outputs together**, so the loss and every gradient share one pass
over the data. Results come back as numpy arrays; ``DaskBackend(lazy=True)`` returns
the lazy dask arrays instead (``fg.to_numpy`` computes them). With a
``dask.distributed.Client`` active, the computation runs on its workers.

* **values** are numpy's, bit for bit, where a step is elementwise or reads one chunk;
  a step that adds across chunks (``sum``, ``mean``, ``var``, ``matmul``/``einsum``
  contractions, ``cumsum``, ``prod``, and every gradient that sums a broadcast back) adds
  chunk by chunk, another order of summation than numpy's pairwise one: it agrees within
  that rounding (about n·eps·Σ|x| for n terms; tests/test_backends.py holds the dask
  programs to rtol 1e-9 in float64 and 2e-4 in float32), dtypes and shapes exactly.
  A float16 sum (``sum``, ``mean``, a gradient summing a broadcast back) adds in float32
  and rounds once, as numpy's one pass along contiguous axes does: dask's float16 partial
  sums overflowed per chunk (ops/base.py's ``summed``).
* **feeds**: dask arrays are used as they are (chunked however you made them: from
  zarr, parquet, ``da.from_array``, persisted on a cluster); numpy arrays are wrapped
  with ``da.from_array`` using ``chunks`` (``"auto"``, dask's default; or an int:
  that many rows per chunk, other axes whole).
* **variables** stay small numpy arrays on the client: an optimizer computes its new
  values and state (momentum, Adam's moments) in one ``dask.compute`` at the end of
  each step (:meth:`DaskBackend.materialize`), so ``w.value`` is numpy after every step
  and no step drags the history of earlier steps along in its graph. A dask array
  assigned to a variable by hand is computed when the variable is next read.
* **loops** (``fg.scan``, ``while_loop``, ``fori_loop``, ``cond`` and the derivative
  loops) run as ONE task each (:meth:`DaskBackend.task`): the task gets its inputs'
  chunks concatenated into numpy arrays and runs the loop as the numpy backend does
  (same values, same dtypes, bit for bit); each result is a one-chunk dask array.
  Under a scheduler in other processes (``dask.distributed``), a loop runs in the
  calling process instead, on its inputs computed by the cluster.
* **errors**: a task that fails when dask computes it (a loop's ``max_iters``, a label
  or index out of range, checked on its whole array, an Embedding's index check) raises the
  numpy backend's ``fg.RunError``, naming the node and the user's line, on any
  scheduler: a task run in another process sends its failure back in words that become
  that RunError again here (flowgrad/engine/lazy_errors.py). A failure of a task of
  dask's own (``1/0`` under ``np.errstate(divide="raise")``) is that RunError too where
  flowgrad computes a call's outputs (``Program.finish``): the same program is run on
  numpy with the same feeds to find the step, only once the call has failed (and only
  where the fed dask arrays hold at most ``lazy_errors.RERUN_BYTES``). ``inv`` and
  ``cholesky`` run numpy's kernel per block (each holds whole matrices), ``solve`` as
  one task: numpy's values, its NaN for a singular matrix, cholesky's failure as its
  node's RunError.
* **empty arrays**: dask's ``max`` of an array with no entries is not numpy's (an
  empty result for an empty reduced axis, a failure for a full one); the ``max``
  kernel (ops/reductions.py's ``max_of``, also under ``min``, ``logsumexp``, softmax
  and its cross-entropy) gives numpy's answer and numpy's ValueError, at its own step.
* **indexing** dask.array does not do as numpy (two index arrays; an array beside an
  int or ``None``, where dask puts the array's axes elsewhere than numpy) is one task
  reading x whole (ops/indexing.py's ``_gather_on_host``), as its scatter-add already is.
* **random draws** (``fg.random``) come from dask.array's own generator, in the chunks
  of their ``like=`` array where the shapes agree: a seed replays the same draws for
  the same chunking (and ``lazy=True`` computes them once per call), but a draw differs
  from numpy's for the same seed, and from dask's own under another chunking.
* **ops dask lacks** (``det``, ``logdet``, ``eigvalsh`` … — ``dask.array.linalg`` has no
  determinant or eigensolver) raise ``fg.BackendError`` naming the op at compile time.
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import BackendError

from .base import Backend, host

_NO_LINALG = ("dask.array.linalg has no {what}; compute this part with the numpy "
              "backend, or on a small array brought home with fg.to_numpy")


class DaskBackend(Backend):
    name = "dask"
    lazy_tasks = True
    loops = "task"
    unsupported_ops = {
        "det": _NO_LINALG.format(what="determinant"),
        "slogdet": _NO_LINALG.format(what="determinant"),
        "logdet": _NO_LINALG.format(what="determinant"),
        "eigvalsh": _NO_LINALG.format(what="symmetric eigensolver"),
        "eigh": _NO_LINALG.format(what="symmetric eigensolver"),
        "eigh_top": _NO_LINALG.format(what="symmetric eigensolver"),
        "eig": _NO_LINALG.format(what="eigensolver"),
        "pinv": _NO_LINALG.format(what="pseudo-inverse"),
        "matrix_power": _NO_LINALG.format(what="matrix power"),
    }

    def __init__(self, chunks="auto", lazy=False):
        try:
            import dask
            import dask.array as da
        except Exception as e:
            raise BackendError(f"the dask backend needs dask.array, which could not be "
                               f"imported ({type(e).__name__}: {e}); install it with "
                               f"`pip install flowgrad[dask]`") from None
        self.xp, self._dask, self._Array = da, dask, da.Array
        self.chunks, self.lazy = chunks, bool(lazy)

    def _chunks_for(self, shape):
        if isinstance(self.chunks, (int, np.integer)) and shape:
            return (int(self.chunks),) + (-1,) * (len(shape) - 1)
        return self.chunks if shape else ()

    def asarray(self, value, dtype=None):
        if isinstance(value, self._Array):
            return value if dtype is None or value.dtype == dtype else value.astype(dtype)
        arr = np.asarray(host(value), dtype=dtype)
        # name=False: a fresh name instead of hashing the whole array on every call
        return self.xp.from_array(arr, chunks=self._chunks_for(arr.shape), name=False)

    def to_numpy(self, array) -> np.ndarray:
        return np.asarray(self._compute(array)[0])

    def owns(self, array) -> bool:
        return isinstance(array, self._Array)

    def read_variable(self, node):
        value = node.more["value"]
        if isinstance(value, self._Array):  # an optimizer's lazy update: compute it once
            value = node.more["value"] = np.asarray(self._compute(value)[0])
        return self.asarray(value)

    def materialize(self, tree):
        """``tree`` (nested lists, tuples and dicts of arrays) with every dask array in it
        computed, all in one pass: an optimizer's new values and state, which are small."""
        return _arrays(self._compute(tree)[0])

    def task(self, fn, args, shapes, dtypes, inputs=False) -> list:
        """``fn(*args)`` as ONE task of the dask graph. ``args``' dask arrays reach it as
        numpy arrays (their chunks concatenated: a loop reads its inputs whole), other
        values as they are. ``fn`` returns one array (or None) per entry of ``shapes``;
        each becomes a one-chunk dask array of that shape and of ``dtypes``' dtype; a
        None shape (a result nobody reads) stays None. ``pure=False``: the task's key is
        fresh, so no argument is hashed and a body's random draws are never merged.

        ``fn`` runs now instead, on its arguments computed now (errors are raised here),
        and its results are wrapped as dask arrays, where a task cannot serve: a shape
        holds a NaN (a length known only once ``fn`` has run: a while loop's trip
        count; a dask array must know its shape before it is computed), or the active
        scheduler sends tasks to other processes (a ``dask.distributed`` cluster, the
        "processes" scheduler), which ``fn`` cannot travel to (a loop's traced bodies
        and compiled programs do not pickle).

        A task that fails when computed raises the RunError the numpy backend raises for
        the step whose kernel made it (its node and line: flowgrad/engine/lazy_errors.py);
        ``inputs``: ``args`` are that step's input values, which the report summarizes."""
        n = len(shapes)
        if n == 0:
            return []
        from flowgrad.engine.lazy_errors import guard
        if _pickles_tasks() or any(s is not None and any(d != d for d in s)
                                   for s in shapes):
            # guarded here too: the same report as the task's (declared input shapes
            # unless ``inputs``), whichever scheduler is active
            done = guard(fn, inputs)(*self._compute(*args))
            parts = [self._dask.delayed(v, pure=False) for v in done]   # handed out as is
            shapes = [s if s is None else np.shape(v) for s, v in zip(shapes, done)]
        else:
            parts = self._dask.delayed(guard(fn, inputs), nout=n, pure=False)(*args)
        return [None if s is None else
                self.xp.from_delayed(p, s, dtype=t, meta=np.empty((0,) * len(s), t))
                for p, s, t in zip(parts, shapes, dtypes)]

    def _compute(self, *args) -> tuple:
        """``dask.compute(*args)``; a guarded task's failure that the scheduler wrapped
        (flowgrad/engine/lazy_errors.py's ``unwrapped``) raised as its own RunError."""
        try:
            return self._dask.compute(*args)
        except Exception as exc:
            from flowgrad.engine.lazy_errors import unwrapped
            inner = unwrapped(exc)
            if inner is exc:
                raise
            raise inner from inner.__cause__

    def finish(self, values: list) -> list:
        if self.lazy:
            return values
        lazy = [k for k, v in enumerate(values) if isinstance(v, self._Array)]
        if lazy:
            done = self._compute(*[values[k] for k in lazy])
            values = list(values)
            for k, v in zip(lazy, done):
                values[k] = v
        return values

    def __repr__(self):
        return f"<flowgrad backend dask (chunks={self.chunks!r}{', lazy' if self.lazy else ''})>"


def _pickles_tasks() -> bool:
    """Whether the scheduler dask would use now runs tasks in other processes."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler
    get = get_scheduler()
    return get is not None and get not in (dask.threaded.get, dask.local.get_sync)


def _arrays(tree):
    """``tree`` with numpy scalars (what dask computes for 0-d arrays) as 0-d arrays."""
    if isinstance(tree, (list, tuple)):
        return type(tree)(_arrays(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _arrays(v) for k, v in tree.items()}
    return np.asarray(tree) if isinstance(tree, np.generic) else tree
