"""2-d max and average pooling, NCHW as PyTorch and ONNX, no padding, the window's last
incomplete row/column dropped (PyTorch's ceil_mode=False): OH = ⌊(H − size) / stride⌋ + 1.

Like conv2d (ops/conv.py), a loop over the size·size window offsets, each a strided
slice, works on every backend. Max pooling's rules route by one boolean mask per offset
(each window's first maximum, or last NaN) and a bit-masked select (ops/windows.py). The
rules are ops of this module, so every order works:

* max_pool2d: v̄ goes to the position of each window's maximum — the **first** maximum
  in row-major order when several are equal (as PyTorch), never split among ties; a
  window holding NaN outputs NaN and sends v̄ to its last NaN (PyTorch's rule too). Its
  adjoint ``max_pool2d_scatter(v̄, x)`` and its tangent ``max_pool2d_gather(ẋ, x)`` (the
  entries at those positions) are each other's transposes; the positions depend on x
  only piecewise-constantly, so their derivative with respect to x is zero.
* avg_pool2d: linear; x̄ = v̄ / size² added back into every window
  (``avg_pool2d_grad(v̄, x)``), whose adjoint is avg_pool2d again.
"""
from __future__ import annotations

import functools

from .base import NONDIFF, Op, apply, as_node, float_dtype, half_widened
from .conv import (any_empty, check_4d, check_window_attrs, fitted_out, pair, spatial_out,
                   window_slices)
from .windows import select, strided_view


_NO_PADS = (0, 0, 0, 0)


def _windows(name, x, size, stride):
    """x's window slices, one per offset; a ShapeError when the window does not fit x
    (a run-time length shorter than the window, which would give empty slices)."""
    out_hw = fitted_out(name, x.shape[2:], size, stride, _NO_PADS)
    return [x[key] for key in window_slices(size, stride, out_hw)]


def _first_max(xp, x, size, stride, name):
    """Per window offset k (row-major, as window_slices), a mask over the pooled shape:
    True where offset k holds its window's **first** maximum, or, in a window holding
    NaN, its **last** NaN (PyTorch's rule: move on when val > max or val is NaN). Each
    window has exactly one True among the masks. Equality with the window's maximum
    (one pass of ``maximum``) and a running "taken" mask cost a few boolean passes over
    the pooled shape, where a running argmax (two where's per offset) cost 3× as much.
    ``name``: the op asking, for the error when the window does not fit x."""
    wins = _windows(name, x, size, stride)
    top = functools.reduce(xp.maximum, wins)     # NaN wherever the window holds one
    masks, taken = [], None
    for w in wins:
        hit = w == top                           # never true in a NaN window
        hit = hit if taken is None else hit & ~taken
        taken = hit if taken is None else taken | hit
        masks.append(hit)
    if _may_hold_nan(xp, top):
        taken = top == top                       # windows without NaN are settled
        for k in reversed(range(len(wins))):     # the last NaN: scan from the end
            hit = (wins[k] != wins[k]) & ~taken
            taken = taken | hit
            masks[k] = masks[k] | hit
    return masks


def _may_hold_nan(xp, top):
    """False when no window can hold NaN: an integer dtype, or (numpy, cupy: values at
    hand) no NaN among the maxima. On a lazy namespace (dask) every float may."""
    if top.dtype.kind not in "fc":
        return False
    return strided_view(xp) is None or bool(xp.any(top != top))


def _max_forward(xp, x, size, stride):
    wins = _windows("max_pool2d", x, size, stride)
    if len(wins) == 1:           # a 1×1 window: a slice of x, never handed out as a view
        return wins[0].copy()
    return functools.reduce(xp.maximum, wins)


def _max_scatter_forward(xp, g, x, size, stride):
    """v̄ at each window's first maximum, zero elsewhere. Windows that do not overlap
    (stride ≥ size) write their positions (each is written once) instead of adding."""
    overlap = any(s < k for s, k in zip(stride, size))
    out = xp.zeros(x.shape, dtype=g.dtype)
    if any_empty(g):
        fitted_out("max_pool2d_scatter", x.shape[2:], size, stride, _NO_PADS)
        return out                 # dask cannot set an empty value into an empty slice
    keys = window_slices(size, stride, g.shape[2:])
    for mask, key in zip(_first_max(xp, x, size, stride, "max_pool2d_scatter"), keys):
        if overlap:
            out[key] += select(xp, mask, g)    # (dask: a get, an add and a set, no view)
        else:
            out[key] = select(xp, mask, g)
    return out


def _max_gather_forward(xp, u, x, size, stride):
    wins = _windows("max_pool2d_gather", u, size, stride)
    masks = _first_max(xp, x, size, stride, "max_pool2d_gather")
    out = select(xp, masks[0], wins[0])
    for k in range(1, len(wins)):
        out = out + select(xp, masks[k], wins[k])
    return out


def _scatter_into(xp, x_shape, dtype, parts, size, stride, out_hw):
    """Σ_k parts(k) placed at window offset k: the adjoint of taking the windows."""
    out = xp.zeros(x_shape, dtype=dtype)
    if 0 in tuple(out_hw) or 0 in tuple(x_shape):
        return out                 # dask cannot set an empty value into an empty slice
    for k, key in enumerate(window_slices(size, stride, out_hw)):
        out[key] += parts(k)
    return out


def _avg_forward(xp, x, size, stride):
    def mean(v):
        wins = _windows("avg_pool2d", v, size, stride)
        return functools.reduce(lambda a, b: a + b, wins) / (size[0] * size[1])
    # a float16 window added in float32 and rounded once, as torch's half avg_pool2d:
    # nine values of 30000 summed to inf in float16, and each addition rounded
    return half_widened(mean, x)


def _avg_grad_forward(xp, g, x, size, stride):
    fitted_out("avg_pool2d_grad", x.shape[2:], size, stride, _NO_PADS)
    part = g / (size[0] * size[1])
    return _scatter_into(xp, x.shape, part.dtype, lambda k: part, size, stride, g.shape[2:])


def _pool_infer(name, dtype_of):
    def infer(x, size, stride):
        check_4d(name, (x,), x, "the input")
        out = spatial_out(name, (x,), x.shape[2:], size, stride, (0, 0, 0, 0))
        return x.shape[:2] + out, dtype_of(x.dtype)
    return infer


def _like_infer(g, x, size, stride):
    return x.shape, g.dtype if g.dtype.kind == "f" else float_dtype(g.dtype)


def _gather_infer(u, x, size, stride):
    return _pool_infer("max_pool2d", lambda d: d)(x, size, stride)[0], u.dtype


_max = Op("max_pool2d", _max_forward, _pool_infer("max_pool2d", lambda d: d),
          vjp=(lambda g, ans, x, **a: apply(max_pool2d_scatter, g, x, **a),),
          jvp=(lambda t, ans, x, **a: apply(max_pool2d_gather, t, x, **a),),
          doc="The maximum of each window.  x̄ = v̄ at each window's first maximum; "
              "forward rule ẋ at those positions.")

max_pool2d_scatter = Op(
    "max_pool2d_scatter", _max_scatter_forward, _like_infer,
    vjp=(lambda u, ans, g, x, **a: apply(max_pool2d_gather, u, x, **a), NONDIFF),
    jvp=(lambda t, ans, g, x, **a: apply(max_pool2d_scatter, t, x, **a), NONDIFF),
    doc="max_pool2d's adjoint: v̄ placed at each window's first maximum of x.  ∂/∂v̄ is "
        "max_pool2d_gather (linear in v̄); x only selects the positions: no derivative.")

max_pool2d_gather = Op(
    "max_pool2d_gather", _max_gather_forward, _gather_infer,
    vjp=(lambda g, ans, u, x, **a: apply(max_pool2d_scatter, g, x, **a), NONDIFF),
    jvp=(lambda t, ans, u, x, **a: apply(max_pool2d_gather, t, x, **a), NONDIFF),
    doc="u at each window's first maximum of x, max_pool2d's forward rule.  ∂/∂u is "
        "max_pool2d_scatter (linear in u); x only selects the positions: no derivative.")

# floating: an int or bool x is averaged in float64, as declared (windows summed in bool
# were an or, in int8 they wrapped)
_avg = Op("avg_pool2d", _avg_forward, _pool_infer("avg_pool2d", float_dtype), floating=True,
          vjp=(lambda g, ans, x, **a: apply(avg_pool2d_grad, g, x, **a),),
          jvp=(lambda t, ans, x, **a: apply(_avg, t, **a),),
          doc="The mean of each window.  x̄ = v̄ / size² added into every window; linear: "
              "forward rule avg_pool2d(ẋ).")

avg_pool2d_grad = Op(
    "avg_pool2d_grad", _avg_grad_forward, _like_infer,
    vjp=(lambda u, ans, g, x, **a: apply(_avg, u, **a), NONDIFF),
    jvp=(lambda t, ans, g, x, **a: apply(avg_pool2d_grad, t, x, **a), NONDIFF),
    doc="avg_pool2d's adjoint: v̄ / size² added into every window (x gives only the "
        "shape).  ∂/∂v̄ is avg_pool2d (linear).")

for _op in (_max, max_pool2d_scatter, max_pool2d_gather, _avg, avg_pool2d_grad):
    _op.check_attrs = functools.partial(check_window_attrs, _op.name)


def _sizes(name, size, stride):
    size = pair(name, size, "size")
    return size, size if stride is None else pair(name, stride, "stride")


def max_pool2d(x, size, stride=None):
    """The maximum of each size×size window of x (N, C, H, W), NCHW as PyTorch and ONNX.

    ``stride`` defaults to ``size``; no padding, incomplete windows dropped.
    ``size``/``stride``: an int or (rows, columns). A window larger than x is a
    ShapeError (a RunError caused by it for a height or width known only at run time).

    Derivative: x̄ = v̄ at each window's maximum — the first in row-major order when
    several entries tie (as PyTorch), never split; zero elsewhere. Forward rule: ẋ at
    those positions. A NaN propagates to the window's output and takes its v̄ (the
    last NaN of the window when there are several, as PyTorch).
    """
    size, stride = _sizes("max_pool2d", size, stride)
    return apply(_max, as_node(x), size=size, stride=stride)


def avg_pool2d(x, size, stride=None):
    """The mean of each size×size window of x (N, C, H, W), NCHW as PyTorch and ONNX.

    ``stride`` defaults to ``size`` (an int or (rows, columns)); no padding,
    incomplete windows dropped. A window larger than x is a ShapeError (a RunError
    caused by it for a height or width known only at run time).

    Derivative: x̄ = v̄ / size² added into every window that holds the entry; linear,
    so the forward rule is avg_pool2d(ẋ).
    """
    size, stride = _sizes("avg_pool2d", size, stride)
    return apply(_avg, as_node(x), size=size, stride=stride)
