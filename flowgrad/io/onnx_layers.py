"""ONNX converters for conv2d, max_pool2d, avg_pool2d and their rules' ops (NCHW, as ONNX),
and for fg.nn.Embedding's index check.

The forward ops map to ONNX's ``Conv``, ``MaxPool`` and ``AveragePool`` and the
x-adjoints to ``ConvTranspose`` — except in float64: onnxruntime has no double kernel for
Conv, ConvTranspose or AveragePool, so a float64 node is written as flowgrad computes it,
im2col from strided ``Slice``s and one ``MatMul`` (and col2im from ``Pad``s), which runs
everywhere and matches flowgrad to rounding. conv2d's w-adjoint is always that im2col
product. Max pooling's adjoint and tangent use MaxPool's ``Indices`` output (the first of
tied maxima, as flowgrad), with ScatterElements / GatherElements. onnxruntime's MaxPool
skips a NaN that is not first in its window, so a float max_pool2d adds a NaN-window mask
(MaxPool of IsNaN) and its index helpers send such a window to its last NaN, as flowgrad:
values and rules match flowgrad with NaN and ±inf inputs too.

The forms that build slices (float64, the w-adjoint) and the transposed convolutions
need the input's channels, height and width known when the graph is built; the batch
may be None.
"""
from __future__ import annotations

import numpy as np

from .onnx_ops import converts

_NATIVE = ("float16", "float32")   # dtypes onnxruntime's Conv family runs


def _onnx_pads(pads):
    """flowgrad's (top, bottom, left, right) as ONNX's [top, left, bottom, right]."""
    return [pads[0], pads[2], pads[1], pads[3]]


def _static(e, node, what="the input's channels, height and width", first=1):
    """(C, H, W) of ``node`` (its dims from ``first`` on), refusing with OnnxExportError
    when one is unknown."""
    if None in node.shape[first:]:
        from .onnx_export import OnnxExportError
        raise OnnxExportError(f"op {e.node.op.name!r} (node {e.node.name!r}): its ONNX form "
                              f"needs {what} known when the graph is built")
    return node.shape[first:]


def _pad_hw(e, x, pads):
    if not any(pads):
        return x
    return e.typed("Pad", [x, e.ints([0, 0, pads[0], pads[2], 0, 0, pads[1], pads[3]])],
                   e.node.dtype, "order", data=(0,))


def _window(e, x, i, j, stride, out_hw):
    """The slice of the padded input that kernel offset (i, j) reads."""
    (sh, sw), (oh, ow) = stride, out_hw
    return e.op("Slice", [x, e.ints([i, j]), e.ints([i + sh * (oh - 1) + 1,
                                                     j + sw * (ow - 1) + 1]),
                          e.ints([2, 3]), e.ints([sh, sw])])


def _offsets(kernel):
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]


def _im2col(e, xpad, channels, kernel, stride, out_hw):
    """(N, C·kh·kw, OH·OW), channel-major then offset, as flowgrad's kernel."""
    parts = [e.op("Unsqueeze", [_window(e, xpad, i, j, stride, out_hw), e.ints([2])])
             for i, j in _offsets(kernel)]
    cols = e.op("Concat", parts, axis=2) if len(parts) > 1 else parts[0]
    return e.op("Reshape", [cols, e.ints([0, channels * len(parts), -1])])


def _dilate(e, t, stride, out_hw):
    """t (N, C, OH, OW) with stride − 1 zeros between entries along H and W."""
    (sh, sw), (oh, ow) = stride, out_hw
    if sw > 1:
        t = e.op("Pad", [e.op("Unsqueeze", [t, e.ints([4])]),
                         e.ints([0, 0, 0, 0, 0, 0, 0, 0, 0, sw - 1])])
        t = e.op("Reshape", [t, e.ints([0, 0, oh, ow * sw])])
        t = e.op("Slice", [t, e.ints([0]), e.ints([(ow - 1) * sw + 1]), e.ints([3])])
    if sh > 1:
        wd = (ow - 1) * sw + 1
        t = e.op("Pad", [e.op("Unsqueeze", [t, e.ints([3])]),
                         e.ints([0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0])])
        t = e.op("Reshape", [t, e.ints([0, 0, oh * sh, wd])])
        t = e.op("Slice", [t, e.ints([0]), e.ints([(oh - 1) * sh + 1]), e.ints([2])])
    return t


def _col2im(e, part, hw, kernel, stride, pads, out_hw):
    """Σ_k part(k) (N, C, OH, OW) added at kernel offset k's positions of the padded
    input, cropped to ``hw``: the adjoint of taking the windows."""
    hp, wp = hw[0] + pads[0] + pads[1], hw[1] + pads[2] + pads[3]
    hd, wd = ((n - 1) * s + 1 for n, s in zip(out_hw, stride))
    total = None
    for k, (i, j) in enumerate(_offsets(kernel)):
        t = _dilate(e, part(k), stride, out_hw)
        t = e.op("Pad", [t, e.ints([0, 0, i, j, 0, 0, hp - i - hd, wp - j - wd])])
        total = t if total is None else e.op("Add", [total, t])
    return e.op("Slice", [total, e.ints([pads[0], pads[2]]),
                          e.ints([pads[0] + hw[0], pads[2] + hw[1]]), e.ints([2, 3])])


# -- conv2d -------------------------------------------------------------------------------------

@converts("conv2d")
def _conv2d(e, stride, pads):
    if e.node.dtype.name in _NATIVE:
        return e.op("Conv", [e.arg(0), e.arg(1)], strides=list(stride),
                    pads=_onnx_pads(pads))
    x, w = e.node.inputs
    c = _static(e, x)[0]
    o, _, kh, kw = w.shape
    o = -1 if o is None else o
    out_hw = e.node.shape[2:]
    cols = _im2col(e, _pad_hw(e, e.arg(0), pads), c, (kh, kw), stride, out_hw)
    # the kernel's output channels O may be known only at run time (a placeholder's
    # None): then reshapes infer it (-1), never write None
    out = e.typed("MatMul", [e.op("Reshape", [e.arg(1), e.ints([o, c * kh * kw])]), cols],
                  e.node.dtype, "ring")
    return e.op("Reshape", [out, e.ints([0, o, *out_hw])])


@converts("conv2d_grad_x")
def _conv2d_grad_x(e, stride, pads):
    g, w, x = e.node.inputs
    c, h, wd = _static(e, x)
    _, _, kh, kw = w.shape     # O may be None: reshapes infer (-1) or copy (0) it
    out_hw = g.shape[2:]
    if e.node.dtype.name in _NATIVE:
        # output_padding restores the rows/columns the forward's stride dropped
        extra = [n + lo + hi - k - s * (m - 1) for n, k, s, lo, hi, m in
                 zip((h, wd), (kh, kw), stride, pads[0::2], pads[1::2], out_hw)]
        return e.op("ConvTranspose", [e.arg(0), e.arg(1)], strides=list(stride),
                    pads=_onnx_pads(pads), output_padding=extra)
    w2t = e.op("Transpose", [e.op("Reshape", [e.arg(1), e.ints([-1, c * kh * kw])])])
    cols = e.op("MatMul", [w2t, e.op("Reshape", [e.arg(0), e.ints([0, 0, -1])])])
    cols = e.op("Reshape", [cols, e.ints([0, c, kh * kw, *out_hw])])

    def part(k):
        return e.op("Squeeze", [e.op("Slice", [cols, e.ints([k]), e.ints([k + 1]),
                                               e.ints([2])]), e.ints([2])])
    return _col2im(e, part, (h, wd), (kh, kw), stride, pads, out_hw)


@converts("conv2d_grad_w")
def _conv2d_grad_w(e, kernel, stride, pads):
    # w̄ = Σ_n v̄[n] colsᵀ[n], as (O, C, kh, kw)
    x, g = e.node.inputs
    c = _static(e, x)[0]
    cols = _im2col(e, _pad_hw(e, e.arg(0), pads), c, kernel, stride, g.shape[2:])
    # O (g's channels) may be None: copied (0) or inferred (-1), never written
    prod = e.op("MatMul", [e.op("Reshape", [e.arg(1), e.ints([0, 0, -1])]),
                           e.op("Transpose", [cols], perm=[0, 2, 1])])
    dw = e.op("ReduceSum", [prod, e.ints([0])], keepdims=0)
    return e.op("Reshape", [dw, e.ints([-1, c, *kernel])])


# -- pooling ------------------------------------------------------------------------------------

def _pool_attrs(size, stride):
    return {"kernel_shape": list(size), "strides": list(stride)}


def _nan_windows(e, x, dtype, size, stride):
    """Per window, whether it holds a NaN: MaxPool of IsNaN as 0/1 (a 0/1 tensor has no
    NaN, and ±inf play no part, so this is exact)."""
    flags = e.op("Cast", [e.op("IsNaN", [x])], to=e.elem(dtype))
    return e.op("Greater", [e.op("MaxPool", [flags], **_pool_attrs(size, stride)),
                            e.const(0, dtype)])


@converts("max_pool2d")
def _max_pool2d(e, size, stride):
    # onnxruntime's MaxPool skips a NaN that is not first in its window ([1, nan, 2, 3]
    # pools to 3); flowgrad, numpy's maximum and PyTorch give NaN: put NaN back there
    pooled = e.typed("MaxPool", [e.arg(0)], e.node.dtype, "order", **_pool_attrs(size, stride))
    if e.node.dtype.kind != "f":
        return pooled
    nan = e.const(np.nan, e.node.dtype)
    return e.op("Where", [_nan_windows(e, e.arg(0), e.node.dtype, size, stride), nan, pooled])


def _last_nan_indices(e, x, size, stride, indices):
    """``indices``, with each window that holds NaN sent to its **last** NaN (row-major),
    flowgrad's rule, where onnxruntime's Indices name another entry. Each NaN gets its
    flat position (in float64: exact to 2⁵³ entries), every other entry −1; the window's
    maximum of that is the last NaN's position, and ≥ 0 exactly in the NaN windows."""
    shape = e.op("Shape", [x])
    count = e.op("ReduceProd", [shape], keepdims=0)
    ramp = e.op("Cast", [e.op("Range", [e.const(0, np.int64), count, e.const(1, np.int64)])],
                to=e.elem(np.float64))
    marks = e.op("Where", [e.op("IsNaN", [x]), e.op("Reshape", [ramp, shape]),
                           e.const(-1.0, np.float64)])
    last = e.op("Reshape", [e.op("MaxPool", [marks], **_pool_attrs(size, stride)),
                            e.ints([-1])])
    return e.op("Where", [e.op("Greater", [last, e.const(-0.5, np.float64)]),
                          e.op("Cast", [last], to=e.elem(np.int64)), indices])


def _max_pool_indices(e, size, stride):
    """(pooled values, flat indices): MaxPool on input 1 with its Indices output, the
    row-major position over (N, C, H, W) of each window's first maximum — or, in a window
    holding NaN, of its last NaN (flowgrad's rule)."""
    base = f"{e.prefix}{e.node.name}"
    values, indices = e.fresh(f"{base}/MaxPool"), e.fresh(f"{base}/MaxPool_indices")
    e.nodes.append(e.helper.make_node("MaxPool", [e.raw(1)], [values, indices],
                                      name=values, **_pool_attrs(size, stride)))
    flat = e.op("Reshape", [indices, e.ints([-1])])
    if e.node.inputs[1].dtype.kind != "f":
        return values, flat
    return values, _last_nan_indices(e, e.raw(1), size, stride, flat)


@converts("max_pool2d_scatter")
def _max_pool2d_scatter(e, size, stride):
    _, idx = _max_pool_indices(e, size, stride)
    shape = e.shape_of(1)
    zeros = e.op("ConstantOfShape", [e.op("ReduceProd", [shape], keepdims=1)],
                 value=e.onnx.numpy_helper.from_array(np.zeros(1, e.node.dtype)))
    flat = e.op("Reshape", [e.arg(0), e.ints([-1])])
    out = e.op("ScatterElements", [zeros, idx, flat], axis=0, reduction="add")
    return e.op("Reshape", [out, shape])


@converts("max_pool2d_gather")
def _max_pool2d_gather(e, size, stride):
    values, idx = _max_pool_indices(e, size, stride)
    flat = e.op("Reshape", [e.arg(0), e.ints([-1])])
    return e.op("Reshape", [e.op("GatherElements", [flat, idx], axis=0),
                            e.op("Shape", [values])])


@converts("avg_pool2d")
def _avg_pool2d(e, size, stride):
    if e.node.dtype.name in _NATIVE:
        return e.op("AveragePool", [e.arg(0)], kernel_shape=list(size), strides=list(stride))
    # its windows are slices whose ends need the output's height and width
    _static(e, e.node, "the input's height and width", first=2)
    x = e.arg(0)
    total = None
    for i, j in _offsets(size):
        t = _window(e, x, i, j, stride, e.node.shape[2:])
        total = t if total is None else e.op("Add", [total, t])
    return e.op("Div", [total, e.const(size[0] * size[1], e.node.dtype)])


@converts("avg_pool2d_grad")
def _avg_pool2d_grad(e, size, stride):
    g, x = e.node.inputs
    c, h, w = _static(e, x)
    part = e.op("Div", [e.arg(0), e.const(size[0] * size[1], e.node.dtype)])
    if e.node.dtype.name in _NATIVE:
        # one channel a group, each kernel all ones: v̄ / size² spread over its window
        ones = e.const(np.ones((c, 1) + tuple(size)), e.node.dtype)
        extra = [n - k - s * (m - 1) for n, k, s, m in zip((h, w), size, stride, g.shape[2:])]
        return e.op("ConvTranspose", [part, ones], strides=list(stride), group=c,
                    output_padding=extra)
    return _col2im(e, lambda k: part, (h, w), size, stride, (0, 0, 0, 0), g.shape[2:])


# -- fg.nn.Embedding's index check ------------------------------------------------------------

@converts("embedding_index")
def _embedding_index(e, num):
    # ONNX has no run-time check, and its Gather counts negative indices from the end:
    # a negative index is moved out of range, so that Gather refuses it as an index ≥ num
    idx = e.raw(0)
    dtype = e.node.dtype
    return e.op("Where", [e.op("Less", [idx, e.const(0, dtype)]), e.const(num, dtype), idx])


# -- fg.nn.BatchNorm's per-channel count, refused while training below two ------------------

@converts("batch_norm_count")
def _batch_norm_count(e, axis):
    # ONNX has no assert: a Gather named for the check fails where training meets fewer
    # than two values a channel (onnx_loops.failing_gather), and the count waits for it
    from .onnx_loops import failing_gather
    dims = [e.node.inputs[0].shape[a] for a in axis]
    if None in dims:
        picked = e.op("Gather", [e.shape_of(0), e.ints(axis)], axis=0)
        n = e.op("ReduceProd", [picked], keepdims=0)
    else:
        n = e.const(np.int64(np.prod(dims)))
    bad = e.op("And", [e.op("Less", [n, e.const(np.int64(2))]), e.raw(1)])
    n = e.op("Add", [n, failing_gather(e, "one_value_per_channel_while_training", bad)])
    return e.cast(n, np.int64, e.node.dtype)
