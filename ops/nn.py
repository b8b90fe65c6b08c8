"""Model ops: linear, sigmoid, softplus, relu, mse, l2, bce_with_logits,
softmax_cross_entropy.

``linear``, ``mse``, ``l2`` and ``softmax_cross_entropy`` are composites of
primitives and need no rules (the cross-entropy is −Σ t log_softmax(z), and
log_softmax = z − logsumexp(z) is finite for any finite z). ``sigmoid``,
``softplus`` and ``bce_with_logits`` are primitives because their stable
formulations (no overflow at ±1000) need to be written once, here.
"""
from __future__ import annotations

import numpy as np

from .base import NONDIFF, Op, apply, as_node, broadcast_shapes, float_dtype, result_dtype, \
    shape_error
from .elementwise import greater, where
from .reductions import log_softmax, mean, sum
from .linalg import matmul
from flowgrad.composite import composite  # drawn as one box each until they are primitives


def _sigmoid(xp, x):
    # e = exp(−|x|) never overflows; σ(x) = 1/(1+e) for x ≥ 0 and e/(1+e) below.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


def _sigmoid_rule(g, ans, x):
    return g * (ans * (1 - ans))


sigmoid = Op("sigmoid", _sigmoid, lambda x: (x.shape, float_dtype(x.dtype)),
             vjp=(_sigmoid_rule,), elementwise=True,
             doc="σ(x) = 1/(1+e⁻ˣ), stable for any x.  ∂/∂x = σ(1−σ) = ans(1−ans).")


def _softplus(xp, x):
    # log(1+eˣ) = max(x, 0) + log1p(e^−|x|): finite and accurate for any x.
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


softplus = Op("softplus", _softplus, lambda x: (x.shape, float_dtype(x.dtype)),
              vjp=(lambda g, ans, x: g * sigmoid(x),), elementwise=True,
              doc="log(1+eˣ), stable for any x.  ∂/∂x = σ(x).")


def _bce(xp, z, t):
    return _softplus(xp, z) - z * t


def _bce_infer(z, t):
    return broadcast_shapes("bce_with_logits", z, t), float_dtype(result_dtype(z, t))


_bce_elementwise = Op(
    "bce_with_logits", _bce, _bce_infer,
    vjp=(lambda g, ans, z, t: g * (sigmoid(z) - t), lambda g, ans, z, t: -g * z),
    elementwise=True,
    doc="Binary cross-entropy of logits z against targets t: softplus(z) − z t. "
        "∂/∂z = σ(z) − t, ∂/∂t = −z.")


def _reduce(loss, reduction, op_name):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op_name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def bce_with_logits(z, t, reduction="mean"):
    """Binary cross-entropy from logits, −t log σ(z) − (1−t) log(1−σ(z)), computed stably."""
    return _reduce(_bce_elementwise(z, t), reduction, "bce_with_logits")


@composite
def linear(x, w, b=None):
    """x @ w + b."""
    z = matmul(x, w)
    return z if b is None else z + b


@composite
def mse(y, t, reduction="mean"):
    """Mean squared error, mean((y − t)²)."""
    d = as_node(y) - t
    return _reduce(d * d, reduction, "mse")


@composite
def l2(w):
    """The L2 regularizer ½ Σ w²."""
    w = as_node(w)
    return 0.5 * sum(w * w)


# -- relu -------------------------------------------------------------------------------

relu = Op("relu", lambda xp, x: xp.maximum(x, 0), lambda x: (x.shape, x.dtype),
          vjp=(lambda g, ans, x: where(greater(x, 0), g, 0.0),), elementwise=True,
          doc="max(x, 0).  ∂/∂x = [x > 0]: the subgradient 0 at x = 0.")


# -- softmax cross-entropy ----------------------------------------------------------------

def _one_hot(xp, labels, ref, axis):
    depth = ref.shape[axis]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= depth):
        raise ValueError(f"softmax_cross_entropy: class labels must lie in [0, {depth}), "
                         f"got {int(labels.min())} … {int(labels.max())}")
    hot = xp.expand_dims(labels, axis) == xp.reshape(
        xp.arange(depth), (depth,) + (1,) * (ref.ndim - axis - 1))
    return hot.astype(ref.dtype)


one_hot_like = Op("one_hot_like", _one_hot,
                  lambda labels, ref, axis: (ref.shape, float_dtype(ref.dtype)),
                  vjp=(NONDIFF, NONDIFF), jvp=(NONDIFF, NONDIFF),
                  doc="Integer labels as one-hot rows along ``axis`` of ref's shape "
                      "(ref is only a shape reference).")


def softmax_cross_entropy(z, t, reduction="mean", axis=-1):
    """Cross-entropy −Σ t log softmax(z) of logits z along ``axis`` (default the last).

    ``t`` is one-hot or probability rows shaped like z (broadcasting allowed), or
    integer class labels shaped like z without ``axis``. ``reduction`` averages
    ("mean", the default) or sums the per-row losses, or returns them ("none").
    Finite for any finite logits; ∂/∂z = softmax(z) Σt − t.
    """
    z, t = as_node(z), as_node(t)
    nd = len(z.shape)
    if nd == 0:
        raise shape_error("softmax_cross_entropy", (z, t), "logits need a class axis")
    axis = int(axis) % nd
    if t.dtype.kind in "iu":
        want = z.shape[:axis] + z.shape[axis + 1:]
        if len(t.shape) != len(want) or any(
                a is not None and b is not None and a != b for a, b in zip(t.shape, want)):
            raise shape_error("softmax_cross_entropy", (z, t),
                              "integer labels must have the logits' shape without the class axis")
        t = apply(one_hot_like, t, z, axis=axis)
    elif t.dtype == np.bool_:
        raise shape_error("softmax_cross_entropy", (z, t), "targets must be numbers, not bool")
    else:
        broadcast_shapes("softmax_cross_entropy", z, t)
    loss = -sum(t * log_softmax(z, axis), axis)
    return _reduce(loss, reduction, "softmax_cross_entropy")
