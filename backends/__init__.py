"""Backends: numpy (CPU), cupy (NVIDIA GPU) and dask (chunked, distributed).

``get_backend("numpy")`` returns the one shared instance; an optional backend's
module is imported on first use, so ``import flowgrad`` never imports cupy or dask.
A :class:`Backend` instance (``DaskBackend(chunks=10_000)``) may be passed wherever a
name is taken.
"""
from __future__ import annotations

import importlib

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


def get_backend(name=None) -> Backend:
    """The backend called ``name`` (or the default one); a Backend passes through."""
    if name is None:
        name = _default
    if isinstance(name, Backend):
        return name
    if name not in _instances:
        if name not in AVAILABLE:
            raise BackendError(f"unknown backend {name!r}; choose one of {sorted(AVAILABLE)}")
        module, cls = AVAILABLE[name].split(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


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
