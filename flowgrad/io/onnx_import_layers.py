"""ONNX importers for Conv, MaxPool and AveragePool (2-d, NCHW), BatchNormalization
(inference: its running statistics as inputs), LayerNormalization, GlobalAveragePool,
GlobalMaxPool and Reciprocal, registered into onnx_import_ops.IMPORTERS.

flowgrad computes a 2-d convolution without groups or dilation, and pooling without
padding, dilation or ceil mode. A node asking for anything else (a 1-d or 3-d input,
``group`` ≠ 1, ``dilations`` ≠ 1, ``auto_pad="SAME_LOWER"``, pooling ``pads``,
``ceil_mode=1`` where it changes the output, MaxPool's ``Indices`` output …) is an
``OnnxImportError`` naming the node. Asymmetric Conv pads become an ``fg.pad`` of zeros
before a "valid" convolution: the same values, the same derivatives.
"""
from __future__ import annotations

import flowgrad as fg

from .onnx_import_ops import axis_of, flag, imports
from .onnx_import_vocab import only_defaults, refuse


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _check_2d(ctx, x, what="its input"):
    if x.ndim != 4:
        raise refuse(ctx, f"{what} is {x.ndim}-d; only 2-d (NCHW, 4-d) is supported")


def _pair_attr(ctx, attrs, name, default):
    value = list(attrs.get(name, default))
    if len(value) != 2:
        raise refuse(ctx, f"{name}={value} must have 2 entries (2-d)")
    return tuple(int(v) for v in value)


@imports("Conv")
def _conv(ctx, n, ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    _check_2d(ctx, x)
    _check_2d(ctx, w, "its kernel")
    only_defaults(ctx, attrs, group=1)
    if _pair_attr(ctx, attrs, "dilations", (1, 1)) != (1, 1):
        raise refuse(ctx, f"dilations={list(attrs['dilations'])} is not supported (only 1)")
    kernel = tuple(w.shape[2:])
    if "kernel_shape" in attrs and _pair_attr(ctx, attrs, "kernel_shape", ()) != kernel:
        raise refuse(ctx, f"kernel_shape={list(attrs['kernel_shape'])} differs from the "
                          f"kernel's {list(kernel)}")
    stride = _pair_attr(ctx, attrs, "strides", (1, 1))
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    if auto == "SAME_UPPER":
        return fg.conv2d(x, w, b, stride=stride, padding="same")
    if auto == "VALID":
        return fg.conv2d(x, w, b, stride=stride, padding="valid")
    if auto != "NOTSET":
        raise refuse(ctx, f"auto_pad={auto!r} is not supported (NOTSET, VALID, SAME_UPPER)")
    top, left, bottom, right = _pads(ctx, attrs)
    if (top, left) == (bottom, right):
        return fg.conv2d(x, w, b, stride=stride, padding=(top, left))
    x = fg.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    return fg.conv2d(x, w, b, stride=stride, padding="valid")


def _pads(ctx, attrs):
    pads = [int(p) for p in attrs.get("pads", (0, 0, 0, 0))]
    if len(pads) != 4 or any(p < 0 for p in pads):
        raise refuse(ctx, f"pads={pads} must be 4 non-negative numbers (2-d)")
    return pads


def _pool(fg_pool):
    def imp(ctx, n, ins, attrs):
        x = ins[0]
        _check_2d(ctx, x)
        if len([o for o in n.output if o]) > 1:
            raise refuse(ctx, "its Indices output is not supported")
        size = _pair_attr(ctx, attrs, "kernel_shape", ())
        stride = _pair_attr(ctx, attrs, "strides", (1, 1))   # ONNX's default: 1, not size
        if _pair_attr(ctx, attrs, "dilations", (1, 1)) != (1, 1):
            raise refuse(ctx, f"dilations={list(attrs['dilations'])} is not supported")
        only_defaults(ctx, attrs, storage_order=0)
        auto = _text(attrs.get("auto_pad", "NOTSET"))
        if auto not in ("NOTSET", "VALID") or any(_pads(ctx, attrs)):
            raise refuse(ctx, "padding (pads or auto_pad SAME) is not supported: pad the "
                              "input first")
        if flag(ctx, attrs, "ceil_mode", 0) and _ceil_differs(x, size, stride):
            raise refuse(ctx, "ceil_mode=1 is not supported where it keeps a partial window")
        return fg_pool(x, size, stride)
    return imp


def _ceil_differs(x, size, stride):
    """Whether rounding the output length up adds a window (always, when H or W are
    known only at run time)."""
    for n, k, s in zip(x.shape[2:], size, stride):
        if n is None or (n - k) % s:
            return True
    return False


imports("MaxPool")(_pool(fg.max_pool2d))
imports("AveragePool")(_pool(fg.avg_pool2d))


# -- normalization and global pooling (what torch writes for BatchNorm1d, LayerNorm, ------
#    adaptive_avg_pool2d(x, 1)) and Reciprocal --------------------------------------------

def _one_output(ctx, n):
    if len([o for o in n.output if o]) > 1:
        raise refuse(ctx, "only its first output (Y) is supported")


def _per_channel(p, ndim):
    """A (C,) parameter shaped to broadcast along axis 1 of an ``ndim``-d input."""
    return fg.reshape(p, (-1,) + (1,) * (ndim - 2))


@imports("BatchNormalization")
def _batch_norm(ctx, n, ins, attrs):
    # inference form: the running statistics given as inputs
    _one_output(ctx, n)
    only_defaults(ctx, attrs, training_mode=0)
    x, scale, bias, mean, var = ins
    if x.ndim < 2:
        raise refuse(ctx, f"its input is {x.ndim}-d; it needs (N, C, …)")
    eps = float(attrs.get("epsilon", 1e-5))
    inv = scale / fg.sqrt(var + eps)
    return (x - _per_channel(mean, x.ndim)) * _per_channel(inv, x.ndim) + \
        _per_channel(bias, x.ndim)


@imports("LayerNormalization")
def _layer_norm(ctx, n, ins, attrs):
    # normalizes over the axes from ``axis`` on (opset 17); stash_type only says in which
    # precision ONNX may compute the statistics
    _one_output(ctx, n)
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axes = tuple(range(axis_of(ctx, attrs.get("axis", -1), x.ndim), x.ndim))
    d = x - fg.mean(x, axes, True)
    y = d / fg.sqrt(fg.mean(d * d, axes, True) + float(attrs.get("epsilon", 1e-5))) * scale
    return y if bias is None else y + bias


@imports("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, n, ins, attrs):
    x = ins[0]
    if x.ndim < 3:
        raise refuse(ctx, f"its input is {x.ndim}-d; it needs (N, C, spatial …)")
    reduce = fg.mean if n.op_type == "GlobalAveragePool" else fg.max
    return reduce(x, tuple(range(2, x.ndim)), True)


@imports("Reciprocal")
def _reciprocal(ctx, n, ins, attrs):
    import numpy as np
    return fg.div(np.ones((), ins[0].dtype), ins[0])
