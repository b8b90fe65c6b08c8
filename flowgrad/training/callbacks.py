"""Callbacks of ``opt.fit``: hooks called at the start and end of training, of each
epoch and of each batch, with a ``FitState`` (the optimizer, its variables, the
history, ``stop``). ``fg.NAME`` holds each public one.

- ``EarlyStopping``: stop when a monitored number stops improving, restore the best.
- ``TerminateOnNaN``: on by default; a step whose loss or gradients are not finite is
  refused before it writes anything, and fit raises ``fg.NumericsError``.
- ``ModelCheckpoint``: save the variables and the optimizer's state
  (``fg.save_variables(..., optimizer=)``) every epoch or when the monitored number
  improves.
- ``ReduceLROnPlateau``: multiply a numeric learning rate by ``factor`` on a plateau.
"""
from __future__ import annotations

import math
import numbers
import os

from ..errors import ArgumentError, OptimizerError, UsageError
from ..ops.base import at_user_line
from ..state import assign_together

__all__ = ["Callback", "EarlyStopping", "TerminateOnNaN", "ModelCheckpoint",
           "ReduceLROnPlateau"]


class Callback:
    """Hooks of the fit loop; override any. ``on_epoch_end`` (or a batch hook) may set
    ``state.stop = True`` to end training after the epoch. ``batch`` counts from 0
    within the epoch (``state.epoch`` is the epoch); the logs of ``on_batch_end`` hold
    the batch's ``loss`` and metrics as floats and its number of rows, ``size``."""

    def on_train_begin(self, state):
        pass

    def on_epoch_begin(self, epoch, state):
        pass

    def on_batch_begin(self, batch, logs, state):
        pass

    def on_batch_end(self, batch, logs, state):
        pass

    def on_epoch_end(self, epoch, logs, state):
        pass

    def on_train_end(self, state):
        pass


def overrides(callback, hook: str) -> bool:
    """Whether ``callback`` does something in ``hook`` (fit skips the no-op calls of
    the per-batch hooks, which run thousands of times)."""
    return getattr(type(callback), hook, None) is not getattr(Callback, hook)


class FunctionCallback(Callback):
    """A plain function ``f(epoch, logs)`` called after each epoch; True stops training."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, epoch, logs, state):
        if self.fn(epoch, logs) is True:
            state.stop = True


class Monitor:
    """The best value so far of one key of the epoch logs, and whether a new value
    improves on it by more than ``min_delta`` ("min" or "max"; "auto" is max for names
    holding "acc", min otherwise). NaN never improves."""

    def __init__(self, monitor, mode, min_delta, owner):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ArgumentError(f"mode must be 'min', 'max' or 'auto', got {mode!r}"
                                + at_user_line())
        self.monitor, self.mode, self.owner = monitor, mode, owner
        self.min_delta = abs(float(min_delta))
        self.best = None

    def value(self, logs):
        self.check(logs)
        return logs[self.monitor]

    def check(self, keys):
        """Refuse a monitor that is not among ``keys`` (the logs, or what the fit says its
        logs will hold: see :func:`log_keys`)."""
        if self.monitor not in keys:
            raise ArgumentError(f"{self.owner} monitors {self.monitor!r}, which this fit does "
                                f"not record; it records {sorted(keys)}" + at_user_line())

    def improves(self, value) -> bool:
        if value != value:
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def log_keys(state):
    """The keys the fit's epoch logs will hold (``FitState.log_keys``), or None for a
    state that does not say (a callback driven by hand): a callback checks what it will
    read in ``on_train_begin``, so that a typo fails before an epoch trains, not after
    it, when the fit's History would be lost."""
    return getattr(state, "log_keys", None)


def _check_path(path, keys):
    """Format ``path`` once with stand-in logs (0.0 for each key, epoch 1): a field the
    logs lack (``{val_loss}`` in a fit without ``val``), a positional ``{}`` or a format
    spec no number takes is refused now, not when the first epoch ends."""
    try:
        path.format(epoch=1, **{k: 0.0 for k in keys})
    except KeyError as e:
        raise ArgumentError(f"ModelCheckpoint: the path {path!r} names the field "
                            f"{{{e.args[0]}}}, which this fit's logs do not hold; it may "
                            f"use epoch and {sorted(keys)}" + at_user_line()) from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise ArgumentError(f"ModelCheckpoint: the path {path!r} cannot be formatted with "
                            f"the epoch and the logs ({type(e).__name__}: {e})"
                            + at_user_line()) from None


def _patience(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ArgumentError(f"patience must be a non-negative int, got {value!r}" + at_user_line())
    return int(value)


def _snapshot(variables):
    return [v.value.copy() if hasattr(v.value, "copy") else v.value for v in variables]


def _model_of(state):
    """What restore_best saves and puts back: the optimizer's variables and the declared
    state its steps write (batch norm's running statistics), which must come from the
    same epoch as the weights."""
    return state.variables + [u.state for u in state.step_program.state_updates]


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a key of the epoch logs: "val_loss", "val_acc" …) has not
    improved by more than ``min_delta`` for more than ``patience`` epochs (it stops
    after the ``patience + 1``-th such epoch in a row), and (``restore_best``)
    put back the variables of the best epoch, with the running statistics its steps
    left (declared state, such as batch norm's). ``mode`` is "min", "max" or "auto" (max
    for names holding "acc", min otherwise)."""

    def __init__(self, monitor="val_loss", patience=5, mode="auto", min_delta=0.0,
                 restore_best=True):
        self._watch = Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.monitor, self.mode, self.min_delta = monitor, self._watch.mode, self._watch.min_delta
        self.patience, self.restore_best = _patience(patience), bool(restore_best)

    @property
    def best(self):
        return self._watch.best

    def on_train_begin(self, state):
        if log_keys(state) is not None:
            self._watch.check(log_keys(state))
        self._watch.best, self.best_epoch, self.wait, self._best_values = None, None, 0, None

    def on_epoch_end(self, epoch, logs, state):
        value = self._watch.value(logs)
        if self._watch.improves(value):
            self._watch.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_values = _snapshot(_model_of(state))
        else:
            self.wait += 1
            if self.wait > self.patience:
                state.stop = True

    def on_train_end(self, state):
        if self.restore_best and self._best_values is not None:
            assign_together(_model_of(state), self._best_values)   # all or none
            state.history.best_epoch = self.best_epoch

    def __repr__(self):
        return (f"EarlyStopping({self.monitor!r}, patience={self.patience}, "
                f"mode={self.mode!r})")


class TerminateOnNaN(Callback):
    """Refuse a step whose loss or gradients hold a NaN or ±inf, before it writes
    anything, and end ``fit`` with a ``fg.NumericsError`` naming the epoch and batch.

    In every ``fit`` unless ``fit(…, terminate_on_nan=False)``. The check has to come
    between the program's run and the commit of the step, which no hook sees: while
    a fit with this callback runs, it holds the optimizer's ``check_finite`` on (one
    fused check of the loss and the gradients per step; see ``Optimizer``), and it
    puts the old setting back when the fit ends, however it ends."""

    def __repr__(self):
        return "TerminateOnNaN()"


class ModelCheckpoint(Callback):
    """Save variables with ``fg.save_variables`` after an epoch: every epoch, or with
    ``save_best_only`` only when ``monitor`` improves (see EarlyStopping for ``mode``
    and ``min_delta``). ``path`` may hold format fields: ``{epoch}`` (counting from 1)
    and any key of the logs (``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``). ``variables``
    is what ``save_variables`` takes (default: every variable of the optimizer's graph,
    so that ``fg.load_variables(path, graph)`` restores the whole model).
    ``saved`` lists the paths written.

    ``save_optimizer`` (default True, as Keras's ModelCheckpoint saves the optimizer
    with the model) stores the optimizer's state in the same file (``save_variables(
    ..., optimizer=)``), so that ``fg.load_variables(path, graph, optimizer=opt)``
    resumes training where it stopped: a file without it restarts Adam's moments and
    the schedule, and the resumed run leaves the uninterrupted one. The file grows by
    the state (Adam: twice the variables); ``fg.load_variables(path, graph)`` still
    loads only the values. ``save_optimizer=False`` writes the values alone (needed
    when ``variables`` leaves out some of the optimizer's: a state is saved with the
    values of all its variables, which is checked when fit starts)."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 min_delta=0.0, variables=None, save_optimizer=True):
        self.path, self.save_best_only, self.variables = os.fspath(path), bool(save_best_only), \
            variables
        self.save_optimizer = bool(save_optimizer)
        self._watch = Monitor(monitor, mode, min_delta, "ModelCheckpoint")
        self.monitor, self.saved = monitor, []

    def _target(self, state):
        return self.variables if self.variables is not None else state.optimizer.graph

    def on_train_begin(self, state):
        if self.save_optimizer:
            from .checkpoint import check_saveable
            try:
                check_saveable(self._target(state), state.optimizer)
            except UsageError as e:
                raise ArgumentError(f"ModelCheckpoint: {e}; pass save_optimizer=False to "
                                    f"save the values alone") from None
        keys = log_keys(state)
        if keys is not None:
            if self.save_best_only:
                self._watch.check(keys)
            _check_path(self.path, keys)
        self._watch.best = None

    def on_epoch_end(self, epoch, logs, state):
        from .checkpoint import save_variables
        if self.save_best_only:
            value = self._watch.value(logs)
            if not self._watch.improves(value):
                return
            self._watch.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        self.saved.append(save_variables(path, self._target(state), optimizer=(
            state.optimizer if self.save_optimizer else None)))

    def __repr__(self):
        best = f", monitor={self.monitor!r}, save_best_only=True" if self.save_best_only else ""
        return f"ModelCheckpoint({self.path!r}{best})"


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's learning rate by ``factor`` when ``monitor`` has not
    improved by more than ``min_delta`` for more than ``patience`` epochs (as PyTorch's
    ``ReduceLROnPlateau``: the ``patience + 1``-th bad epoch in a row reduces), never
    below ``min_lr``; then wait ``cooldown`` epochs before counting again. The rate
    must be a number (a schedule already decides it); ``reductions`` lists
    ``(epoch, new lr)``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto",
                 min_delta=0.0, cooldown=0, min_lr=0.0):
        factor = float(factor)
        if not 0.0 < factor < 1.0:
            raise ArgumentError(f"factor must be in (0, 1), got {factor!r}" + at_user_line())
        self._watch = Monitor(monitor, mode, min_delta, "ReduceLROnPlateau")
        self.monitor, self.factor, self.patience = monitor, factor, _patience(patience)
        self.cooldown, self.min_lr = _patience(cooldown), float(min_lr)
        if not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise ArgumentError(f"min_lr must be a finite number ≥ 0, got {min_lr!r}"
                                + at_user_line())
        self.reductions = []

    def on_train_begin(self, state):
        if callable(state.optimizer.lr):
            raise OptimizerError("ReduceLROnPlateau changes a numeric learning rate, but "
                                 f"this optimizer's lr is the schedule {state.optimizer.lr!r}")
        if log_keys(state) is not None:
            self._watch.check(log_keys(state))
        self._watch.best, self.wait, self._cooling = None, 0, 0

    def on_epoch_end(self, epoch, logs, state):
        # PyTorch's order: count the epoch, then let a cooldown swallow the count
        value = self._watch.value(logs)
        if self._watch.improves(value):
            self._watch.best, self.wait = value, 0
        else:
            self.wait += 1
        if self._cooling:
            self._cooling, self.wait = self._cooling - 1, 0
        if self.wait > self.patience:
            opt = state.optimizer
            new = max(float(opt.lr) * self.factor, self.min_lr)
            if new < opt.lr:
                opt.lr = new
                self.reductions.append((epoch, new))
            self.wait, self._cooling = 0, self.cooldown

    def __repr__(self):
        return (f"ReduceLROnPlateau({self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience})")
