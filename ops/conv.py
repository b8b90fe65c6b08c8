"""2-d convolution, NCHW as PyTorch and ONNX: ``conv2d(x, w, b=None, stride=1, padding=…)``
with x (N, C, H, W) and w (O, C, kh, kw); out[n, o, p, q] = Σ_{c,i,j} w[o,c,i,j] ·
xpad[n, c, s·p + i, s·q + j] (a cross-correlation, as every deep-learning library).

How it is computed, on every backend (numpy, cupy, dask): **im2col**, the padded input's
windows as columns (C·kh·kw, N·OH·OW) multiplied by w as an (O, C·kh·kw) matrix — one
2-d matmul. numpy and cupy build the columns as one strided view of the input and one
copy (``as_strided``); dask, which has no as_strided, stacks the kh·kw strided slices
(kernels are small; gathering by index arrays would cost an index array as large as the
columns). On numpy, products whose small sides are tiny (a first layer's 6 × 25) run in
blocks that OpenBLAS's small-matrix kernel takes (ops/windows.py).

Derivatives, each an op of this module, so every order is a graph again. With
B(x, w, ḡ) = ⟨ḡ, conv(x, w)⟩, trilinear:

* x̄ = conv2d_grad_x(ḡ, w): the transposed convolution (wᵀ ḡ as columns, added back into
  the input's positions, "col2im"), cropped to x's shape;
* w̄ = conv2d_grad_w(x, ḡ): the correlation of x with ḡ (columns of x times ḡ);
* their own derivatives close the set: ⟨u, conv2d_grad_x(ḡ, w)⟩ = B(u, w, ḡ), so its
  ḡ-adjoint is conv2d(u, w) and its w-adjoint conv2d_grad_w(u, ḡ); likewise for
  conv2d_grad_w. All three are bilinear: the forward rules put the tangent in each slot.
"""
from __future__ import annotations

import functools

import numpy as np

from flowgrad.errors import ArgumentError, ShapeError

from .base import (NONDIFF, Op, apply, as_node, at_user_line, fmt_shape, result_dtype,
                   shape_error)
from .shape import reshape
from .windows import matmul_deep, matmul_wide, strided_view


# -- arguments ---------------------------------------------------------------------------

def _count(v, minimum) -> bool:
    """An int (not a bool, not a float) ≥ ``minimum``: one stride, size or padding."""
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer)) and \
        v >= minimum


def pair(op_name, value, what, minimum=1) -> tuple:
    """An int or a pair of ints (rows, columns), each ≥ ``minimum``, as a pair of ints;
    anything else (0, 1.5, True, a triple) is an ArgumentError naming the user's line."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(_count(v, minimum) for v in items):
        raise ArgumentError(f"{op_name}: {what} must be an int or a pair of ints, each "
                            f">= {minimum}, got {value!r}" + at_user_line())
    return int(items[0]), int(items[1])


def check_window_attrs(op_name, *inputs, **attrs):
    """A conv or pool op's attributes as its builder hands them over: ``size``,
    ``kernel`` and ``stride`` pairs of ints ≥ 1, ``pads`` four ints ≥ 0 (each entry
    judged as :func:`pair` judges it). The ops' ``check_attrs``: a graph file
    (io/opsig.py) rebuilds these ops without their builders, and must refuse what the
    builders refuse."""
    for what, value in attrs.items():
        want, least = (4, 0) if what == "pads" else (2, 1)
        if type(value) is not tuple or len(value) != want or \
                not all(_count(v, least) for v in value):
            raise ArgumentError(f"{op_name}: {what} must be a tuple of {want} ints, each "
                                f">= {least}, got {value!r:.80}")


def conv_pads(op_name, padding, kernel, stride, hw) -> tuple:
    """(top, bottom, left, right) from ``padding``: "valid" (none), an int or a pair
    (that many zeros on both sides), or "same": out = ⌈in / stride⌉, the total padding
    max((out − 1)·s + k − in, 0) split with the odd one at the end (bottom, right) —
    PyTorch's "same" at stride 1 and ONNX's SAME_UPPER at any stride."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ArgumentError(f"{op_name}: padding must be 'valid', 'same', an int or a "
                                f"pair of ints, got {padding!r}" + at_user_line())
        pads = []
        for n, k, s in zip(hw, kernel, stride):
            if n is None:
                if s != 1:
                    raise ArgumentError(f"{op_name}: padding='same' with stride {s} needs "
                                        f"the input's height and width at build time"
                                        + at_user_line())
                total = k - 1
            else:
                total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = pair(op_name, padding, "padding", minimum=0)
    return (ph, ph, pw, pw)


def out_len(n, k, s, lo, hi):
    """Output length along one axis (None when the input's is known only at run time)."""
    return None if n is None else (n + lo + hi - k) // s + 1


def spatial_out(op_name, nodes, hw, kernel, stride, pads) -> tuple:
    out = tuple(out_len(n, k, s, lo, hi) for n, k, s, lo, hi in
                zip(hw, kernel, stride, pads[0::2], pads[1::2]))
    if any(o is not None and o < 1 for o in out):
        raise shape_error(op_name, nodes, window_misfit(hw, kernel, pads))
    return out


def window_misfit(hw, kernel, pads) -> str:
    """The words for a window larger than its padded input, at build time and run time."""
    return (f"the {kernel[0]}×{kernel[1]} window does not fit the padded input "
            f"{fmt_shape(hw)} (padding {pads})")


def fitted_out(op_name, hw, kernel, stride, pads) -> tuple:
    """(OH, OW) for an input whose spatial shape ``hw`` is known only now: a None length
    passes the build-time check and may then be fed shorter than the window, where the
    strided slices would quietly give an empty result. So the kernels check again, with
    the build-time ShapeError's words (the executors wrap it in a RunError naming the
    node). A dask length not known yet (nan) passes."""
    out = tuple(out_len(n, k, s, lo, hi) for n, k, s, lo, hi in
                zip(hw, kernel, stride, pads[0::2], pads[1::2]))
    if out[0] < 1 or out[1] < 1:
        raise ShapeError(f"{op_name}: " + window_misfit(tuple(hw), kernel, pads))
    return out


def check_4d(op_name, nodes, node, what):
    if len(node.shape) != 4:
        raise shape_error(op_name, nodes, f"{what} must be 4-d (NCHW), got "
                                          f"{fmt_shape(node.shape)}")


# -- kernels (values in, value out; xp is the backend's namespace) -----------------------

def pad_hw(xp, x, pads):
    if not any(pads):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))


def window_slices(kernel, stride, out_hw):
    """For each kernel offset (i, j) in row-major order, the key of the slice of the
    padded input that offset reads for every output position."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    return [(slice(None), slice(None), slice(i, i + sh * (oh - 1) + 1, sh),
             slice(j, j + sw * (ow - 1) + 1, sw)) for i in range(kh) for j in range(kw)]


def im2col(xp, xpad, kernel, stride, out_hw):
    """(C·kh·kw, N·OH·OW): the columns, channel-major then offset (as w flattens), the
    batch and the output positions along the rows, so that the forward product and
    both adjoints are each one plain 2-d matmul (a batched matmul of N small products
    is several times slower, and w̄ would need a transposed copy of the columns).
    numpy and cupy: one strided view (C, kh, kw, N, OH, OW) of the padded input and one
    copy (its reshape); other namespaces (dask): the kh·kw strided slices, stacked."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c = xpad.shape[:2]
    shape = (c * kh * kw, n * out_hw[0] * out_hw[1])
    as_strided = strided_view(xp)
    if as_strided is not None:
        s_n, s_c, s_h, s_w = xpad.strides
        view = as_strided(xpad, (c, kh, kw, n) + tuple(out_hw),
                          (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))
        return xp.reshape(view, shape)
    xt = xp.transpose(xpad, (1, 0, 2, 3))          # (C, N, H, W), a view
    cols = xp.stack([xt[key] for key in window_slices(kernel, stride, out_hw)], axis=1)
    return xp.reshape(cols, shape)


def col2im(xp, cols, x_shape, kernel, stride, pads, out_hw):
    """The adjoint of im2col: cols (C, kh·kw, OH, OW, N) added back into the padded
    input's positions, then cropped to ``x_shape`` (N, C, H, W). The batch is the last
    axis here, so that each of the kh·kw additions runs over rows of OW·N contiguous
    entries, not OW (at a LeNet size, 8 × 256 instead of 8: the 25 additions took ~1.3
    ms instead of 3.6); the result is copied back to NCHW once."""
    n, c, h, w = x_shape
    out = xp.zeros((c, h + pads[0] + pads[1], w + pads[2] + pads[3], n), dtype=cols.dtype)
    for k, (_, _, rows, columns) in enumerate(window_slices(kernel, stride, out_hw)):
        out[:, rows, columns] += cols[:, k]    # (dask: a get, an add and a set, no view)
    out = xp.transpose(out, (3, 0, 1, 2))
    return out[:, :, pads[0]:pads[0] + h, pads[2]:pads[2] + w].copy()


def _by_channel(xp, g):
    """g (N, O, OH, OW) as the matrix (O, N·OH·OW) that im2col's layout multiplies."""
    n, o, oh, ow = g.shape
    return xp.reshape(xp.transpose(g, (1, 0, 2, 3)), (o, n * oh * ow))


def any_empty(*arrays) -> bool:
    """Whether an array has a length-0 axis (an empty batch): the kernels then return
    zeros of their result's shape, which numpy's strided view gives anyway but dask
    refuses (its reshape cannot merge an empty axis, nor its setitem take an empty
    value). A dask length not known yet (nan) is not 0."""
    return any(0 in tuple(a.shape) for a in arrays)


def _conv_forward(xp, x, w, stride, pads):
    o, c, kh, kw = w.shape
    out_hw = fitted_out("conv2d", x.shape[2:], (kh, kw), stride, pads)
    if any_empty(x, w):
        return xp.zeros((x.shape[0], o) + tuple(out_hw), dtype=xp.result_type(x, w))
    cols = im2col(xp, pad_hw(xp, x, pads), (kh, kw), stride, out_hw)
    out = matmul_wide(xp, xp.reshape(w, (o, c * kh * kw)), cols)      # (O, N·OH·OW)
    # copied to NCHW, so that the elementwise ops and the pooling that follow (and their
    # gradients) read contiguous rows, not the (O, N, …) layout through a transposed
    # view: the LeNet step of benchmarks/bench_conv.py takes ~5 % less, copy included
    return xp.transpose(xp.reshape(out, (o, x.shape[0]) + out_hw), (1, 0, 2, 3)).copy()


def _grad_x_forward(xp, g, w, x, stride, pads):
    o, c, kh, kw = w.shape
    n, _, oh, ow = g.shape
    fitted_out("conv2d_grad_x", x.shape[2:], (kh, kw), stride, pads)
    if any_empty(g, w, x):
        return xp.zeros(x.shape, dtype=xp.result_type(g, w))
    g_last = xp.reshape(xp.transpose(g, (1, 2, 3, 0)), (o, oh * ow * n))   # batch last
    cols = matmul_wide(xp, xp.reshape(w, (o, c * kh * kw)).T, g_last)
    cols = xp.reshape(cols, (c, kh * kw, oh, ow, n))
    return col2im(xp, cols, x.shape, (kh, kw), stride, pads, (oh, ow))


def _grad_w_forward(xp, x, g, kernel, stride, pads):
    n, o, oh, ow = g.shape
    c = x.shape[1]
    fitted_out("conv2d_grad_w", x.shape[2:], kernel, stride, pads)
    if any_empty(x, g):
        return xp.zeros((o, c) + tuple(kernel), dtype=xp.result_type(x, g))
    cols = im2col(xp, pad_hw(xp, x, pads), kernel, stride, (oh, ow))
    dw = matmul_deep(xp, _by_channel(xp, g), cols.T)            # (O, C·kh·kw)
    return xp.reshape(dw, (o, c) + tuple(kernel))


# -- shape inference -----------------------------------------------------------------------

def _conv_infer(x, w, stride, pads):
    check_4d("conv2d", (x, w), x, "the input x")
    check_4d("conv2d", (x, w), w, "the kernel w (out, in, kh, kw)")
    if None in w.shape[2:]:
        raise shape_error("conv2d", (x, w), "the kernel's height and width must be known")
    if None not in (x.shape[1], w.shape[1]) and x.shape[1] != w.shape[1]:
        raise shape_error("conv2d", (x, w), f"x has {x.shape[1]} channels, the kernel "
                                            f"expects {w.shape[1]}")
    out = spatial_out("conv2d", (x, w), x.shape[2:], w.shape[2:], stride, pads)
    return (x.shape[0], w.shape[0]) + out, result_dtype(x, w)


def _grad_x_infer(g, w, x, stride, pads):
    return x.shape, result_dtype(g, w)


def _grad_w_infer(x, g, kernel, stride, pads):
    return (g.shape[1], x.shape[1]) + tuple(kernel), result_dtype(x, g)


# -- the ops and their rules -----------------------------------------------------------------

def _conv_dx(g, ans, x, w, stride, pads):
    return apply(conv2d_grad_x, g, w, x, stride=stride, pads=pads)


def _conv_dw(g, ans, x, w, stride, pads):
    return apply(conv2d_grad_w, x, g, kernel=tuple(w.shape[2:]), stride=stride, pads=pads)


_conv2d = Op("conv2d", _conv_forward, _conv_infer, vjp=(_conv_dx, _conv_dw),
             jvp=(lambda t, ans, x, w, **a: apply(_conv2d, t, w, **a),
                  lambda t, ans, x, w, **a: apply(_conv2d, x, t, **a)),
             doc="conv2d(x, w), NCHW, stride and padding as attributes.  x̄ = the transposed "
                 "convolution of v̄ with w; w̄ = the correlation of x with v̄; bilinear: "
                 "forward rule conv(ẋ, w) + conv(x, ẇ).")

conv2d_grad_x = Op(
    "conv2d_grad_x", _grad_x_forward, _grad_x_infer,
    vjp=(lambda u, ans, g, w, x, stride, pads: apply(_conv2d, u, w, stride=stride, pads=pads),
         lambda u, ans, g, w, x, stride, pads: apply(conv2d_grad_w, u, g, kernel=tuple(
             w.shape[2:]), stride=stride, pads=pads),
         NONDIFF),
    jvp=(lambda t, ans, g, w, x, **a: apply(conv2d_grad_x, t, w, x, **a),
         lambda t, ans, g, w, x, **a: apply(conv2d_grad_x, g, t, x, **a),
         NONDIFF),
    doc="The transposed convolution of v̄ with w, conv2d's adjoint for x (x gives only "
        "the shape).  ∂/∂v̄ is conv2d(·, w), ∂/∂w is conv2d_grad_w(·, v̄): bilinear.")

conv2d_grad_w = Op(
    "conv2d_grad_w", _grad_w_forward, _grad_w_infer,
    vjp=(lambda u, ans, x, g, kernel, stride, pads: apply(
            conv2d_grad_x, g, u, x, stride=stride, pads=pads),
         lambda u, ans, x, g, kernel, stride, pads: apply(
            _conv2d, x, u, stride=stride, pads=pads)),
    jvp=(lambda t, ans, x, g, **a: apply(conv2d_grad_w, t, g, **a),
         lambda t, ans, x, g, **a: apply(conv2d_grad_w, x, t, **a)),
    doc="The correlation of x with v̄, conv2d's adjoint for w.  ∂/∂x is "
        "conv2d_grad_x(v̄, ·), ∂/∂v̄ is conv2d(x, ·): bilinear.")

for _op in (_conv2d, conv2d_grad_x, conv2d_grad_w):
    _op.check_attrs = functools.partial(check_window_attrs, _op.name)


def conv2d(x, w, b=None, stride=1, padding="valid"):
    """2-d convolution (cross-correlation), NCHW as PyTorch and ONNX.

    x (N, C, H, W), w (O, C, kh, kw), b (O,) or None; the result is
    (N, O, OH, OW) with OH = ⌊(H + pad_top + pad_bottom − kh) / stride⌋ + 1.
    ``stride``: an int or (rows, columns). ``padding``: "valid" (none), an int or a
    pair (zeros on both sides), or "same" (OH = ⌈H / stride⌉, the odd zero at the
    bottom/right: PyTorch's "same" at stride 1, ONNX's SAME_UPPER at any stride).
    The batch N may be None (known at run time). No dilation and no groups (one kernel
    sees every input channel). A window larger than the padded input is a ShapeError
    when the node is built, or, for a height or width known only at run time, a
    RunError of the run caused by the same ShapeError.

    Derivatives: x̄ = the transposed convolution of v̄ with w (wᵀ v̄ added back
    into the windows), w̄ = the correlation of x with v̄ (Σ over n, p, q of
    v̄[n,o,p,q] · xpad[n, c, s·p + i, s·q + j]), b̄ = v̄ summed over n, p, q; conv2d
    is bilinear, so the forward rule is conv(ẋ, w) + conv(x, ẇ) + ḃ. The rules are
    ops themselves: every order works.
    """
    x, w = as_node(x), as_node(w)
    stride = pair("conv2d", stride, "stride")
    kernel = tuple(w.shape[2:]) if len(w.shape) == 4 else (1, 1)
    pads = conv_pads("conv2d", padding, kernel, stride,
                     x.shape[2:] if len(x.shape) == 4 else (None, None))
    out = apply(_conv2d, x, w, stride=stride, pads=pads)
    if b is None:
        return out
    b = as_node(b)
    if len(b.shape) != 1 or None not in (b.shape[0], w.shape[0]) and b.shape[0] != w.shape[0]:
        raise shape_error("conv2d", (x, w, b), f"the bias must be 1-d with one entry per "
                                               f"output channel ({w.shape[0]})")
    return out + reshape(b, (-1, 1, 1))
