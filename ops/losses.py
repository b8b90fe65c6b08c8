"""Losses and the regularizer as op nodes: mse, l2, bce_with_logits, softmax_cross_entropy.

Each is one node of the graph (a box labelled "mse", "l2" … in drawings, with its
own v̄) with a fused forward kernel written against ``xp``, and reverse and forward
rules written in flowgrad ops, so every order of derivative works. Each op's
``decompose`` builds the same value out of other primitives (the composite it
replaces), for consumers without the fused op.

Targets have the prediction's shape: a loss never broadcasts (mse of (n,) against
(n, 1) would silently average an (n, n) table). The documented exceptions: a plain
number as the target of ``mse`` / ``bce_with_logits`` stands for every entry, and
``softmax_cross_entropy`` takes integer class indices shaped like the logits
without the class axis.

Entries whose target weight is 0 add exactly 0 to a cross-entropy, even against a
masked logit (−inf): 0·(−inf) would be nan, the true loss is finite.
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import ArgumentError
from flowgrad.graph import Node, default_graph, same_graph

from .base import (NONDIFF, Op, apply, as_node, at_user_line, float_dtype, fmt_shape,
                   half_widened, result_dtype, shape_error, summed)
from .elementwise import equal, greater, where
from .nn import sigmoid, sigmoid_of, softplus
from .reductions import divided_by_count, log_softmax, max_of, mean, softmax, sum
from .shape import expand_dims

REDUCTIONS = ("mean", "sum", "none")


# -- shared by the losses -------------------------------------------------------------

def _nodes(*args):
    graph = same_graph(a for a in args if isinstance(a, Node)) or default_graph()
    return tuple(as_node(a, graph) for a in args)


def _check_reduction(op_name, reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ArgumentError(f"{op_name}: reduction must be 'mean', 'sum' or 'none', "
                            f"got {reduction!r}" + at_user_line())


def _agree(a, b) -> bool:
    """Equal shapes, a None length matching any length."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _merge(a, b) -> tuple:
    return tuple(x if x is not None else y for x, y in zip(a, b))


def _target(op_name, y, t):
    """(y, t) as nodes with t of y's shape, or t a plain number (stands for every entry)."""
    number = not isinstance(t, Node) and np.ndim(t) == 0
    y, t = _nodes(y, t)
    if not number and not _agree(y.shape, t.shape):
        raise shape_error(op_name, (y, t), f"the target must have the prediction's shape "
                          f"{fmt_shape(y.shape)}, not {fmt_shape(t.shape)} (losses do not "
                          "broadcast; reshape one of them)")
    return y, t


def _pair_infer(y, t, reduction):
    shape = _merge(y.shape, t.shape) if len(t.shape) == len(y.shape) else y.shape
    return (shape if reduction == "none" else ()), float_dtype(result_dtype(y, t))


def _reduce(xp, loss, reduction):
    if reduction == "sum":
        return summed(xp, loss, None, False)
    if reduction == "mean":
        # a float16 loss averaged in float32 and rounded once: dask's mean counted its
        # entries in float16 (70000 is inf), so the mean of 70000 losses was 0
        return half_widened(xp.mean, loss)
    return loss


def _reduce_node(loss, reduction):
    if reduction == "sum":
        return sum(loss)
    return mean(loss) if reduction == "mean" else loss


def _mean_scale(g, like, reduction):
    """g, divided by the number of entries averaged when reduction is "mean"."""
    return divided_by_count(g, like, tuple(range(len(like.shape)))) if reduction == "mean" \
        else g


# -- mse --------------------------------------------------------------------------------

def _as_float(xp, a):
    return a if a.dtype.kind in "fc" else a.astype(xp.float64)


def _exact_kinds(v) -> bool:
    """Whether ``v`` (an array or a weak Python number) is an int or a bool."""
    dtype = getattr(v, "dtype", None)
    return (dtype if dtype is not None else np.asarray(v).dtype).kind in "biu"


def _mse(xp, y, t, reduction):
    if _exact_kinds(y) and _exact_kinds(t):
        # the difference of ints in float64, as sklearn's and Keras's mse: in the ints'
        # own dtype it wrapped (uint8 0 − 1 is 255: a loss of 65025, not 1) and a bool
        # difference failed
        y, t = _as_float(xp, xp.asarray(y)), _as_float(xp, xp.asarray(t))
    d = _as_float(xp, xp.asarray(xp.subtract(y, t)))
    if reduction == "none":
        return d * d
    # the sum of squares in one pass, no temporary; a float16 d's in float32, divided
    # there and rounded once (as torch's half mse_loss): vdot's float16 sum of three
    # 200² overflowed, so their mean, 40000, was inf
    return half_widened(lambda v: _sum_of_squares(xp, v, reduction), d)


def _sum_of_squares(xp, d, reduction):
    s = xp.vdot(d, d)
    return s if reduction == "sum" else s / d.size


def _mse_dy(g, ans, y, t, reduction):
    return _mean_scale(2 * g, y - t, reduction) * (y - t)


def _mse_dt(g, ans, y, t, reduction):
    return -_mse_dy(g, ans, y, t, reduction)


def _mse_decompose(y, t, reduction):
    # as the kernel: two ints (or bools) subtracted in float64 (in their own dtype the
    # difference wraps, and d*d would wrap again)
    from .tensor import astype, half_in_float32
    if y.dtype.kind in "biu" and t.dtype.kind in "biu":
        y, t = astype(y, np.float64), astype(t, np.float64)
    d = y - t
    if d.dtype == np.float16 and reduction != "none":   # in float32, as the kernel
        return half_in_float32(lambda v: _reduce_node(v ** 2, reduction), d)
    return _reduce_node(d * d, reduction)


_mse_op = Op(
    "mse", _mse, _pair_infer, vjp=(_mse_dy, _mse_dt),
    jvp=(lambda u, ans, y, t, reduction: _reduce_node(2 * (y - t) * u, reduction),
         lambda u, ans, y, t, reduction: -_reduce_node(2 * (y - t) * u, reduction)),
    doc="mean((y − t)²).  ∂/∂y = 2(y − t)/n, ∂/∂t = −2(y − t)/n "
        "(n the number of entries; n = 1 for reduction='sum' or 'none').")
_mse_op.decompose = _mse_decompose


def mse(y, t, reduction="mean"):
    """Mean squared error mean((y − t)²), one node; ``t`` has y's shape (or is a number).

    ``reduction="sum"`` sums the squares, ``"none"`` returns them entrywise.
    Two int or bool operands are taken as float64 first (as sklearn's and Keras's mse),
    so uint8 0 − 1 is −1, not a wrapped 255.
    Derivatives: ∂/∂y = 2(y − t)/n and ∂/∂t = −2(y − t)/n, n the number of entries
    averaged (1 for "sum" and "none").
    """
    _check_reduction("mse", reduction)
    y, t = _target("mse", y, t)
    return apply(_mse_op, y, t, reduction=reduction)


# -- l2 ------------------------------------------------------------------------------------

_l2_op = Op(
    # (a float16 w's ½ Σ w² in float32, rounded once: vdot rounds Σ w² first, inf past
    # 65504 where its half is not)
    "l2", lambda xp, w: half_widened(lambda v: 0.5 * xp.vdot(v, v), w),
    lambda w: ((), float_dtype(w.dtype)),
    vjp=(lambda g, ans, w: g * w,), jvp=(lambda u, ans, w: sum(w * u),),
    doc="The L2 regularizer ½ Σ w².  ∂/∂w = w; forward rule ⟨w, ẇ⟩.",
    # an int or bool w in float64, as declared (vdot in int8 wrapped, in bool was an or)
    floating=True)


def _l2_decompose(w):
    from .tensor import astype, half_in_float32
    if w.dtype.kind not in "fc":
        w = astype(w, float_dtype(w.dtype))
    if w.dtype == np.float16:          # in float32, as the kernel
        return half_in_float32(lambda v: 0.5 * sum(v ** 2), w)
    return 0.5 * sum(w * w)


_l2_op.decompose = _l2_decompose


def l2(w):
    """The L2 regularizer ½ Σ w², one node (drawn as the "l2" box).  ∂/∂w = w."""
    (w,) = _nodes(w)
    return apply(_l2_op, w)


# -- bce_with_logits --------------------------------------------------------------------

def _bce(xp, z, t, reduction):
    z = _logits(xp, z, t)
    return bce_of(xp, z, t, xp.exp(-xp.abs(z)), reduction)


def _logits(xp, z, t):
    """An int or bool z as the float dtype the node declares, float_dtype(z, t): numpy
    computes exp(−|z|) of an int8 in float16 (of an int16 in float32), −|z| of a uint8
    wraps (−|2| is 254) and of a bool fails."""
    dtype = getattr(z, "dtype", None)
    if dtype is None or dtype.kind in "fc":
        return z
    return xp.asarray(z).astype(float_dtype(xp.result_type(z, t)))


def bce_of(xp, z, t, e, reduction):
    """The loss from e = exp(−|z|): softplus(z) − z t = max(z, 0) − z t + log1p(e), no
    overflow for any finite z."""
    return _reduce(xp, xp.maximum(z, 0) - z * t + xp.log1p(e), reduction)


def bce_and_sigmoid(xp, z, t, reduction):
    """(bce_with_logits(z, t), σ(z)) with exp(−|z|) computed once: the same operations,
    so the same values, as the two ops' own kernels (the reverse rule's σ(z) reads the
    forward's z; the generated code uses this when one plan has both)."""
    if getattr(z, "dtype", None) is not None and z.dtype.kind not in "fc":
        # each op casts an int z to its own declared dtype (σ's float64 may not be bce's)
        return _bce(xp, z, t, reduction), sigmoid.forward(xp, z)
    e = xp.exp(-xp.abs(z))
    return bce_of(xp, z, t, e, reduction), sigmoid_of(xp, z, e)


def _bce_dz(g, ans, z, t, reduction):
    return _mean_scale(g, z, reduction) * (sigmoid(z) - t)


def _bce_dt(g, ans, z, t, reduction):
    return _mean_scale(g, z, reduction) * -z


_bce_op = Op(
    "bce_with_logits", _bce, _pair_infer, vjp=(_bce_dz, _bce_dt),
    jvp=(lambda u, ans, z, t, reduction: _reduce_node((sigmoid(z) - t) * u, reduction),
         lambda u, ans, z, t, reduction: _reduce_node(-z * u, reduction)),
    doc="Binary cross-entropy of logits, mean(softplus(z) − z t).  "
        "∂/∂z = (σ(z) − t)/n, ∂/∂t = −z/n (n = 1 for reduction='sum' or 'none').")
_bce_op.decompose = lambda z, t, reduction: _reduce_node(softplus(z) - z * t, reduction)


def bce_with_logits(z, t, reduction="mean"):
    """Binary cross-entropy from logits, −t log σ(z) − (1−t) log(1−σ(z)), one node.

    Computed as softplus(z) − z t, finite for any finite z. ``t`` has z's shape (or
    is a number). Derivatives: ∂/∂z = (σ(z) − t)/n, ∂/∂t = −z/n, n the number of
    entries averaged (1 for "sum" and "none").
    """
    _check_reduction("bce_with_logits", reduction)
    z, t = _target("bce_with_logits", z, t)
    return apply(_bce_op, z, t, reduction=reduction)


# -- softmax cross-entropy -----------------------------------------------------------------

def _one_hot(xp, labels, ref, axis):
    labels = xp.asarray(labels)
    depth = ref.shape[axis]
    _check_labels(labels, depth)
    hot = xp.expand_dims(labels, axis) == _arange_along(xp, depth, ref.ndim, axis)
    return hot.astype(ref.dtype if ref.dtype.kind in "fc" else xp.float64)


def _check_labels(labels, depth):
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= depth):
        raise ValueError(f"softmax_cross_entropy: class labels must lie in [0, {depth}), "
                         f"got {int(labels.min())} … {int(labels.max())}")


def _arange_along(xp, depth, ndim, axis):
    return xp.reshape(xp.arange(depth), (depth,) + (1,) * (ndim - axis - 1))


one_hot_like = Op("one_hot_like", _one_hot,
                  lambda labels, ref, axis: (ref.shape, float_dtype(ref.dtype)),
                  vjp=(NONDIFF, NONDIFF), jvp=(NONDIFF, NONDIFF),
                  doc="Integer labels as one-hot rows along ``axis`` of ref's shape "
                      "(ref is only a shape reference). Piecewise constant: no derivative.")


def _sce(xp, z, t, axis, reduction, labels):
    if z.dtype.kind not in "fc":    # int logits: the declared float (numpy's would be float16)
        z = z.astype(float_dtype(z.dtype if labels else np.result_type(z.dtype, t.dtype)))
    m = max_of(xp, z, axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)      # a row of −inf stays −inf, not nan
    s = z - m
    lse = xp.log(summed(xp, xp.exp(s), axis, True))
    if labels:
        # lse − z[label]: one entry per row, so a masked logit elsewhere never enters
        t = xp.asarray(t)
        _check_labels(t, z.shape[axis])
        loss = xp.squeeze(lse - _pick(xp, s, t, axis), axis=axis)
    else:
        # −Σ t (s − lse), where an entry with t = 0 adds 0 even against s = −inf
        loss = -summed(xp, t * xp.where(t == 0, 0, s - lse), axis, False)
    return _reduce(xp, loss, reduction)


def _pick(xp, s, labels, axis):
    """s at each row's label along ``axis`` (kept as length 1)."""
    idx = xp.expand_dims(labels, axis)
    take = getattr(xp, "take_along_axis", None)
    if take is not None:
        return take(s, idx, axis=axis)
    hit = idx == _arange_along(xp, s.shape[axis], s.ndim, axis)       # dask: a mask
    return xp.sum(xp.where(hit, s, 0), axis=axis, keepdims=True)


def _sce_infer(z, t, axis, reduction, labels):
    rows = z.shape[:axis] + z.shape[axis + 1:]
    dtype = float_dtype(z.dtype if labels else result_dtype(z, t))
    return (rows if reduction == "none" else ()), dtype


def _row_scale(g, z, axis, reduction):
    """The adjoint of each row's loss, with the class axis back as length 1."""
    if reduction == "none":
        return expand_dims(g, axis)
    if reduction == "sum":
        return g
    rows = tuple(a for a in range(len(z.shape)) if a != axis)
    return divided_by_count(g, z, rows) if rows else g


def _residual(z, t, axis, labels):
    """∂(row loss)/∂z = softmax(z) Σt − t; for class indices softmax(z) − one_hot.
    (softmax shifts z by its row maximum: accurate at large logits in float32.)"""
    p = softmax(z, axis)
    if labels:
        return p - apply(one_hot_like, t, z, axis=axis)
    return p * sum(t, axis, keepdims=True) - t


def _sce_dz(g, ans, z, t, axis, reduction, labels):
    return _row_scale(g, z, axis, reduction) * _residual(z, t, axis, labels)


def _sce_dt(g, ans, z, t, axis, reduction, labels):
    return None if labels else _row_scale(g, z, axis, reduction) * -log_softmax(z, axis)


def _sce_jz(u, ans, z, t, axis, reduction, labels):
    return _reduce_node(sum(_residual(z, t, axis, labels) * u, axis), reduction)


def _sce_jt(u, ans, z, t, axis, reduction, labels):
    return None if labels else _reduce_node(-sum(log_softmax(z, axis) * u, axis), reduction)


def _sce_decompose(z, t, axis, reduction, labels):
    if labels:
        t = apply(one_hot_like, t, z, axis=axis)
    # −Σ t·L, L = log softmax z, where t = 0 adds 0 even against L = −inf (a masked
    # logit), as the op's kernel; ∂/∂t is L wherever L is finite, as the op's rule (a
    # t = 0 that zeroed L instead gave ∂/∂t = 0 there)
    L = log_softmax(z, axis)
    terms = t * where(equal(t, 0), where(greater(L, -np.inf), L, 0.0), L)
    return _reduce_node(-sum(terms, axis), reduction)


_sce_op = Op(
    "softmax_cross_entropy", _sce, _sce_infer, vjp=(_sce_dz, _sce_dt), jvp=(_sce_jz, _sce_jt),
    doc="Cross-entropy −Σ t log softmax(z) per row, then the reduction.  "
        "∂/∂z = (softmax(z) Σt − t)/n (softmax(z) − one_hot for class indices), "
        "∂/∂t = −log softmax(z)/n (n the rows averaged; 1 for 'sum' and 'none').")
_sce_op.decompose = _sce_decompose


def _label_form(z, t, axis):
    """True for class indices, False for probability rows; else a ShapeError saying
    which form was expected."""
    rows = z.shape[:axis] + z.shape[axis + 1:]
    kind = t.dtype.kind
    if kind in "iu" and _agree(t.shape, rows):
        return True
    if kind == "f" and _agree(t.shape, z.shape):
        return False
    if kind in "iu":
        detail = (f"integer targets are class indices and need the logits' shape without "
                  f"the class axis, {fmt_shape(rows)}")
        if len(t.shape) == len(z.shape):
            detail += "; one-hot or probability rows need a float dtype"
    elif kind == "f" and len(t.shape) == len(rows):
        detail = (f"float targets of shape {fmt_shape(t.shape)} look like class indices, "
                  f"which need an integer dtype (e.g. placeholder(..., dtype='int64')); "
                  f"probability rows need the logits' shape {fmt_shape(z.shape)}")
    elif kind == "f":
        detail = f"probability rows need the logits' shape {fmt_shape(z.shape)}"
    else:
        detail = (f"targets of dtype {t.dtype} are neither class indices (integers) nor "
                  "probability rows (floats)")
    raise shape_error("softmax_cross_entropy", (z, t), detail)


def softmax_cross_entropy(z, t, reduction="mean", axis=-1):
    """Cross-entropy −Σ t log softmax(z) of logits z along ``axis`` (default the last).

    ``t`` is either one-hot or probability rows (a float array of z's shape), or
    integer class indices (z's shape without ``axis``; out of range: a ValueError
    at run time); anything else is a ShapeError saying which form was expected.
    ``reduction`` averages ("mean", the default) or sums the per-row losses, or
    returns them ("none"). Finite for any finite logits, and for masked logits
    (−inf) where the target is 0. Derivatives: ∂/∂z = softmax(z) Σt − t per row
    (softmax(z) − one_hot for indices), ∂/∂t = −log softmax(z), divided by the
    number of rows for "mean".
    """
    _check_reduction("softmax_cross_entropy", reduction)
    if not isinstance(t, Node) and np.asarray(t).dtype.kind in "iu":
        t = np.asarray(t)   # a list of ints stays integer (as a constant it would be float)
    z, t = _nodes(z, t)
    nd = len(z.shape)
    if nd == 0:
        raise shape_error("softmax_cross_entropy", (z, t), "logits need a class axis")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or \
            not -nd <= axis < nd:
        raise shape_error("softmax_cross_entropy", (z, t),
                          f"axis {axis!r} is not an axis of {nd}-d logits")
    axis = int(axis) % nd
    labels = _label_form(z, t, axis)
    return apply(_sce_op, z, t, axis=axis, reduction=reduction, labels=labels)
