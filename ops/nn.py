"""Model ops: linear, sigmoid, softplus, relu (the losses are in ``losses.py``).

Each is one node of the graph, so a drawing shows a box labelled "linear" or
"sigmoid". ``sigmoid`` and ``softplus`` are written once here in their stable
forms (no overflow at ±1000). ``linear`` is x @ w + b with one fused kernel; its
``decompose`` is the matmul-and-add it replaces.
"""
from __future__ import annotations

from .complex import conj_of
from .base import Op, apply, broadcast_shapes, float_dtype, fmt_shape, result_dtype, shape_error
from .elementwise import greater, where
from .linalg import MatmulShape, matmul_da, matmul_db, matmul_infer, matmul
from .special import as_float


def _sigmoid(xp, x):
    # e = exp(−|x|) never overflows; σ(x) = 1/(1+e) for x ≥ 0 and e/(1+e) below. A bool
    # or int x is computed as the float its inferred dtype says (−|x| of a bool is an error)
    x = as_float(xp, x)
    return sigmoid_of(xp, x, xp.exp(-xp.abs(x)))


def sigmoid_of(xp, x, e):
    """σ(x) from e = exp(−|x|) (shared with bce_with_logits, which needs the same e)."""
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


def _sigmoid_rule(g, ans, x):
    return g * (ans * (1 - ans))


sigmoid = Op("sigmoid", _sigmoid, lambda x: (x.shape, float_dtype(x.dtype)),
             vjp=(_sigmoid_rule,), elementwise=True,
             doc="σ(x) = 1/(1+e⁻ˣ), stable for any x.  ∂/∂x = σ(1−σ) = ans(1−ans).")


def _softplus(xp, x):
    x = as_float(xp, x)
    return softplus_of(xp, x, xp.exp(-xp.abs(x)))


def softplus_of(xp, x, e):
    """log(1+eˣ) from e = exp(−|x|): max(x, 0) + log1p(e), finite and accurate for any x."""
    return xp.maximum(x, 0) + xp.log1p(e)


def softplus_and_sigmoid(xp, x):
    """(softplus(x), σ(x)) with exp(−|x|) computed once: the two ops' own operations, so
    the same values (softplus's derivative is σ; the generated code uses this)."""
    x = as_float(xp, x)            # as both kernels: an int8 x is float64, not float16
    e = xp.exp(-xp.abs(x))
    return softplus_of(xp, x, e), sigmoid_of(xp, x, e)


softplus = Op("softplus", _softplus, lambda x: (x.shape, float_dtype(x.dtype)),
              vjp=(lambda g, ans, x: g * sigmoid(x),), elementwise=True,
              doc="log(1+eˣ), stable for any x.  ∂/∂x = σ(x).")


# max(x, False): a weak zero that keeps every dtype, bool too (max(x, 0) of a bool is int64)
relu = Op("relu", lambda xp, x: xp.maximum(x, False), lambda x: (x.shape, x.dtype),
          vjp=(lambda g, ans, x: where(greater(x, 0), g, 0.0),), elementwise=True,
          doc="max(x, 0).  ∂/∂x = [x > 0]: the subgradient 0 at x = 0.")


# -- linear ------------------------------------------------------------------------------

def _scalar(*nodes):
    """A 0-d operand makes linear a product of scalars (the lecture notes' univariate w x + b)."""
    return any(not n.shape for n in nodes)


def _linear(xp, x, w, b=None):
    z = xp.multiply(x, w) if getattr(x, "ndim", 0) == 0 or getattr(w, "ndim", 0) == 0 \
        else xp.matmul(x, w)
    if b is None:
        return z
    if getattr(z, "ndim", 0) and z.dtype == xp.result_type(z, b):
        z += b          # z is fresh and b never enlarges it (infer checks): add in place
        return z
    return z + b


def _linear_infer(x, w, b=None):
    if _scalar(x, w):
        shape, dtype = broadcast_shapes("linear", x, w), result_dtype(x, w)
    else:
        shape, dtype = matmul_infer(x, w, "linear")
    if b is None:
        return shape, dtype
    out = broadcast_shapes("linear", MatmulShape(shape), b)
    if len(out) != len(shape) or any(s == 1 and o != 1 for s, o in zip(shape, out)):
        raise shape_error("linear", (x, w, b), "the bias must broadcast to the shape of "
                          f"x @ w, {fmt_shape(shape)}, without enlarging it")
    return out, result_dtype(x, w, b)


def _linear_dx(g, ans, x, w, b=None):
    return g * conj_of(w) if _scalar(x, w) else matmul_da(g, ans, x, w)


def _linear_dw(g, ans, x, w, b=None):
    return g * conj_of(x) if _scalar(x, w) else matmul_db(g, ans, x, w)


def _linear_decompose(x, w, b=None):
    z = x * w if _scalar(x, w) else matmul(x, w)
    return z if b is None else z + b


_linear_op = Op(
    "linear", _linear, _linear_infer,
    vjp=(_linear_dx, _linear_dw, lambda g, ans, x, w, b: g),
    jvp=(lambda t, ans, x, w, b=None: apply(_linear_op, t, w),
         lambda t, ans, x, w, b=None: apply(_linear_op, x, t),
         lambda t, ans, x, w, b: t),
    doc="x @ w + b.  x̄ = v̄ wᵀ, w̄ = xᵀ v̄, b̄ = v̄ summed to b's shape; "
        "forward rule ẋ w + x ẇ + ḃ.")
_linear_op.decompose = _linear_decompose


def linear(x, w, b=None):
    """x @ w + b, one node (a dense layer's affine map); ``b`` is optional.

    numpy's matmul rules (1-d operands, batches); a 0-d ``x`` or ``w`` makes it the
    univariate w·x + b. ``b`` broadcasts to the shape of x @ w but may not enlarge it.
    Derivatives: x̄ = v̄ wᵀ, w̄ = xᵀ v̄, b̄ = v̄ summed over the broadcast axes;
    forward rule ẋ w + x ẇ + ḃ.
    """
    return apply(_linear_op, x, w) if b is None else apply(_linear_op, x, w, b)
