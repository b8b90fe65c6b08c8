"""Name scopes for layers: a fresh one per layer (dense, dense_1 …), re-entered on reuse."""
from __future__ import annotations

import contextlib
import threading
import weakref

from ..errors import ArgumentError
from ..ops.base import at_user_line

#: graph -> the scope paths its layers have claimed (a side table: nothing is written
#: onto the Graph object)
_CLAIMED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# a claim is a test and an add: two threads' layers must not both take "dense"
_CLAIM_LOCK = threading.Lock()


def unique_scope(graph, base: str) -> tuple:
    """The scope path ``current scope + (base,)``, suffixed _1, _2 … until no layer
    and no node of ``graph`` uses it yet."""
    if not isinstance(base, str) or not base or "/" in base:
        raise ArgumentError(f"a layer name must be non-empty and contain no '/': {base!r}"
                            + at_user_line())
    outer = graph.scope          # this thread's (graph.py: scopes are per thread)
    with _CLAIM_LOCK:
        taken = _CLAIMED.setdefault(graph, set())
        k = 0
        while True:
            name = base if k == 0 else f"{base}_{k}"
            path = outer + (name,)
            if path not in taken and not graph.prefix_in_use("/".join(path)):
                taken.add(path)
                return path
            k += 1


@contextlib.contextmanager
def in_scope(graph, path: tuple):
    """Build into ``graph`` under exactly the scope ``path`` (whatever scope is open now)."""
    with graph.scope_path(path), graph:
        yield
