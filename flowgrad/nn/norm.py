"""Normalisation layers: LayerNorm and BatchNorm (as ``torch.nn.LayerNorm`` and
``torch.nn.BatchNorm1d``/``BatchNorm2d``).

    ln = fg.nn.LayerNorm(64)          # normalises the last axis; variables gamma, beta
    y = ln(x)                         # (x − mean) / √(var + eps) · gamma + beta
    bn = fg.nn.BatchNorm(16, training=is_training)   # (N, C) or (N, C, H, W) inputs
    y = bn(x)                         # per channel, over the batch (and H, W)

Built from flowgrad ops (mean, subtraction, sqrt …), so its derivatives of every order are
theirs. The variance is the biased one (divided by n), as PyTorch normalises, computed
in two passes (the mean first) so that a large offset does not cancel it away.
BatchNorm's running statistics are *state* (flowgrad/state.py): declared updates that a
program writes once per successful run, read through ``stop_gradient``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..engine.lazy_errors import checked_whole, is_lazy, lazy_backend
from ..errors import ArgumentError, ShapeError, UsageError
from ..graph import Node
from ..ops.base import NONDIFF, Op, apply, at_user_line, float_dtype, shape_error
from ..ops.broadcast import shape_source
from .. import ops as _ops
from .. import state as _state
from .layers import Layer

__all__ = ["LayerNorm", "BatchNorm"]


class LayerNorm(Layer):
    """Normalise over the last ``len(features)`` axes, then scale by ``gamma`` and shift
    by ``beta`` (variables of shape ``features``, ones and zeros at first).

    ``features``: an int (the last axis's length) or a tuple (the trailing shape), as
    ``torch.nn.LayerNorm``'s normalized_shape; ``eps`` is added to the variance.
    """

    default_name = "layer_norm"

    def __init__(self, features, eps=1e-5, name=None, *, dtype=None):
        super().__init__(name)
        shape = (features,) if isinstance(features, numbers.Integral) else tuple(features)
        if not shape or any(isinstance(f, bool) or not isinstance(f, numbers.Integral)
                            or f < 1 for f in shape):
            raise ArgumentError(f"LayerNorm: features must be a positive int or a tuple of "
                                f"them, got {features!r}" + at_user_line())
        if not (isinstance(eps, numbers.Real) and eps >= 0 and np.isfinite(eps)):
            raise ArgumentError(f"LayerNorm: eps must be a finite number >= 0, got {eps!r}"
                                + at_user_line())
        self.features, self.eps, self.dtype = tuple(int(f) for f in shape), float(eps), dtype
        self.gamma = self.beta = None

    def build(self, x):
        k = len(self.features)
        if len(x.shape) < k or x.shape[-k:] != self.features:
            raise shape_error("LayerNorm", (x,), f"the input's trailing shape must be "
                                                 f"{self.features}")
        dtype = np.dtype(self.dtype) if self.dtype is not None else (
            x.dtype if x.dtype.kind == "f" else np.dtype(np.float64))
        self.gamma = self.add_variable(np.ones(self.features, dtype), "gamma")
        self.beta = self.add_variable(np.zeros(self.features, dtype), "beta")

    def forward(self, x):
        k = len(self.features)
        if len(x.shape) < k or x.shape[-k:] != self.features:
            raise shape_error("LayerNorm", (x,), f"the input's trailing shape must be "
                                                 f"{self.features}")
        axes = tuple(range(-k, 0))
        x, out = half_widened_input(x, self.gamma)
        d = x - _ops.mean(x, axis=axes, keepdims=True)
        var = _ops.mean(d * d, axis=axes, keepdims=True)
        return rounded_back(d / _ops.sqrt(var + self.eps) * self.gamma + self.beta, out)

    def _describe(self):
        return f"{self.features}, eps={self.eps:g}"


def half_widened_input(x, gamma):
    """``x`` in float32 where it is float16, and the dtype the layer's output rounds back
    to (None: x was not float16). Normalising a float16 x in float16 squared its
    deviations there: one past 256 made the variance inf and every output 0, and the
    mean of values near 1000 was off by up to 0.25; torch's half LayerNorm and BatchNorm
    compute in float32 and round once, and so do these (no cost for float32/float64)."""
    if x.dtype != np.float16:
        return x, None
    return _ops.astype(x, np.float32), np.result_type(np.float16, gamma.dtype)


def rounded_back(y, out):
    """``y`` cast to ``out`` (from :func:`half_widened_input`) where that is given."""
    return y if out is None or y.dtype == out else _ops.astype(y, out)


def _check_training(training):
    """``training`` as a Python bool, or the 0-d boolean node it is."""
    if isinstance(training, (bool, np.bool_)):
        return bool(training)
    if isinstance(training, Node) and training.dtype == np.bool_ and training.shape == ():
        return training
    raise UsageError(f"BatchNorm: training must be a bool or a 0-d boolean placeholder, "
                     f"got {training!r}" + at_user_line())


# -- the per-channel count, refused while training when it is below two ---------------------

_ONE_VALUE = ("training needs more than one value per channel (torch.nn.BatchNorm refuses "
              "it too: \"Expected more than 1 value per channel when training\")")


def _refuse_one_value(training, n):
    """torch refuses a lone value; flowgrad refuses none as well (an empty batch made
    the running statistics NaN). Raised as a ShapeError, as when built: the run's
    RunError is a ShapeError too (diagnose.run_error keeps the class)."""
    if n < 2 and bool(training):
        raise ShapeError(f"BatchNorm: {_ONE_VALUE}; got {n} per channel")


def _count_dtype(dtype):
    """The count's dtype: x's float dtype, at least float32 (a float16 count is inf
    beyond 65504 values a channel, and inexact beyond 2048)."""
    return np.promote_types(float_dtype(dtype), np.float32)


def _count_forward(xp, x, training, axis):
    n = int(np.prod([x.shape[a] for a in axis]))
    count = xp.asarray(n, dtype=_count_dtype(x.dtype))   # x is read for its shape only
    if is_lazy(xp, training):    # dask: checked when the outputs are computed, on its value
        return checked_whole(lazy_backend(xp), count, _refuse_one_value, n, on=training)
    _refuse_one_value(training, n)
    return count


def _count_infer(x, training, axis):
    if training.shape != () or training.dtype != np.bool_:
        raise shape_error("BatchNorm", (x, training), "training must be a 0-d boolean")
    return (), _count_dtype(x.dtype)


batch_norm_count = Op(
    "batch_norm_count", _count_forward, _count_infer, vjp=(NONDIFF, NONDIFF),
    jvp=(NONDIFF, NONDIFF),
    doc="How many entries of x a BatchNorm channel averages over axis (x's float dtype, "
        "at least float32), "
        "checked per run: fewer than two while training (argument 1 true) stops the run, "
        "as torch.nn.BatchNorm does. A count: zero derivative")


def _checked_count(x, axes, training):
    """The count node of ``batch_norm_count`` for ``x`` (``training``: the layer's
    placeholder, or a constant True)."""
    if not isinstance(training, Node):
        training = _ops.as_node(np.bool_(True), x.graph)
    return apply(batch_norm_count, shape_source(x, float_dtype(x.dtype)), training,
                 axis=axes)


def _counted_variance(d, axes, count):
    """Σ d² / count, numpy's mean of d² through the checked count. A float16 d is summed
    in the count's float32, as numpy's mean and torch's half BatchNorm accumulate: its
    own sum overflows past 65504 (inf / inf: every output NaN); float32 and float64 build
    the sum and the division alone."""
    d2 = d * d
    if d2.dtype != count.dtype:
        d2 = _ops.astype(d2, count.dtype)
    var = _ops.sum(d2, axis=axes, keepdims=True) / count
    return var if var.dtype == d.dtype else _ops.astype(var, d.dtype)


class BatchNorm(Layer):
    """Normalise each channel (axis 1) of an (N, C) or (N, C, H, W) input over the batch
    (and H, W), then scale by ``gamma`` and shift by ``beta`` (variables of shape (C,)),
    as ``torch.nn.BatchNorm1d``/``BatchNorm2d``.

    Training normalises with the batch's mean and biased variance, and moves the state
    ``running_mean``/``running_var`` (zeros and ones at first) toward the batch's mean
    and *unbiased* variance: ``r ← (1 − momentum)·r + momentum·batch``, once per run of
    a program that uses the layer. Not training normalises with the running statistics.
    ``training``: a Python bool, or a 0-d boolean placeholder chosen per run (fed True
    to train, False to evaluate: both branches are in the graph, ``fg.where`` picks).
    The running statistics are in ``layer.state``, not ``layer.variables``: optimizers
    never see them; ``save_variables(path, graph)`` (or ``layer.variables +
    layer.state``) saves them. ``momentum`` is a number in [0, 1] (torch's
    ``momentum=None``, a cumulative average, is not offered).

    Training needs more than one value per channel (N·H·W ≥ 2), as torch's: a batch
    that gives one is a ShapeError when built where the shape is known and training is
    True, else a RunError (also a ShapeError) when a run trains on it, naming the
    layer's ``batch_norm_count`` node and the line that called the layer; evaluating
    it is fine. An empty batch is refused too (torch hands back an empty output and
    leaves its statistics; here their update would be NaN).
    """

    default_name = "batch_norm"

    def __init__(self, features, momentum=0.1, eps=1e-5, training=True, name=None, *,
                 dtype=None):
        super().__init__(name)
        if isinstance(features, bool) or not isinstance(features, numbers.Integral) or \
                features < 1:
            raise ArgumentError(f"BatchNorm: features must be a positive int (the channels), "
                                f"got {features!r}" + at_user_line())
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or \
                not 0 <= momentum <= 1:
            raise ArgumentError(f"BatchNorm: momentum must be a number in [0, 1], got "
                                f"{momentum!r}" + at_user_line())
        if not (isinstance(eps, numbers.Real) and eps >= 0 and np.isfinite(eps)):
            raise ArgumentError(f"BatchNorm: eps must be a finite number >= 0, got {eps!r}"
                                + at_user_line())
        self.features, self.momentum, self.eps = int(features), float(momentum), float(eps)
        self.training, self.dtype = _check_training(training), dtype
        self.gamma = self.beta = self.running_mean = self.running_var = None

    def _axes(self, x):
        """The reduced axes and the per-channel shape for ``x``; a ShapeError else."""
        if len(x.shape) not in (2, 4) or x.shape[1] != self.features:
            raise shape_error("BatchNorm", (x,), f"needs an (N, C) or (N, C, H, W) input "
                                                 f"with C = {self.features}")
        if x.dtype.kind != "f":
            raise shape_error("BatchNorm", (x,), f"needs a float input, not {x.dtype}")
        if len(x.shape) == 2:
            return (0,), (1, self.features)
        return (0, 2, 3), (1, self.features, 1, 1)

    def build(self, x):
        self._axes(x)
        if isinstance(self.training, Node) and self.training.graph is not x.graph:
            raise shape_error("BatchNorm", (x,), "training belongs to another graph")
        dtype = np.dtype(self.dtype) if self.dtype is not None else x.dtype
        c = (self.features,)
        self.gamma = self.add_variable(np.ones(c, dtype), "gamma")
        self.beta = self.add_variable(np.zeros(c, dtype), "beta")
        self.running_mean = _state.state_variable(np.zeros(c, dtype), "running_mean")
        self.running_var = _state.state_variable(np.ones(c, dtype), "running_var")
        self._state += [self.running_mean, self.running_var]

    def forward(self, x):
        axes, per_channel = self._axes(x)
        gamma, beta = (_ops.reshape(v, per_channel) for v in (self.gamma, self.beta))
        rm, rv = self.running_mean, self.running_var
        x, out = half_widened_input(x, gamma)
        if self.training is False:
            return rounded_back(self._evaluated(x, per_channel, gamma, beta), out)
        mean = _ops.mean(x, axis=axes, keepdims=True)
        d = x - mean
        count = self._count(x, axes)
        if count is None:
            var = _ops.mean(d * d, axis=axes, keepdims=True)   # biased: what normalises
        else:   # the same mean, through the checked count: y refuses a lone value too
            var = _counted_variance(d, axes, count)
        y = d / _ops.sqrt(var + self.eps) * gamma + beta
        new_mean, new_var = self._running(x, axes, mean, var, count)
        if self.training is not True:      # a placeholder: both branches, where picks
            y = _ops.where(self.training, y, self._evaluated(x, per_channel, gamma, beta))
            new_mean = _ops.where(self.training, new_mean, rm)
            new_var = _ops.where(self.training, new_var, rv)
        _state.declare_update(rm, new_mean, mean)     # written once per run that
        _state.declare_update(rv, new_var, mean)      # computes this batch's mean
        return rounded_back(y, out)

    def _evaluated(self, x, per_channel, gamma, beta):
        """``x`` normalised by the running statistics, which are read through
        stop_gradient: state is never differentiated."""
        seen_mean = _ops.reshape(_ops.stop_gradient(self.running_mean), per_channel)
        seen_var = _ops.reshape(_ops.stop_gradient(self.running_var), per_channel)
        return (x - seen_mean) / _ops.sqrt(seen_var + self.eps) * gamma + beta

    def _count(self, x, axes):
        """The values a channel averages, as a checked node (``batch_norm_count``) where
        a training run might see fewer than two: a run-time length, or a known lone
        value with a training placeholder (evaluating it is fine). None where no run
        can (a known count of two or more); a known lone (or no) value with
        ``training=True`` is a ShapeError now."""
        dims = [x.shape[a] for a in axes]
        if None not in dims:
            n = int(np.prod(dims))
            if n >= 2 or self.training is False:
                return None
            if self.training is True:
                raise shape_error("BatchNorm", (x,), f"{_ONE_VALUE}; got {n} per channel")
        return _checked_count(x, axes, self.training)

    def _running(self, x, axes, mean, var, count):
        """The running statistics' new values: a step of ``momentum`` toward the batch
        mean and the unbiased variance (biased · n/(n − 1), n the values a channel
        averages, ``count`` where it is a node; a lone value is never trained on, and
        max(n − 1, 1) keeps an evaluating run's unused branch finite)."""
        if count is not None:
            factor = count / _ops.maximum(count - 1.0, 1.0)
        else:
            n = int(np.prod([x.shape[a] for a in axes]))
            factor = n / max(n - 1, 1)
        c, m, dtype = (self.features,), self.momentum, self.running_mean.dtype
        batch_mean = _ops.reshape(_ops.stop_gradient(mean), c)
        batch_var = _ops.reshape(_ops.stop_gradient(var), c) * factor
        # in the wider of the two dtypes: a float16 x's statistics are float32
        # (half_widened_input), and the step is taken there and rounded once, as torch's
        # (the unbiased variance alone may pass 65504); a float64 state widens them first
        wide = np.promote_types(dtype, batch_mean.dtype)
        if batch_mean.dtype != wide:
            batch_mean, batch_var = _ops.astype(batch_mean, wide), _ops.astype(batch_var, wide)
        new_mean = self.running_mean * (1.0 - m) + batch_mean * m
        new_var = self.running_var * (1.0 - m) + batch_var * m
        return (new_mean if new_mean.dtype == dtype else _ops.astype(new_mean, dtype),
                new_var if new_var.dtype == dtype else _ops.astype(new_var, dtype))

    def _describe(self):
        training = self.training if isinstance(self.training, bool) else self.training.name
        return f"{self.features}, momentum={self.momentum:g}, eps={self.eps:g}, " \
               f"training={training}"
