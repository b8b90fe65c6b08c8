"""Model ops: linear, sigmoid, softplus, mse, l2, bce_with_logits.

``linear``, ``mse`` and ``l2`` are composites of primitives and need no rules.
``sigmoid``, ``softplus`` and ``bce_with_logits`` are primitives because their
stable formulations (no overflow at ±1000) need to be written once, here.
"""
from __future__ import annotations

from .base import Op, as_node, broadcast_shapes, float_dtype, result_dtype
from .reductions import mean, sum
from .linalg import matmul


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


def linear(x, w, b=None):
    """x @ w + b."""
    z = matmul(x, w)
    return z if b is None else z + b


def mse(y, t, reduction="mean"):
    """Mean squared error, mean((y − t)²)."""
    d = as_node(y) - t
    return _reduce(d * d, reduction, "mse")


def l2(w):
    """The L2 regularizer ½ Σ w²."""
    w = as_node(w)
    return 0.5 * sum(w * w)
