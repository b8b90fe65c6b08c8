"""An optimizer's complete state as plain data: ``opt.state_dict()`` and
``opt.load_state_dict(d)`` (flowgrad/training/optim.py) are written with these, and
``fg.save_variables(..., optimizer=opt)`` stores the same dict in the checkpoint
(flowgrad/training/checkpoint.py). Package-internal.

The dict (numpy arrays and Python numbers only; arrays are copies both ways)::

    {"optimizer": "Adam",               # the class's name: loading checks it
     "iterations": 12,                  # steps taken: Adam's t, a schedule's position
     "lr": 0.001,                       # a numeric rate (ReduceLROnPlateau changes it);
                                        # None when lr is a schedule (it is not data)
     "settings": {...},                 # the settings that decide the state's layout
                                        # (RMSProp's centered, LBFGS's history_size):
                                        # loading checks they are the optimizer's
     "state": {"w": {"m": array, "s": array}, ...},   # per variable, by NAME
     "memory": {...}}                   # LBFGS only: its pairs and last point

Every array has its variable's shape and dtype (LBFGS's memory: float64 vectors of the
variables' total size). Loading checks all of it before anything is written and then
writes it all at once (:class:`PreparedState`): a state that does not fit is a
``CheckpointError`` and the optimizer is left as it was.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..backends import to_numpy
from ..errors import OptimizerError
from ..state import store_values, undo_fully
from .checkpoint import CheckpointError

__all__ = ["TOP_KEYS", "snapshot", "prepare", "PreparedState", "scalar", "vector_array"]

#: the keys every optimizer's state dict holds (a subclass may add its own)
TOP_KEYS = ("optimizer", "iterations", "lr", "settings", "state")


def snapshot(opt, settings, slots_of) -> dict:
    """The state dict of ``opt`` without its extra keys (the caller holds its lock)."""
    if len(opt.state) != len(opt.variables):     # opt.variables replaced, no reset()
        raise OptimizerError(f"the optimizer has {len(opt.state)} states for "
                             f"{len(opt.variables)} variables: call reset() after "
                             "changing its variables")
    state = {}
    for v, st in zip(opt.variables, opt.state):
        slots = {}
        for key, a in st.items():
            arr = np.array(to_numpy(a))           # a copy: the dict is the caller's
            if arr.shape != v.shape or arr.dtype != v.dtype:
                raise CheckpointError(
                    f"{type(opt).__name__}'s state {key!r} of variable {v.name!r} has shape "
                    f"{arr.shape} and dtype {arr.dtype}, not the variable's {v.shape} "
                    f"{v.dtype}: only states shaped as their variable are saved; override "
                    f"state_dict/load_state_dict for another layout")
            slots[key] = arr
        state[v.name] = slots
    return {"optimizer": type(opt).__name__, "iterations": int(opt.iterations),
            "lr": None if callable(opt.lr) else float(opt.lr),
            "settings": dict(settings), "state": state}


def scalar(value, kinds: str, what: str):
    """``value`` (a Python number, bool or str, or a 0-d numpy array of one) as a Python
    number of one of numpy's dtype ``kinds`` ("b", "i", "f", "U"), else CheckpointError."""
    arr = value if isinstance(value, (np.ndarray, np.generic)) else None
    if arr is None:
        kind = ("b" if isinstance(value, bool) else "i" if isinstance(value, numbers.Integral)
                else "f" if isinstance(value, numbers.Real) else "U" if isinstance(value, str)
                else None)
        if kind == "i" and "i" not in kinds and "f" in kinds:
            kind = "f"                         # an int where a float goes: 1 for 1.0
    else:
        kind = arr.dtype.kind if arr.shape == () else None
        kind = "i" if kind == "u" else kind
        value = arr.item() if kind is not None else value
    if kind is None or kind not in kinds:
        raise CheckpointError(f"{what} must be {_KIND_WORDS[kinds[0]]}, got {value!r}")
    return {"b": bool, "i": int, "f": float, "U": str}[kind](value)


_KIND_WORDS = {"b": "a bool", "i": "an int", "f": "a float", "U": "a string"}


def vector_array(value, shape, dtype, what: str) -> np.ndarray:
    """A copy of ``value``, a numpy array of exactly ``shape`` and ``dtype``."""
    if not isinstance(value, (np.ndarray, np.generic)):
        raise CheckpointError(f"{what} must be a numpy array, got {type(value).__name__}")
    if value.shape != tuple(shape) or value.dtype != dtype:
        raise CheckpointError(f"{what} has shape {value.shape} and dtype {value.dtype}; "
                              f"it must have shape {tuple(shape)} and dtype {np.dtype(dtype)}")
    return np.array(value)


def _mapping(value, what):
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{what} must be a dict, got {type(value).__name__}")
    return value


def _same_keys(d, want, what):
    missing, extra = sorted(set(want) - set(d), key=str), sorted(set(d) - set(want), key=str)
    if missing or extra:
        raise CheckpointError(f"{what} does not fit: missing {missing}, unexpected {extra}")


def _check_head(opt, d, settings, extra_keys):
    """The kind, the layout settings, the step count and the rate, checked."""
    _mapping(d, "an optimizer state")
    _same_keys(d, TOP_KEYS + tuple(extra_keys), "the optimizer state's keys")
    kind = scalar(d["optimizer"], "U", "'optimizer'")
    if kind != type(opt).__name__:
        raise CheckpointError(f"the state was saved by fg.optim.{kind}; this optimizer is "
                              f"fg.optim.{type(opt).__name__}, which cannot take it")
    saved = {k: scalar(v, "bif", f"setting {k!r}")
             for k, v in _mapping(d["settings"], "'settings'").items()}
    if saved != settings:
        raise CheckpointError(f"the {kind} state was saved with the settings {saved}, this "
                              f"optimizer has {settings}: they decide what its state holds, "
                              f"so it cannot be loaded; make the optimizer with the saved ones")
    iterations = scalar(d["iterations"], "i", "'iterations'")
    if iterations < 0:
        raise CheckpointError(f"'iterations' must be ≥ 0, got {iterations}")
    lr = d["lr"]
    if lr is not None:
        lr = scalar(lr, "f", "'lr'")
        if not (math.isfinite(lr) and lr > 0):
            raise CheckpointError(f"'lr' must be a finite number > 0 or None, got {lr!r}")
    return iterations, lr


def prepare(opt, d, settings, slots, extra_keys=()) -> "PreparedState":
    """``d`` checked against ``opt`` (its kind, settings, variables' names, and every
    array's shape and dtype): a PreparedState that writes it, or CheckpointError.
    ``slots``: the state's keys after a step (None: any key)."""
    iterations, lr = _check_head(opt, d, settings, extra_keys)
    saved = _mapping(d["state"], "'state'")
    _same_keys(saved, [v.name for v in opt.variables], "'state' (one entry per variable)")
    want = set() if iterations == 0 else slots
    states = []
    for v in opt.variables:
        entry = _mapping(saved[v.name], f"the state of {v.name!r}")
        if want is not None:
            _same_keys(entry, want, f"the {type(opt).__name__} state of {v.name!r} after "
                                    f"{iterations} steps")
        states.append({key: vector_array(a, v.shape, v.dtype, f"state {key!r} of {v.name!r}")
                       for key, a in entry.items()})
    attrs = {"state": states, "iterations": iterations}
    if lr is not None and not callable(opt.lr):   # a schedule is the optimizer's own
        attrs["lr"] = lr
    return PreparedState(opt, attrs)


class PreparedState:
    """A checked state, not yet written: ``commit()`` writes it (with ``variables`` set
    to ``values``, already checked, when given) under the optimizer's lock, all or none.
    ``attrs`` maps the optimizer's attributes to their new values."""

    def __init__(self, opt, attrs):
        self.opt, self.attrs = opt, dict(attrs)

    def update(self, attrs):
        self.attrs.update(attrs)

    def commit(self, variables=(), values=()):
        opt, attrs = self.opt, self.attrs
        dicts = [v.more for v in variables]      # (a leaf's value lives in .more)
        with opt.lock:
            old_values = [d["value"] for d in dicts]
            old = {name: getattr(opt, name) for name in attrs}
            try:
                store_values(dicts, values)
                for name, value in attrs.items():
                    setattr(opt, name, value)
            except BaseException:
                undo_fully(_restore, opt, old, dicts, old_values)
                raise


def _restore(opt, old, dicts, values):
    store_values(dicts, values)
    for name, value in old.items():
        setattr(opt, name, value)
