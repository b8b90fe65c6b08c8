"""numba compilation of region loops (regions.py), cached by their source.

Imported only when a program with a region is first called (importing numba costs
~0.5 s). Two caches: in process, one compiled function per source text (the same
structure in another program is not compiled again); on disk, numba's own cache,
which needs the function to live in a file — region_cache.py keeps it, and uses only
files no other user can have written. Without a trusted, writable directory the
source is compiled in memory (no disk cache).

Compilation uses numba's numpy error model (x/0 gives inf/nan, as numpy, instead of
raising) and no fastmath (IEEE NaN/inf, no reassociation, no FMA contraction).
"""
from __future__ import annotations

import threading
import types

import numba

from . import region_cache
from ..ops import scalar_kernels as _sk
from .region_cache import cache_dir  # noqa: F401  (where the disk cache is; None: none)

_OPTIONS = dict(error_model="numpy", cache=False, nogil=True)

# the scalar kernels that loops call, compiled as numba functions (the same code the
# scalar path runs on Python floats); a region's module imports them as jit_<name>.
# Each sees the jitted versions of the others (relu calls _maximum): numba resolves a
# function's globals, so it is rebuilt over a namespace where those names are jitted.
_HELPERS = ("_sign", "_maximum", "_minimum", "_tie_weight", "_relu")
_jit_ns = dict(vars(_sk))
for _name in _HELPERS:
    _fn = getattr(_sk, _name)
    _fn = types.FunctionType(_fn.__code__, _jit_ns, _name, _fn.__defaults__)
    _jit_ns[_name] = globals()[f"jit{_name}"] = numba.njit(error_model="numpy")(_fn)

_compiled: dict[str, object] = {}
_lock = threading.Lock()


DISK_CACHE = True     # False: compile every loop in memory (no files written)


def _jit(fn):
    return numba.njit(**_OPTIONS)(fn)


def is_compiled(source: str) -> bool:
    """Whether the loop of region source ``source`` has been compiled in this process."""
    return source in _compiled


def get_kernel(source: str, key: str):
    """The numba function ``kernel`` of a region module's source (compiled for its
    argument types at its first call, as numba does)."""
    fn = _compiled.get(source)
    if fn is not None:
        return fn
    with _lock:
        fn = _compiled.get(source)
        if fn is None:
            fn = region_cache.cached_kernel(source, key, _jit) if DISK_CACHE else None
            if fn is None:
                ns = {"__name__": f"flowgrad_region_{key}"}
                exec(compile(source, f"<flowgrad region {key}>", "exec"), ns)
                fn = _jit(ns["kernel"])
            _compiled[source] = fn
    return fn
