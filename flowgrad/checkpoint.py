"""Saving and loading variables' values: one ``.npz`` archive, one array per name.

    fg.save_variables("model.npz", g)            # every variable of graph g, by node name
    fg.save_variables("model.npz", [w, b])       # these, by node name
    fg.save_variables("model.npz", {"W1": w})    # these, under names of your choosing
    fg.load_variables("model.npz", g)            # the same three forms

The archive holds plain numpy arrays and is read with ``allow_pickle=False``, so
loading a file runs no code. Loading checks every name, shape and dtype before it
assigns anything: a checkpoint either loads whole or not at all.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Mapping

import numpy as np

from .backends import to_numpy
from .errors import FlowgradError
from .graph import Graph, Node

__all__ = ["CheckpointError", "save_variables", "load_variables"]


class CheckpointError(FlowgradError, ValueError):
    """A checkpoint does not fit the variables: a name missing or extra, a wrong shape
    or dtype."""


def _named_variables(variables) -> dict[str, Node]:
    """{name: variable node} from a Graph, a mapping of names to nodes, or nodes."""
    if isinstance(variables, Graph):
        return {n.name: n for n in variables.nodes if n.kind == "variable"}
    if isinstance(variables, Node):
        variables = [variables]
    if isinstance(variables, Mapping):
        items = list(variables.items())
    else:
        items = [(getattr(v, "name", None), v) for v in variables]
    named = {}
    for name, v in items:
        if not isinstance(v, Node) or v.kind != "variable":
            raise TypeError(f"only fg.variable nodes are saved and loaded, got {v!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a checkpoint name must be a non-empty string, got {name!r}")
        if name in named and named[name] is not v:
            raise ValueError(f"two variables share the name {name!r}; pass a dict "
                             "{name: variable} to tell them apart")
        named[name] = v
    return named


def save_variables(path, variables) -> pathlib.Path:
    """Write the current values of ``variables`` (a Graph — all its variables —, a list
    of variable nodes, or a ``{name: variable}`` dict) to ``path`` as ``.npz``.

    ``.npz`` is appended to a path without it (as numpy does). The file is written
    to a temporary name and then moved into place, so an interrupted save never
    leaves a half-written checkpoint. Returns the path written.
    """
    named = _named_variables(variables)
    if not named:
        raise ValueError("there are no variables to save")
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {name: np.asarray(to_numpy(v.value)) for name, v in named.items()}
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_variables(path, variables, strict: bool = True) -> list[str]:
    """Assign values saved by ``save_variables`` to ``variables`` (same three forms).

    With ``strict`` (the default) every variable must be in the file and every array
    in the file must belong to a variable; ``strict=False`` loads the names the two
    share and ignores the rest. Shapes must match and dtypes cast safely
    (``same_kind``), else ``CheckpointError`` — and then no variable is changed.
    Returns the names loaded.
    """
    named = _named_variables(variables)
    with np.load(path, allow_pickle=False) as archive:
        stored = {name: archive[name] for name in archive.files}
    missing = sorted(set(named) - set(stored))
    extra = sorted(set(stored) - set(named))
    if strict and (missing or extra):
        parts = []
        if missing:
            parts.append(f"variables missing from the file: {missing}")
        if extra:
            parts.append(f"arrays in the file that match no variable: {extra}")
        raise CheckpointError(f"{os.fspath(path)!r} does not fit the variables; "
                              + "; ".join(parts) + " (strict=False loads the names they share)")
    values = {}
    for name, v in named.items():
        if name not in stored:
            continue
        arr = stored[name]
        if arr.shape != v.shape:
            raise CheckpointError(f"{name!r}: the file holds shape {arr.shape}, "
                                  f"the variable has shape {v.shape}")
        if not np.can_cast(arr.dtype, v.dtype, "same_kind"):
            raise CheckpointError(f"{name!r}: the file holds dtype {arr.dtype}, "
                                  f"the variable has dtype {v.dtype}")
        values[name] = arr.astype(v.dtype, copy=False)
    for name, arr in values.items():
        named[name].value = arr
    return list(values)
