"""Drawn rules of convolution and pooling (NCHW), declared as in ``rules``.

A convolution's adjoints are convolutions themselves (the transposed convolution for x̄,
the correlation of x with v̄ for w̄), so each caption names that operation and evaluates
with the op's own kernel on the drawn operands; the caption test then checks that the
caption names the right operation with the right operands and attributes.
"""
from __future__ import annotations

import numpy as np

from .rule_expr import Arg, Call, G, NoFlow, plus

V, X0, X1 = G(), Arg(0), Arg(1)


def _kernel(op_name, attrs):
    """The value of op ``op_name``'s kernel on the rule's operands, with ``attrs(c)``."""
    def value(c, *operands):
        from flowgrad.ops import REGISTRY
        return REGISTRY[op_name].forward(np, *operands, **attrs(c))
    return value


def _strides(c):
    return {"stride": c.attrs["stride"], "pads": c.attrs["pads"]}


def _with_kernel(shape_of):
    return lambda c: {"kernel": tuple(shape_of(c)[2:]), **_strides(c)}


def _window(c):
    return {"size": c.attrs["size"], "stride": c.attrs["stride"]}


def _pick(*rules):
    return lambda c: rules[c.argnum]


SHAPE_ONLY = NoFlow("it gives only the shape")
POSITIONS_ONLY = NoFlow("it only selects the positions")

CONV = {
    "conv2d": _pick(
        plus(Call("conv_transpose(v̄, {1})", _kernel("conv2d_grad_x", _strides), V, X1, X0)),
        plus(Call("correlate({0}, v̄)",
                  _kernel("conv2d_grad_w", _with_kernel(lambda c: c.shapes[1])), X0, V))),
    "conv2d_grad_x": _pick(
        plus(Call("conv2d(v̄, {1})", _kernel("conv2d", _strides), V, X1)),
        plus(Call("correlate(v̄, {0})",
                  _kernel("conv2d_grad_w", _with_kernel(lambda c: c.shapes[1])), V, X0)),
        SHAPE_ONLY),
    "conv2d_grad_w": _pick(
        plus(Call("conv_transpose({1}, v̄)", _kernel("conv2d_grad_x", _strides), X1, V, X0)),
        plus(Call("conv2d({0}, v̄)", _kernel("conv2d", _strides), X0, V))),
    "max_pool2d": _pick(
        plus(Call("v̄ at each window's first max of {0}",
                  _kernel("max_pool2d_scatter", _window), V, X0))),
    "max_pool2d_scatter": _pick(
        plus(Call("v̄ at each window's first max of {1}",
                  _kernel("max_pool2d_gather", _window), V, X1)),
        POSITIONS_ONLY),
    "max_pool2d_gather": _pick(
        plus(Call("v̄ put at each window's first max of {1}",
                  _kernel("max_pool2d_scatter", _window), V, X1)),
        POSITIONS_ONLY),
    "avg_pool2d": _pick(
        plus(Call("v̄ / size² into each window", _kernel("avg_pool2d_grad", _window),
                  V, X0))),
    "avg_pool2d_grad": _pick(
        plus(Call("avg_pool2d(v̄)", _kernel("avg_pool2d", _window), V)),
        SHAPE_ONLY),
}
