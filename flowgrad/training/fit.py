"""The fit loop behind ``opt.fit``: epochs of shuffled mini-batches, metrics, validation,
callbacks (flowgrad/training/callbacks.py) and a History.

    hist = opt.fit(loss, data={x: X, t: T}, epochs=20, batch_size=64,
                   val={x: Xv, t: Tv}, metrics={"acc": acc}, training=is_training,
                   callbacks=[fg.EarlyStopping("val_acc", patience=3)])
    hist["val_acc"][-1]; hist.plot("history.png")

Two programs are made once per loss, metrics and backend, and kept for later calls
(so calling fit again adds nothing to the graph): the training step (the loss, one
gradient per variable, and the metrics; ``opt.training_program``) and the evaluation
(the loss and the metrics, no gradient), which computes the validation numbers after
each epoch. Every step is checked for a NaN or ±inf in the loss and gradients before
it writes (``TerminateOnNaN``, on unless ``terminate_on_nan=False``). Feeds in ``data``
with rows (arrays of ndim ≥ 1, all with the same number of rows) are cut into
batches; scalars (a flag, a rate) are fed whole to every step. Epoch figures are
means over the epoch's rows (each batch weighted by its size).
"""
from __future__ import annotations

import math
import numbers
import weakref

import numpy as np

from ..backends import to_numpy
from .callbacks import (Callback, EarlyStopping, FunctionCallback,  # noqa: F401
                        ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN, overrides)
from ..errors import ArgumentError, FeedError, NumericsError, UsageError
from ..ops.base import at_user_line
from ..graph import Node
from .progress import progress
from ..engine.program import Program

__all__ = ["History", "Callback", "EarlyStopping", "TerminateOnNaN", "ModelCheckpoint",
           "ReduceLROnPlateau", "fit"]


class History(dict):
    """``{"loss": [...], "acc": [...], "val_loss": [...], …}``: one entry per epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: set by EarlyStopping: the epoch whose variables were restored (0-based)
        self.best_epoch = None
        self.stopped_early = False

    @property
    def epochs(self) -> int:
        return max((len(v) for v in self.values()), default=0)

    def append(self, logs: dict):
        for k, v in logs.items():
            self.setdefault(k, []).append(v)

    def plot(self, path=None, ax=None, keys=None):
        """One panel per quantity (loss, each metric): the training curve and, where
        there is one, the validation curve, against the epoch; returns the Figure.

        ``ax``: a matplotlib Axes to draw into (every curve in it, labelled by its key,
        unless there is one quantity), or a sequence of Axes, one per quantity; without
        it the figure is a new ``matplotlib.figure.Figure`` of its own. pyplot's current
        figure and axes are never changed (nothing here goes through pyplot), so a plot
        in progress is safe. ``path`` saves the figure there too."""
        bases = []
        for k in self if keys is None else keys:
            base = k[4:] if k.startswith("val_") else k
            if base not in bases:
                bases.append(base)
        if not bases:
            raise ArgumentError("this History is empty: nothing to plot" + at_user_line())
        panels, shared = self._panels(ax, len(bases))
        for panel, base in zip(panels, bases):
            self._draw_panel(panel, base, shared)
        if shared:
            panels[0].set_title(", ".join(bases))
            panels[0].legend()
        fig = panels[0].figure
        if ax is None:
            fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    @staticmethod
    def _panels(ax, n):
        """(the Axes to draw the n quantities into, whether they all share one)."""
        if ax is None:
            from matplotlib.figure import Figure
            fig = Figure(figsize=(4.4 * n, 3.4))
            return list(fig.subplots(1, n, squeeze=False)[0]), False
        if hasattr(ax, "plot"):
            return [ax] * n, n > 1
        panels = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(panels) != n or not all(hasattr(p, "plot") for p in panels):
            raise ArgumentError(f"ax must be one matplotlib Axes or a sequence of {n} "
                                f"(one per quantity), got {ax!r}" + at_user_line())
        return panels, False

    def _draw_panel(self, ax, base, shared):
        for key, label in ((base, "training"), ("val_" + base, "validation")):
            if key in self:
                ys = self[key]
                ax.plot(range(1, len(ys) + 1), ys, marker="." if len(ys) < 30 else None,
                        label=key if shared else label)
        if self.best_epoch is not None and not shared:
            ax.axvline(self.best_epoch + 1, color="gray", ls=":", lw=1, label="best (restored)")
        ax.set_xlabel("epoch")
        if not shared:
            ax.set_title(base)
            ax.legend()

    def __repr__(self):
        parts = []
        for k, v in self.items():
            if v:
                parts.append(f"{k} {v[0]:.4g} → {v[-1]:.4g}" if len(v) > 1 else f"{k} {v[0]:.4g}")
        extra = f"; restored epoch {self.best_epoch + 1}" if self.best_epoch is not None else ""
        return f"<flowgrad.History {self.epochs} epochs: {', '.join(parts)}{extra}>"


class FitState:
    """What callbacks see: the optimizer, its variables, the history, ``stop``, the
    epoch and batch in progress (from 0), and the two compiled programs
    (``step_program``: loss, gradients, metrics; ``eval_program``: loss and metrics
    only, or None without ``val``). ``log_keys``: the keys every epoch's logs will hold
    ("loss", the metrics, and their "val_" forms with ``val``), for callbacks to check
    what they will read before the first epoch trains."""

    def __init__(self, optimizer, history, step_program, eval_program, log_keys=()):
        self.optimizer, self.variables, self.history = optimizer, optimizer.variables, history
        self.step_program, self.eval_program = step_program, eval_program
        self.log_keys = tuple(log_keys)
        self.stop = False
        self.epoch = 0
        self.batch = 0


# -- feeds ------------------------------------------------------------------------------

def _split_feeds(data, what):
    """(batched {key: array}, fixed {key: value}, rows) of a feed dict; arrays with no
    rows are a FeedError (there is nothing to train on or to validate on)."""
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a dict of feeds {{placeholder: array}}, "
                         f"got {type(data).__name__}" + at_user_line())
    batched, fixed = {}, {}
    for key, value in data.items():
        if not isinstance(key, (Node, str)):
            raise UsageError(f"{what}: feed keys are placeholders or their names, got {key!r}"
                             + at_user_line())
        if isinstance(value, (bool, numbers.Number)) or np.ndim(value) == 0:
            fixed[key] = value
        else:
            batched[key] = value if hasattr(value, "shape") else np.asarray(value)
    sizes = {(k.name if isinstance(k, Node) else k): len(v) for k, v in batched.items()}
    rows = set(sizes.values())
    if len(rows) > 1:
        raise FeedError(f"{what}: every array must have the same number of rows, got {sizes}"
                        + at_user_line())
    if rows == {0}:
        use = "to train on" if what == "data" else "to validate on (or leave val out)"
        raise FeedError(f"{what}: the arrays {sorted(sizes)} have 0 rows; fit needs at least "
                        f"one row {use}")
    return batched, fixed, rows.pop() if rows else None


def _mean(values, weights):
    vals = to_numpy(list(values))
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray([np.asarray(v, dtype=np.float64) for v in vals]), w) / w.sum())


def _evaluate(prog, batched, fixed, rows, batch_size, names):
    """The loss and metrics over the validation feeds, row-weighted; a validation run
    never writes declared state (batch norm's running statistics: call_pending)."""
    if rows is None:
        outs, weights = [prog.call_pending((dict(fixed),), {})[0]], [1]
    else:
        size = batch_size or rows
        outs, weights = [], []
        for start in range(0, rows, size):
            feed = {k: v[start:start + size] for k, v in batched.items()}
            feed.update(fixed)
            outs.append(prog.call_pending((feed,), {})[0])
            weights.append(min(size, rows - start))
    return {name: _mean([o[k] for o in outs], weights) for k, name in enumerate(names)}


# -- the loop -------------------------------------------------------------------------------

def _check_settings(loss, metrics, epochs, batch_size, val_batch_size):
    if not isinstance(loss, Node) or loss.shape != ():
        raise ArgumentError(f"fit minimises a scalar loss node, got {loss!r}" + at_user_line())
    for name, node in metrics.items():
        if not isinstance(name, str) or name == "loss" or name.startswith("val_"):
            raise ArgumentError(f"metric names are strings other than 'loss' and 'val_…', "
                                f"got {name!r}" + at_user_line())
        if not isinstance(node, Node) or node.shape != ():
            raise ArgumentError(f"metric {name!r} must be a scalar node, got {node!r}"
                                + at_user_line())
    if not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ArgumentError(f"epochs must be a non-negative int, got {epochs!r}" + at_user_line())
    for name, size in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)
                                 or size < 1):
            raise ArgumentError(f"{name} must be a positive int or None (full batch), "
                                f"got {size!r}" + at_user_line())


def _callbacks(callbacks, terminate_on_nan):
    out = [c if isinstance(c, Callback) else FunctionCallback(c) if callable(c)
           else _bad_callback(c) for c in callbacks]
    if terminate_on_nan and not any(isinstance(c, TerminateOnNaN) for c in out):
        out.insert(0, TerminateOnNaN())
    return out


#: the evaluation program of each step program (loss and metrics, no gradient), made once
_EVAL_PROGRAMS = weakref.WeakKeyDictionary()


def _eval_program(step_prog, outputs):
    prog = _EVAL_PROGRAMS.get(step_prog)
    if prog is None:
        prog = _EVAL_PROGRAMS[step_prog] = Program(outputs, step_prog.backend)
    return prog


class _Batcher:
    """The feeds of one epoch's batches: rows cut into ``size`` (shuffled or in order),
    scalars fed whole to every step.

    With an int ``seed`` an epoch's order is drawn from ``(seed, the optimizer's step
    count when the epoch starts)``, not from one stream begun by this fit: so fitting
    one epoch at a time with ``seed=0`` shuffles each epoch anew and gives the numbers
    of one long fit (a stream per call would repeat its first order every call). Other
    seeds (None, a Generator) are one stream for the fit, as ``default_rng`` makes it."""

    def __init__(self, batched, fixed, rows, batch_size, shuffle, seed):
        self.batched, self.fixed, self.rows, self.shuffle = batched, fixed, rows, shuffle
        self.size = rows if batch_size is None or rows is None else min(batch_size, rows)
        self.per_epoch = 1 if rows is None else math.ceil(rows / self.size)
        keyed = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        self.seed = int(seed) if keyed else None
        if keyed:
            np.random.SeedSequence(self.seed)   # a negative seed: ValueError now, as before
        self.rng = None if keyed else np.random.default_rng(seed)

    def epoch(self, step=0):
        """(feed, rows in it) of every batch of a new epoch that starts at the
        optimizer's step ``step``."""
        rows, size = self.rows, self.size
        if rows is None:
            yield dict(self.fixed), 1
            return
        order = None
        if self.shuffle:
            rng = self.rng if self.seed is None else np.random.default_rng(
                np.random.SeedSequence(self.seed, spawn_key=(step,)))
            order = rng.permutation(rows)
        for k in range(self.per_epoch):
            idx = slice(k * size, (k + 1) * size) if order is None else \
                order[k * size:(k + 1) * size]
            feed = {key: v[idx] for key, v in self.batched.items()}
            feed.update(self.fixed)
            yield feed, min(size, rows - k * size)


def fit(optimizer, loss, data, epochs=1, batch_size=32, val=None, metrics=None,
        callbacks=(), shuffle=True, seed=None, training=None, backend=None, verbose=None,
        val_batch_size=None, terminate_on_nan=True) -> History:
    """Train ``optimizer``'s variables to minimise ``loss``; see ``Optimizer.fit``."""
    metrics = dict(metrics or {})
    _check_settings(loss, metrics, epochs, batch_size, val_batch_size)
    batched, fixed, rows = _split_feeds(data, "data")
    val_parts = _split_feeds(val, "val") if val is not None else None
    if training is not None:
        if not isinstance(training, Node) or training.dtype != np.bool_:
            raise UsageError(f"training must be a boolean placeholder, got {training!r}"
                             + at_user_line())
        fixed[training] = True
        if val_parts is not None:
            val_parts[1][training] = False
    callbacks = _callbacks(callbacks, terminate_on_nan)
    names = list(metrics)
    # made once per loss, metrics and backend, and reused by every later fit
    step_prog = optimizer.training_program(loss, metrics.values(), backend)
    eval_prog = _eval_program(step_prog, [loss, *metrics.values()]) \
        if val_parts is not None else None

    batcher = _Batcher(batched, fixed, rows, batch_size, shuffle, seed)
    history = History()
    keys = ["loss", *names]
    state = FitState(optimizer, history, step_prog, eval_prog,
                     keys + ["val_" + k for k in keys] if eval_prog is not None else keys)
    bar = progress(total=epochs * batcher.per_epoch, desc="fit", unit="batch",
                   disable=None if verbose is None else not verbose)
    loop = _Loop(optimizer, step_prog, names, callbacks, state, bar, epochs)
    checked = optimizer.check_finite
    if any(isinstance(c, TerminateOnNaN) for c in callbacks):
        optimizer.check_finite = True        # checked inside the step, before its commit
    try:
        for c in callbacks:
            c.on_train_begin(state)
        for epoch in range(epochs):
            logs = loop.epoch(epoch, batcher)
            if eval_prog is not None:
                vb, vf, vrows = val_parts
                got = _evaluate(eval_prog, vb, vf, vrows, val_batch_size, ["loss", *names])
                logs.update({"val_" + k: v for k, v in got.items()})
            history.append(logs)
            bar.update_metrics(**{k: v for k, v in logs.items() if k.startswith("val_")})
            for c in callbacks:
                c.on_epoch_end(epoch, logs, state)
            if state.stop:
                history.stopped_early = True
                break
    finally:
        optimizer.check_finite = checked
        bar.close()
    for c in callbacks:
        c.on_train_end(state)
    return history


class _Loop:
    """One epoch of steps, with the per-batch callbacks and the progress bar."""

    def __init__(self, optimizer, step_prog, names, callbacks, state, bar, epochs):
        self.optimizer, self.step_prog, self.names = optimizer, step_prog, names
        self.state, self.bar, self.epochs = state, bar, epochs
        self.begin = [c for c in callbacks if overrides(c, "on_batch_begin")]
        self.end = [c for c in callbacks if overrides(c, "on_batch_end")]
        self.epoch_begin = [c for c in callbacks if overrides(c, "on_epoch_begin")]

    def epoch(self, epoch, batcher):
        """Run one epoch; returns its logs (row-weighted means of the loss and metrics)."""
        state, bar, names, step = self.state, self.bar, self.names, self.optimizer.step
        state.epoch = epoch
        for c in self.epoch_begin:
            c.on_epoch_begin(epoch, state)
        outs, weights = [], []
        for k, (feed, n) in enumerate(batcher.epoch(self.optimizer.iterations)):
            state.batch = k
            for c in self.begin:
                c.on_batch_begin(k, {"size": n}, state)
            try:
                out = step(self.step_prog, feed)
            except NumericsError as e:
                raise _located(e, epoch, self.epochs, k, batcher.per_epoch) from e
            out = out if isinstance(out, list) else [out]
            outs.append(out)
            weights.append(n)
            bar.update_metrics(epoch=f"{epoch + 1}/{self.epochs}", loss=out[0],
                               **dict(zip(names, out[1:])))
            bar.update(1)
            if self.end:
                logs = {"loss": float(to_numpy(out[0])), "size": n}
                logs.update((name, float(to_numpy(v))) for name, v in zip(names, out[1:]))
                for c in self.end:
                    c.on_batch_end(k, logs, state)
        logs = {"loss": _mean([o[0] for o in outs], weights)}
        for j, name in enumerate(names):
            logs[name] = _mean([o[j + 1] for o in outs], weights)
        return logs


def _located(err, epoch, epochs, batch, per_epoch):
    """``err`` (a NumericsError of a step) again, its message led by where in the fit
    it happened; ``.epoch`` and ``.batch`` hold the 0-based numbers."""
    new = NumericsError(f"fit stopped in epoch {epoch + 1}/{epochs}, batch {batch + 1}/"
                        f"{per_epoch} (the variables hold the values from before this "
                        f"batch): {err}", node=err.node, trace=err.trace)
    new.epoch, new.batch = epoch, batch
    return new


def _bad_callback(c):
    raise UsageError(f"callbacks are fg.Callback instances or functions f(epoch, logs), "
                     f"got {c!r}" + at_user_line())


# -- opt.minimize's repr ----------------------------------------------------------------------

def describe_trainer(trainer) -> str:
    """``repr`` of the object ``opt.minimize(loss)`` returns."""
    opt, prog = trainer.optimizer, trainer.program
    n_params = sum(math.prod(v.shape) for v in opt.variables)
    lr = opt.lr
    lr = f"lr={lr:g}" if isinstance(lr, numbers.Real) else \
        f"lr schedule, now {opt.learning_rate():.3g}"
    names = ", ".join(v.name for v in opt.variables[:4]) + \
        (f", … ({len(opt.variables)} in all)" if len(opt.variables) > 4 else "")
    extras = prog.outputs[1 + len(opt.variables):]
    extra = f", with {', '.join(e.name for e in extras)}" if extras else ""
    return (f"<flowgrad Trainer: {type(opt).__name__}({lr}) minimizing "
            f"{prog.outputs[0].name!r}{extra} over [{names}] ({n_params:,} parameters); "
            f"{opt.iterations} step{'s' * (opt.iterations != 1)} taken; {prog.n_steps}-step program on "
            f"{prog.backend.name}>")
