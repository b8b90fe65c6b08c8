"""Backends: numpy (CPU), cupy (NVIDIA GPU) and dask (chunked, distributed).

``get_backend("numpy")`` returns the one shared instance; an optional backend's
module is imported on first use, so ``import flowgrad`` never imports cupy or dask.
A :class:`Backend` instance (``DaskBackend(chunks=10_000)``) may be passed wherever a
name is taken.
"""
from __future__ import annotations

import importlib
import weakref

from flowgrad.errors import BackendError

from .base import Backend

#: name -> "module:Class"; an optional backend is imported on first use only
AVAILABLE = {
    "numpy": "flowgrad.backends.numpy_backend:NumpyBackend",
    "cupy": "flowgrad.backends.cupy_backend:CupyBackend",
    "dask": "flowgrad.backends.dask_backend:DaskBackend",
}

_instances: dict[str, Backend] = {}
_default = "numpy"
#: id(namespace) -> (the namespace, [weak references to the Backends computing with it]):
#: every backend get_backend has handed out, so a kernel that knows only its ``xp`` (a loop
#: node's) finds a backend (``backend_of``); the namespace is held so its id stays its own.
#: All of them, not the first: a first one kept alive only by a reference cycle would stand
#: for the namespace until the garbage collector took it, and then none would
_by_namespace: dict[int, tuple] = {}


def get_backend(name=None) -> Backend:
    """The backend called ``name`` (or the default one); a Backend passes through."""
    if name is None:
        name = _default
    if isinstance(name, Backend):
        _note(name)
        return name
    if name not in _instances:
        if name not in AVAILABLE:
            raise BackendError(f"unknown backend {name!r}; choose one of {sorted(AVAILABLE)}")
        module, cls = AVAILABLE[name].split(":")
        _instances[name] = made = getattr(importlib.import_module(module), cls)()
        _note(made)
    return _instances[name]


def _note(backend) -> None:
    xp = backend.xp
    if xp is None:
        return
    for key, (_, refs) in list(_by_namespace.items()):    # forget backends gone since
        refs[:] = [r for r in refs if r() is not None]
        if not refs:
            _by_namespace.pop(key, None)
    refs = _by_namespace.setdefault(id(xp), (xp, []))[1]
    if any(r() is backend for r in refs):
        return
    try:
        refs.append(weakref.ref(backend))
    except TypeError:               # a Backend with __slots__ and no weak references
        refs.append(lambda backend=backend: backend)


def _live(xp):
    """A live Backend get_backend handed out with namespace ``xp``, or None."""
    known = _by_namespace.get(id(xp))
    for ref in known[1] if known is not None else ():
        backend = ref()
        if backend is not None and backend.xp is xp:
            return backend
    return None


def backend_of(xp) -> Backend:
    """The backend whose array namespace is ``xp``: a named one (numpy, cupy, dask) if one
    computes with it, else the first Backend instance get_backend handed out with it (a
    fake device's). BackendError if none: a kernel then cannot know where it runs."""
    for backend in _instances.values():
        if backend.xp is xp:
            return backend
    if xp is __import__("numpy"):       # never asked for by name yet (a dask-only run)
        return get_backend("numpy")
    backend = _live(xp)
    if backend is None:
        raise BackendError(f"no backend computes with the array namespace "
                           f"{getattr(xp, '__name__', xp)!r}")
    return backend


def set_default_backend(name) -> None:
    """Use ``name`` wherever no backend is given (fg.compile, fg.run); returns nothing.
    An unknown or unusable backend raises BackendError now and leaves the default as it was."""
    global _default
    get_backend(name)  # fail now, not at the first compile
    _default = name


def to_numpy(array):
    """Any backend's array (or a list/tuple of them) brought back to the host as numpy."""
    if isinstance(array, (list, tuple)):
        return type(array)(to_numpy(a) for a in array)
    for backend in _instances.values():
        if backend.owns(array):
            return backend.to_numpy(array)
    if hasattr(array, "get") and hasattr(array, "__cuda_array_interface__"):
        return array.get()
    if hasattr(array, "compute") and hasattr(array, "chunks"):
        return __import__("numpy").asarray(array.compute())
    return __import__("numpy").asarray(array)

__all__ = ["Backend", "get_backend", "set_default_backend", "to_numpy"]


def __dir__():
    # the public names only: dir(fg.backends) shows no np, math or threading
    return sorted(__all__)
