"""The backend interface: an array namespace ``xp`` plus host conversion and dtype policy.

A backend is small on purpose: ops compute with ``backend.xp`` only, so adding
one is a file that names its namespace and how arrays cross to and from the host.

Four hooks let a backend shape how a Program runs without the scheduler knowing
which backend it is (each has a do-nothing default here):

* ``unsupported_ops`` / :meth:`check_ops` — ops the namespace cannot compute
  (dask has no ``det``); :meth:`check_ops` raises ``BackendError`` naming the op
  and the node when a program is compiled, not halfway through a run.
* :meth:`read_variable` — a variable's value as an array of this backend. A
  backend whose arrays live elsewhere (a GPU) stores the converted array back
  into the variable, so the next read costs nothing.
* :meth:`finish` — the list of output values of one call, as handed to the
  caller (dask computes them together, in one pass over the data).
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import BackendError


class Backend:
    name = "abstract"
    xp = None
    #: the float dtype a backend prefers when the user states none
    default_float = np.dtype(np.float64)
    #: {op name: why it cannot run here} — checked by :meth:`check_ops` at compile time
    unsupported_ops: dict = {}
    # -- declared capabilities: what executors may do here (they never ask which backend
    #    it is; flowgrad/engine/codegen.py, scalar_plan.py, optim.py read these)
    #: the elementwise-chain fuser generated code may use: "numexpr" (host arrays, for
    #: large operands), "elementwise" (a device ElementwiseKernel, cupy's), or None
    fusion: str | None = None
    #: pointwise regions may run as compiled numba loops over host arrays
    regions = False
    #: a program of 0-d float64 values may run on Python floats (values are host numpy)
    scalar_floats = False
    #: numpy-specialised kernels (flowgrad/engine/numpy_kernels.py) may replace generic ones
    lean_kernels = False
    #: a generated binder may accept feeds by testing ``type(v) is numpy.ndarray``
    fast_feeds = False
    #: values are numpy arrays a trainer may update in place (``out=``)
    in_place = False
    #: values are lazy task graphs, computed at the end of a run (a profile times the
    #: tasks through dask's local profiler, not the steps that only build them)
    lazy_tasks = False
    #: how a loop node (scan, while_loop, cond) runs here: "direct", its body's program
    #: called once per iteration on this backend's arrays; or "task", the whole loop as
    #: one task of a lazy backend's graph (dask), computed on host numpy arrays (:meth:`task`)
    loops = "direct"

    def asarray(self, value, dtype=None):
        """``value`` as an array of this backend (moved to its device once)."""
        if not self.owns(value):
            value = host(value)
        return self.xp.asarray(value, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """An array of this backend brought back to the host."""
        return np.asarray(array)

    def owns(self, array) -> bool:
        """Whether ``array`` already lives on this backend (no conversion needed)."""
        return False

    # -- hooks the Program calls ----------------------------------------------------
    def check_ops(self, graph, order) -> None:
        """Raise ``BackendError`` if a node of ``order`` (ids of ``graph``) uses an op
        this backend cannot compute. Called once, when a program is compiled."""
        if not self.unsupported_ops:
            return
        data = graph.handles
        for nid in order:
            op = data[nid].op
            if op is not None and op.name in self.unsupported_ops:
                raise BackendError(
                    f"the {self.name} backend cannot run op {op.name!r} (node "
                    f"{data[nid].name!r}): {self.unsupported_ops[op.name]}")

    def read_variable(self, node):
        """The current value of variable ``node`` as an array of this backend."""
        return self.asarray(node.more["value"])

    def finish(self, values: list) -> list:
        """The output values of one call as the caller receives them."""
        return values

    def task(self, fn, args, shapes, dtypes) -> list:
        """For a backend whose ``loops`` is "task": ``fn(*args)`` as one task of its lazy
        graph, computed on host numpy arrays; one lazy array per entry of ``shapes`` and
        ``dtypes`` (None entries stay None)."""
        raise BackendError(f"the {self.name} backend runs no host tasks "
                           f"(its loops are {self.loops!r})")

    def __repr__(self):
        return f"<flowgrad backend {self.name}>"


def host(value):
    """``value`` as something numpy can read: an array of another backend (cupy's,
    dask's) goes through that backend's ``to_numpy``; anything else is left alone."""
    if isinstance(value, (np.ndarray, np.generic)) or not hasattr(value, "shape"):
        return value
    from . import to_numpy
    return to_numpy(value)
