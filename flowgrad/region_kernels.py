"""numba compilation of region loops (regions.py), cached by their source.

Imported only when a program with a region is first called (importing numba costs
~0.5 s). Two caches: in process, one compiled function per source text (the same
structure in another program is not compiled again); on disk, numba's own cache,
which needs the function to live in a file — so each source is written once as a
module ``r_<hash>.py`` under ``cache_dir()`` and imported from there. Without a
writable directory the source is compiled in memory (no disk cache).

Compilation uses numba's numpy error model (x/0 gives inf/nan, as numpy, instead of
raising) and no fastmath (IEEE NaN/inf, no reassociation, no FMA contraction).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import threading
import types

import numba

from .ops import scalar_kernels as _sk

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


def cache_dir():
    """Where region modules (and numba's cache of them) are kept: $FLOWGRAD_CACHE_DIR,
    else ~/.cache/flowgrad/regions; None when it cannot be written (no disk cache)."""
    base = os.environ.get("FLOWGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "flowgrad", "regions")
    try:
        os.makedirs(base, exist_ok=True)
        return base if os.access(base, os.W_OK) else None
    except OSError:
        return None


DISK_CACHE = True     # False: compile every loop in memory (no files written)


def get_kernel(source: str, key: str):
    """The numba function ``kernel`` of a region module's source (compiled for its
    argument types at its first call, as numba does)."""
    fn = _compiled.get(source)
    if fn is not None:
        return fn
    with _lock:
        fn = _compiled.get(source)
        if fn is None:
            fn = _from_file(source, key) if DISK_CACHE else None
            if fn is None:
                ns = {"__name__": f"flowgrad_region_{key}"}
                exec(compile(source, f"<flowgrad region {key}>", "exec"), ns)
                fn = numba.njit(**_OPTIONS)(ns["kernel"])
            _compiled[source] = fn
    return fn


def _from_file(source, key):
    """The kernel from ``r_<key>.py`` in the cache directory (written if absent, or if it
    holds other text), jitted with numba's disk cache; None without a directory."""
    base = cache_dir()
    if base is None:
        return None
    path = os.path.join(base, f"r_{key}.py")
    try:
        with open(path, encoding="utf-8") as f:
            same = f.read() == source
    except OSError:
        same = False
    try:
        if not same:                    # write atomically: other processes may read it
            fd, tmp = tempfile.mkstemp(dir=base, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(source)
            os.replace(tmp, path)
        name = f"flowgrad_region_{key}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules.setdefault(name, module)
    except OSError:
        return None
    return numba.njit(**{**_OPTIONS, "cache": True})(module.kernel)
