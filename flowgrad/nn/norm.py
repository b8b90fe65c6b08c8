"""Normalisation layers: LayerNorm (as ``torch.nn.LayerNorm``).

    ln = fg.nn.LayerNorm(64)          # normalises the last axis; variables gamma, beta
    y = ln(x)                         # (x − mean) / √(var + eps) · gamma + beta

Built from flowgrad ops (mean, subtraction, sqrt …), so its derivatives of every order are
theirs. The variance is the biased one (divided by n), as PyTorch normalises, computed
in two passes (the mean first) so that a large offset does not cancel it away.

BatchNorm is not here yet: its running mean and variance are state that a program must
write once per run in training mode, which the engine does not offer (see the issue).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..ops.base import shape_error
from .. import ops as _ops
from .layers import Layer

__all__ = ["LayerNorm"]


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
            raise ValueError(f"LayerNorm: features must be a positive int or a tuple of "
                             f"them, got {features!r}")
        if not (isinstance(eps, numbers.Real) and eps >= 0 and np.isfinite(eps)):
            raise ValueError(f"LayerNorm: eps must be a finite number >= 0, got {eps!r}")
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
        d = x - _ops.mean(x, axis=axes, keepdims=True)
        var = _ops.mean(d * d, axis=axes, keepdims=True)
        return d / _ops.sqrt(var + self.eps) * self.gamma + self.beta

    def _describe(self):
        return f"{self.features}, eps={self.eps:g}"
