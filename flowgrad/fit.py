"""The fit loop behind ``opt.fit``: epochs of shuffled mini-batches, metrics, validation,
callbacks (early stopping) and a History.

    hist = opt.fit(loss, data={x: X, t: T}, epochs=20, batch_size=64,
                   val={x: Xv, t: Tv}, metrics={"acc": acc}, training=is_training,
                   callbacks=[fg.EarlyStopping("val_acc", patience=3)])
    hist["val_acc"][-1]; hist.plot("history.png")

Two programs are compiled once: the training step (the loss, one gradient per
variable, and the metrics) and the evaluation (the loss and the metrics, no
gradient), which computes the validation numbers after each epoch. Feeds in ``data``
with rows (arrays of ndim ≥ 1, all with the same number of rows) are cut into
batches; scalars (a flag, a rate) are fed whole to every step. Epoch figures are
means over the epoch's rows (each batch weighted by its size).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .backends import to_numpy
from .graph import Node
from .progress import progress
from .scheduler import Program

__all__ = ["History", "Callback", "EarlyStopping", "fit"]


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

    def plot(self, path=None, keys=None):
        """One panel per quantity (loss, each metric): the training curve and, where
        there is one, the validation curve, against the epoch. Saves to ``path`` if
        given; returns the matplotlib Figure (pick a backend first, e.g. Agg)."""
        import matplotlib.pyplot as plt
        bases = []
        for k in self if keys is None else keys:
            base = k[4:] if k.startswith("val_") else k
            if base not in bases:
                bases.append(base)
        if not bases:
            raise ValueError("this History is empty: nothing to plot")
        fig, axes = plt.subplots(1, len(bases), figsize=(4.4 * len(bases), 3.4),
                                 squeeze=False)
        for ax, base in zip(axes[0], bases):
            for key, label in ((base, "training"), ("val_" + base, "validation")):
                if key in self:
                    ys = self[key]
                    ax.plot(range(1, len(ys) + 1), ys, marker="." if len(ys) < 30 else None,
                            label=label)
            if self.best_epoch is not None:
                ax.axvline(self.best_epoch + 1, color="gray", ls=":", lw=1, label="best (restored)")
            ax.set_title(base)
            ax.set_xlabel("epoch")
            ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def __repr__(self):
        parts = []
        for k, v in self.items():
            if v:
                parts.append(f"{k} {v[0]:.4g} → {v[-1]:.4g}" if len(v) > 1 else f"{k} {v[0]:.4g}")
        extra = f"; restored epoch {self.best_epoch + 1}" if self.best_epoch is not None else ""
        return f"<flowgrad.History {self.epochs} epochs: {', '.join(parts)}{extra}>"


class Callback:
    """Hooks of the fit loop. ``on_epoch_end`` may set ``state.stop = True`` to end it."""

    def on_train_begin(self, state):
        pass

    def on_epoch_end(self, epoch, logs, state):
        pass

    def on_train_end(self, state):
        pass


class _FunctionCallback(Callback):
    """A plain function ``f(epoch, logs)``; returning True stops training."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, epoch, logs, state):
        if self.fn(epoch, logs) is True:
            state.stop = True


def _snapshot(variables):
    return [v._d["value"].copy() if hasattr(v._d["value"], "copy") else v._d["value"]
            for v in variables]


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a key of the epoch logs: "val_loss", "val_acc" …) has not
    improved by more than ``min_delta`` for ``patience`` epochs, and (``restore_best``)
    put back the variables of the best epoch. ``mode`` is "min", "max" or "auto" (max
    for names holding "acc", min otherwise)."""

    def __init__(self, monitor="val_loss", patience=5, mode="auto", min_delta=0.0,
                 restore_best=True):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        if not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"patience must be a non-negative int, got {patience!r}")
        self.monitor, self.patience, self.mode = monitor, int(patience), mode
        self.min_delta, self.restore_best = abs(float(min_delta)), bool(restore_best)

    def on_train_begin(self, state):
        self.best, self.best_epoch, self.wait, self._best_values = None, None, 0, None

    def _better(self, value):
        if value != value:          # NaN never improves
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs, state):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit does "
                             f"not record; it records {sorted(logs)}")
        value = logs[self.monitor]
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_values = _snapshot(state.variables)
        else:
            self.wait += 1
            if self.wait > self.patience:
                state.stop = True

    def on_train_end(self, state):
        if self.restore_best and self._best_values is not None:
            for var, value in zip(state.variables, self._best_values):
                var._d["value"] = value
            state.history.best_epoch = self.best_epoch

    def __repr__(self):
        return (f"EarlyStopping({self.monitor!r}, patience={self.patience}, "
                f"mode={self.mode!r})")


class FitState:
    """What callbacks see: the optimizer, its variables, the history, ``stop``, and the
    two compiled programs (``step_program``: loss, gradients, metrics; ``eval_program``:
    loss and metrics only, or None without ``val``)."""

    def __init__(self, optimizer, history, step_program, eval_program):
        self.optimizer, self.variables, self.history = optimizer, optimizer.variables, history
        self.step_program, self.eval_program = step_program, eval_program
        self.stop = False
        self.epoch = 0


# -- feeds ------------------------------------------------------------------------------

def _split_feeds(data, what):
    """(batched {key: array}, fixed {key: value}, rows) of a feed dict."""
    if not isinstance(data, dict):
        raise TypeError(f"{what} must be a dict of feeds {{placeholder: array}}, "
                        f"got {type(data).__name__}")
    batched, fixed = {}, {}
    for key, value in data.items():
        if not isinstance(key, (Node, str)):
            raise TypeError(f"{what}: feed keys are placeholders or their names, got {key!r}")
        if isinstance(value, (bool, numbers.Number)) or np.ndim(value) == 0:
            fixed[key] = value
        else:
            batched[key] = value if hasattr(value, "shape") else np.asarray(value)
    rows = {len(v) for v in batched.values()}
    if len(rows) > 1:
        sizes = {(k.name if isinstance(k, Node) else k): len(v) for k, v in batched.items()}
        raise ValueError(f"{what}: every array must have the same number of rows, got {sizes}")
    return batched, fixed, rows.pop() if rows else None


def _mean(values, weights):
    vals = to_numpy(list(values))
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(np.asarray([np.asarray(v, dtype=np.float64) for v in vals]), w) / w.sum())


def _evaluate(prog, batched, fixed, rows, batch_size, names):
    if rows is None:
        outs, weights = [prog(dict(fixed))], [1]
    else:
        size = batch_size or rows
        outs, weights = [], []
        for start in range(0, rows, size):
            feed = {k: v[start:start + size] for k, v in batched.items()}
            feed.update(fixed)
            outs.append(prog(feed))
            weights.append(min(size, rows - start))
    return {name: _mean([o[k] for o in outs], weights) for k, name in enumerate(names)}


# -- the loop -------------------------------------------------------------------------------

def fit(optimizer, loss, data, epochs=1, batch_size=32, val=None, metrics=None,
        callbacks=(), shuffle=True, seed=None, training=None, backend=None, verbose=None,
        val_batch_size=None) -> History:
    """Train ``optimizer``'s variables to minimise ``loss``; see ``Optimizer.fit``."""
    from .autodiff import grad
    if not isinstance(loss, Node) or loss.shape != ():
        raise ValueError(f"fit minimises a scalar loss node, got {loss!r}")
    metrics = dict(metrics or {})
    for name, node in metrics.items():
        if not isinstance(name, str) or name == "loss" or name.startswith("val_"):
            raise ValueError(f"metric names are strings other than 'loss' and 'val_…', "
                             f"got {name!r}")
        if not isinstance(node, Node) or node.shape != ():
            raise ValueError(f"metric {name!r} must be a scalar node, got {node!r}")
    if not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if batch_size is not None and (not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (full batch), "
                         f"got {batch_size!r}")
    batched, fixed, rows = _split_feeds(data, "data")
    val_parts = _split_feeds(val, "val") if val is not None else None
    if training is not None:
        if not isinstance(training, Node) or training.dtype != np.bool_:
            raise TypeError(f"training must be a boolean placeholder, got {training!r}")
        fixed[training] = True
        if val_parts is not None:
            val_parts[1][training] = False
    callbacks = [c if isinstance(c, Callback) else _FunctionCallback(c) if callable(c)
                 else _bad_callback(c) for c in callbacks]

    names = list(metrics)
    step_prog = Program([loss, *grad(loss, optimizer.variables), *metrics.values()], backend)
    eval_prog = Program([loss, *metrics.values()], step_prog.backend) \
        if val_parts is not None else None

    size = rows if batch_size is None or rows is None else min(batch_size, rows)
    per_epoch = 1 if rows is None else math.ceil(rows / size)
    rng = np.random.default_rng(seed)
    history = History()
    state = FitState(optimizer, history, step_prog, eval_prog)
    bar = progress(total=epochs * per_epoch, desc="fit", unit="batch",
                   disable=None if verbose is None else not verbose)
    for c in callbacks:
        c.on_train_begin(state)
    try:
        for epoch in range(epochs):
            state.epoch = epoch
            order = rng.permutation(rows) if shuffle and rows is not None else None
            outs, weights = [], []
            for k in range(per_epoch):
                if rows is None:
                    feed, n = dict(fixed), 1
                else:
                    idx = slice(k * size, (k + 1) * size) if order is None else \
                        order[k * size:(k + 1) * size]
                    feed = {key: v[idx] for key, v in batched.items()}
                    feed.update(fixed)
                    n = min(size, rows - k * size)
                out = optimizer.step(step_prog, feed)
                out = out if isinstance(out, list) else [out]
                outs.append(out)
                weights.append(n)
                bar.update_metrics(epoch=f"{epoch + 1}/{epochs}", loss=out[0],
                                   **dict(zip(names, out[1:])))
                bar.update(1)
            logs = {"loss": _mean([o[0] for o in outs], weights)}
            for j, name in enumerate(names):
                logs[name] = _mean([o[j + 1] for o in outs], weights)
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
        bar.close()
    for c in callbacks:
        c.on_train_end(state)
    return history


def _bad_callback(c):
    raise TypeError(f"callbacks are fg.Callback instances or functions f(epoch, logs), "
                    f"got {c!r}")


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
