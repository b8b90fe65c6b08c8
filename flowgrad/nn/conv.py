"""Convolution and pooling layers, NCHW as PyTorch and ONNX, and Flatten.

    model = fg.nn.Sequential([
        fg.nn.Conv2D(16, 3, padding="same", activation="relu"),   # conv2d/W (16, C, 3, 3)
        fg.nn.MaxPool2D(2),
        fg.nn.Flatten(),
        fg.nn.Dense(10),
    ])

Conv2D's kernel ``W`` has PyTorch's layout (filters, in_channels, kh, kw), so weights load
from and compare to ``torch.nn.Conv2d.weight`` as they are.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from ..ops.base import at_user_line, shape_error
from .. import ops as _ops
from .. import random as _random
from . import init as _init
from .layers import Layer, activation_name, resolve_activation

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "Flatten"]


def _float_dtype(layer_dtype, x):
    if layer_dtype is not None:
        return np.dtype(layer_dtype)
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


class Conv2D(Layer):
    """``activation(conv2d(x, W, b, stride, padding))`` on x (N, C, H, W), with ``W`` of
    shape (filters, C, kh, kw) and ``b`` of shape (filters,).

    - ``kernel_size``, ``stride``: an int or (rows, columns); ``padding``: "valid",
      "same", an int or a pair (see :func:`fg.conv2d`).
    - ``init``: default "he" (he_normal) after ReLU, "glorot" otherwise, or any name or
      function of :mod:`fg.nn.init`. The kernel is drawn as (kh, kw, C, filters) and laid
      out as (filters, C, kh, kw), so fan_in = C·kh·kw (what He's scale needs) and
      fan_out = filters·kh·kw, as ``torch.nn.init`` computes them for the kernel.
    - ``seed``, ``dtype``, ``use_bias``, ``bias_init``: as :class:`Dense`.
    """

    default_name = "conv2d"

    def __init__(self, filters, kernel_size, stride=1, padding="valid", activation=None,
                 init=None, use_bias=True, name=None, *, bias_init="zeros", seed=None,
                 dtype=None):
        super().__init__(name)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or \
                filters < 1:
            raise ArgumentError(f"Conv2D: filters must be a positive int, got {filters!r}"
                                + at_user_line())
        self.filters = int(filters)
        self.kernel_size = _ops.conv.pair("Conv2D", kernel_size, "kernel_size")
        self.stride = _ops.conv.pair("Conv2D", stride, "stride")
        if isinstance(padding, str) and padding not in ("valid", "same"):
            raise ArgumentError(f"Conv2D: padding must be 'valid', 'same', an int or a pair "
                                f"of ints, got {padding!r}" + at_user_line())
        if not isinstance(padding, str):
            _ops.conv.pair("Conv2D", padding, "padding", minimum=0)
        self.padding = padding
        self.activation = resolve_activation(activation)
        if init is None:
            init = "he" if self.activation is _ops.relu else "glorot"
        self.init, self.bias_init = _init.get(init), _init.get(bias_init)
        self.use_bias = bool(use_bias)
        _init.rng(seed)   # a bad seed fails here, not when the layer is first called
        self.seed, self.dtype = seed, dtype
        self.W = self.b = None

    def build(self, x):
        if len(x.shape) != 4 or x.shape[1] is None:
            raise shape_error("Conv2D", (x,), "the input must be 4-d (N, C, H, W) with its "
                                              "channels C known when the layer is built")
        dtype = _float_dtype(self.dtype, x)
        seed = self.seed if self.seed is not None else _random.derived_seed(x.graph, "init")
        rng = _init.rng(seed)
        kh, kw = self.kernel_size
        hwio = self.init((kh, kw, x.shape[1], self.filters), seed=rng, dtype=dtype)
        self.W = self.add_variable(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)), "W")
        if self.use_bias:
            self.b = self.add_variable(self.bias_init((self.filters,), seed=rng, dtype=dtype),
                                       "b")

    def forward(self, x):
        z = _ops.conv2d(x, self.W, self.b, stride=self.stride, padding=self.padding)
        return self.activation(z) if self.activation is not None else z

    def _describe(self):
        act = f", {activation_name(self.activation)}" if self.activation is not None else ""
        kh, kw = self.kernel_size
        return f"{self.filters}@{kh}x{kw}{act}"


class _Pool(Layer):
    op = None

    def __init__(self, size, stride=None, name=None):
        super().__init__(name)
        self.size = _ops.conv.pair(type(self).__name__, size, "size")
        self.stride = self.size if stride is None else _ops.conv.pair(
            type(self).__name__, stride, "stride")

    def forward(self, x):
        return type(self).op(x, self.size, self.stride)

    def _describe(self):
        return f"{self.size[0]}x{self.size[1]}, stride {self.stride[0]}x{self.stride[1]}"


class MaxPool2D(_Pool):
    """:func:`fg.max_pool2d` as a layer: ``MaxPool2D(2)`` halves H and W (no variables)."""

    default_name = "max_pool2d"
    op = staticmethod(_ops.max_pool2d)


class AvgPool2D(_Pool):
    """:func:`fg.avg_pool2d` as a layer (no variables)."""

    default_name = "avg_pool2d"
    op = staticmethod(_ops.avg_pool2d)


class Flatten(Layer):
    """(N, d1, d2, …) → (N, d1·d2·…): every axis after the first (the batch) in one, in
    C order (as ``torch.flatten(x, 1)``). The trailing lengths must be known."""

    default_name = "flatten"

    def forward(self, x):
        if len(x.shape) < 2 or None in x.shape[1:]:
            raise shape_error("Flatten", (x,), "the input needs a batch axis and known "
                                               "lengths after it")
        return _ops.reshape(x, (-1, int(np.prod(x.shape[1:], dtype=np.int64))))
