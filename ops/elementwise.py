"""Elementwise arithmetic and transcendental functions.

Each reverse rule is ``g * ∂out/∂in`` (elementwise=True), so the same function
serves as the forward rule with the tangent in place of ``g``; broadcasting is
undone by the sweeps, not here. The holomorphic functions (exp, log, sin …, x·y, x/y,
x^p) are the exception for complex inputs: their reverse rule is ``g * conj(∂out/∂in)``
(PyTorch's convention, ops/complex.py) and their forward rule, given apart (``jvp=``),
the unconjugated ``ṫ * ∂out/∂in``; on real inputs both build the same nodes as before.

The float functions (exp, log, sqrt …) of an int or bool input compute in float64, the
dtype their node declares (``Op(floating=True)``), never numpy's float16/float32 for
narrow ints. ``sub``, ``neg`` and ``sign`` refuse bools when the node is built (numpy
has no bool kernel for them: the run would fail).
"""
from __future__ import annotations

import operator

import numpy as np

from flowgrad.graph import Node

from flowgrad.engine.lazy_errors import is_lazy, lazy_backend

from .base import (NONDIFF, Op, apply, broadcast_shapes, dtype_error, float_dtype, result_dtype,
                   weak_int_bounds,
                   shape_error)
from .complex import conj_of
from .creation import zeros_like


_BOOL = np.dtype(bool)

#: numpy refuses these on booleans (its kernels raise a TypeError at run time): the node
#: is refused when it is built instead, with what to write
_NOT_FOR_BOOL = {
    "sub": "a bool minus a bool is not supported (as numpy); use not_equal(a, b) for "
           "their exclusive or, or astype(a, 'int8') first for arithmetic",
    "neg": "the negative of a bool is not supported (as numpy); use equal(x, False) for "
           "its logical not, or astype(x, 'int8') first for arithmetic",
    "sign": "the sign of a bool is not supported (as numpy: no bool kernel); a bool is "
            "its own sign, or use astype(x, 'int8') first",
}


#: a bool base: numpy has no bool power, and which integer type it picks depends on the
#: exponent's value (``x ** 2`` is ``square``: int8; ``x ** 3`` is ``power``: int64)
_NO_BOOL_BASE = {
    "pow": "a bool to a power is not supported (numpy's dtype for it depends on the "
           "exponent's value); use astype(x, 'int8') or astype(x, 'float64') first",
}


def _binary(name, forward, vjp, *, floating=False, **kw):
    no_bool = _NOT_FOR_BOOL.get(name)
    no_bool_base = _NO_BOOL_BASE.get(name)

    def infer(x, y):
        if no_bool_base is not None and x.dtype == _BOOL:
            raise dtype_error(name, (x, y), no_bool_base)
        dtype = x.dtype
        # one native dtype and no weak scalar (result_dtype's first answer, inlined:
        # asked per node built)
        if dtype is not y.dtype or x.op is None or y.op is None or not dtype.isnative:
            dtype = result_dtype(x, y)
            if dtype.kind in "iu":   # a weak Python int must fit (numpy 2's rule)
                weak_int_bounds(name, (x, y), dtype)
        if no_bool is not None and dtype == _BOOL:
            raise dtype_error(name, (x, y), no_bool)
        shape = x.shape
        if shape != y.shape:   # (equal shapes, the common case: no broadcast)
            shape = broadcast_shapes(name, x, y)
        return shape, float_dtype(dtype) if floating and dtype.kind not in "fc" else dtype
    return Op(name, forward, infer, vjp=vjp, **kw)


#: the float functions whose forward is exactly ``xp.<name>(x)`` (Op's ``ufunc``)
UFUNC_FORWARD = frozenset({"exp", "log", "tanh", "sin", "cos", "log1p", "sqrt"})


def _unary(name, forward, vjp, *, floating=True, real=False, jvp=None, **kw):
    """``real``: the op of a complex is real, of its precision (|z|: complex64 → float32).
    ``jvp``: a forward rule of its own (a holomorphic op's, whose reverse rule conjugates)."""
    no_bool = _NOT_FOR_BOOL.get(name)

    def infer(x):
        dtype = x.dtype   # an np.dtype already (float_dtype only for ints)
        if no_bool is not None and dtype == _BOOL:
            raise dtype_error(name, (x,), no_bool)
        if real and dtype.kind == "c":
            return x.shape, np.finfo(dtype).dtype
        return x.shape, float_dtype(dtype) if floating and dtype.kind not in "fc" else dtype
    # a float function computes an int or bool input in float64, as infer declares
    return Op(name, forward, infer, vjp=(vjp,), jvp=None if jvp is None else (jvp,),
              floating=floating, ufunc=name if floating and name in UFUNC_FORWARD else None,
              **kw)


add = _binary("add", lambda xp, x, y: xp.add(x, y),
              (lambda g, ans, x, y: g, lambda g, ans, x, y: g), elementwise=True,
              operator=operator.add)
add.__doc__ = "x + y.  ∂/∂x = 1, ∂/∂y = 1."

sub = _binary("sub", lambda xp, x, y: xp.subtract(x, y),
              (lambda g, ans, x, y: g, lambda g, ans, x, y: -g), elementwise=True,
              operator=operator.sub)
sub.__doc__ = "x − y.  ∂/∂x = 1, ∂/∂y = −1."

mul = _binary("mul", lambda xp, x, y: xp.multiply(x, y),
              (lambda g, ans, x, y: g * conj_of(y), lambda g, ans, x, y: g * conj_of(x)),
              multilinear=True,
              operator=operator.mul)
mul.__doc__ = "x · y.  ∂/∂x = y, ∂/∂y = x."

div = _binary("div", lambda xp, x, y: xp.divide(x, y),
              (lambda g, ans, x, y: g / conj_of(y),
               lambda g, ans, x, y: -g * conj_of(ans) / conj_of(y)),
              jvp=(lambda t, ans, x, y: t / y, lambda t, ans, x, y: -t * ans / y),
              floating=True, elementwise=True, operator=operator.truediv)
div.__doc__ = "x / y.  ∂/∂x = 1/y, ∂/∂y = −x/y² = −ans/y."

neg = _unary("neg", lambda xp, x: xp.negative(x), lambda g, ans, x: -g,
             floating=False, multilinear=True, operator=operator.neg)
neg.__doc__ = "−x.  ∂/∂x = −1."


def _pow_dx(g, ans, x, p):
    return _pow_x_term(g, x, p, conj_of)


def _pow_tx(t, ans, x, p):   # the forward rule: the same factor, not conjugated
    return _pow_x_term(t, x, p, _same)


def _same(v):
    return v


def _pow_x_term(g, x, p, conj):
    """g · conj(p x^(p−1)), and 0 where p = 0 and x = 0 (x⁰ = 1 is constant), as torch:
    the product alone is 0 · 0^(−1) = nan there. Only there: elsewhere the product is
    already 0 at p = 0, and its derivative in p, x^(p−1), must still flow (a mixed second
    derivative). A constant exponent is settled here (p − 1 is then a constant too, so
    the second derivative of x ** 1 meets x ** 0's case): all zero, no derivative at
    all, not a product whose own derivative is 0 · ∞ at x = 0; none zero, no mask.
    Without this the answer depended on the path: the simplifier folds g · 0 to 0 for
    static shapes, but not a Jacobian's map body nor a run-time length."""
    if p.kind == "constant":
        c = np.asarray(p.value)
        if not c.any():
            return zeros_like(g)
        if c.all():
            return g * conj(p) * conj(pow(x, p - 1))
    d = p * pow(x, p - 1)
    return g * conj(where(where(equal(p, 0), equal(x, 0), False), 0.0, d))


def _pow_dp(g, ans, x, p):
    # x^p log x, with the limit 0 at x = 0 (0^p log 0 → 0 for p > 0). log sees 1
    # there instead of 0, so neither this value nor its derivatives meet log 0;
    # x < 0 gives nan, as numpy's log: x^p is not a real function of p there.
    return g * conj_of(ans) * conj_of(_log_base(ans, x))


def _pow_tp(t, ans, x, p):   # the forward rule: the same factor, not conjugated
    return t * ans * _log_base(ans, x)


def _log_base(ans, x):
    """log x for ∂(x^p)/∂p, 0 at x = 0. A real x under a complex power was promoted to
    complex by the forward (numpy's x^p = exp(p log x), principal log: log 2 + iπ at
    x = −2), so its log is the complex one; the real log is nan for x < 0."""
    base = where(equal(x, 0), 1.0, x)
    if ans.dtype.kind == "c" and base.dtype.kind != "c":
        from .tensor import astype
        base = astype(base, ans.dtype)
    return log(base)


def _pow_forward(xp, x, p):
    try:
        return xp.power(x, p)
    except TypeError:
        if lazy_backend(xp) is None:
            raise
        # dask refuses, before any value is computed, an exponent numpy refuses for these
        # dtypes (an integer to a negative integer power), with a TypeError of its own:
        # numpy's error instead, from its operands' dtypes alone
        np.power(*[np.ones((), v.dtype) if is_lazy(xp, v) else v for v in (x, p)])
        raise


# the ufunc, not operator.pow: on numpy scalars (a 0-d step's result) ``**`` is numpy's
# scalar power, C's pow, which skips the ufunc's sqrt for p = 0.5: (−0.0) ** 0.5 is
# +0.0 and (−inf) ** 0.5 is inf there, −0.0 and nan from the kernel (and on 0-d arrays)
pow = _binary("pow", _pow_forward, (_pow_dx, _pow_dp), jvp=(_pow_tx, _pow_tp),
              elementwise=True,
              operator=np.power)
pow.__doc__ = ("x ** p, p a number or a tensor.  ∂/∂x = p x^(p−1) (0 at x = p = 0, as "
               "torch), ∂/∂p = x^p log x "
               "(0 at x = 0; nan for x < 0 and a real p, where x^p is not real-analytic in "
               "p; with a complex p, the principal log of x, as the complex power uses).")

exp = _unary("exp", lambda xp, x: xp.exp(x), lambda g, ans, x: g * conj_of(ans),
             jvp=lambda t, ans, x: t * ans, elementwise=True)
exp.__doc__ = "eˣ.  ∂/∂x = eˣ = ans."

log = _unary("log", lambda xp, x: xp.log(x), lambda g, ans, x: g / conj_of(x),
             jvp=lambda t, ans, x: t / x, elementwise=True)
log.__doc__ = "Natural log.  ∂/∂x = 1/x."

tanh = _unary("tanh", lambda xp, x: xp.tanh(x), lambda g, ans, x: g * conj_of(1 - ans * ans),
              jvp=lambda t, ans, x: t * (1 - ans * ans), elementwise=True)
tanh.__doc__ = "tanh x.  ∂/∂x = 1 − tanh² x = 1 − ans²."

sin = _unary("sin", lambda xp, x: xp.sin(x), lambda g, ans, x: g * conj_of(cos(x)),
             jvp=lambda t, ans, x: t * cos(x), elementwise=True)
sin.__doc__ = "sin x.  ∂/∂x = cos x."

cos = _unary("cos", lambda xp, x: xp.cos(x), lambda g, ans, x: -g * conj_of(sin(x)),
             jvp=lambda t, ans, x: -t * sin(x), elementwise=True)
cos.__doc__ = "cos x.  ∂/∂x = −sin x."


# -- comparisons and sign: piecewise constant, so their derivatives are zero --------------

def _compare(name, forward, symbol):
    def infer(x, y):
        return broadcast_shapes(name, x, y), np.dtype(bool)
    return Op(name, forward, infer, vjp=(NONDIFF, NONDIFF), jvp=(NONDIFF, NONDIFF),
              doc=f"x {symbol} y, elementwise (bool). Piecewise constant: no derivative flows.")


greater = _compare("greater", lambda xp, x, y: xp.greater(x, y), ">")
greater_equal = _compare("greater_equal", lambda xp, x, y: xp.greater_equal(x, y), "≥")
less = _compare("less", lambda xp, x, y: xp.less(x, y), "<")
less_equal = _compare("less_equal", lambda xp, x, y: xp.less_equal(x, y), "≤")
equal = _compare("equal", lambda xp, x, y: xp.equal(x, y), "=")
not_equal = _compare("not_equal", lambda xp, x, y: xp.not_equal(x, y), "≠")


def _sign_infer(x):
    if x.dtype == _BOOL:
        raise dtype_error("sign", (x,), _NOT_FOR_BOOL["sign"])
    return x.shape, x.dtype


sign = Op("sign", lambda xp, x: xp.sign(x), _sign_infer,
          vjp=(NONDIFF,), jvp=(NONDIFF,),
          doc="sign x ∈ {−1, 0, 1} (sign 0 = 0). Piecewise constant: its derivative is 0.")


# -- where ---------------------------------------------------------------------------

def _where_infer(cond, x, y):
    if cond.dtype != np.bool_:
        raise shape_error("where", (cond, x, y), f"the condition must be bool, not {cond.dtype}")
    return broadcast_shapes("where", cond, x, y), result_dtype(x, y)


_where = Op("where", lambda xp, c, x, y: xp.where(c, x, y), _where_infer,
            vjp=(NONDIFF,
                 lambda g, ans, c, x, y: where(c, g, 0.0),
                 lambda g, ans, c, x, y: where(c, 0.0, g)),
            elementwise=True,
            doc="x where cond else y.  ∂/∂x = [cond], ∂/∂y = [¬cond].")


def where(cond, x, y):
    """x where ``cond`` (a bool node or array) else y, broadcast as numpy.

    The adjoint goes only to the branch taken, so a nan/inf in the other branch's
    *value* never reaches a gradient: ``log(where(x > 0, x, 1))`` guards a domain.
    Derivatives: ∂/∂x = [cond], ∂/∂y = [¬cond]; none for ``cond``.
    """
    if not isinstance(cond, Node):
        cond = np.asarray(cond)   # keep a list of bools bool (as a constant it would be float)
    return apply(_where, cond, x, y)


# -- more unary functions -------------------------------------------------------------

log1p = _unary("log1p", lambda xp, x: xp.log1p(x), lambda g, ans, x: g / conj_of(1 + x),
               jvp=lambda t, ans, x: t / (1 + x), elementwise=True)
log1p.__doc__ = "log(1 + x), accurate for small x.  ∂/∂x = 1/(1 + x)."

sqrt = _unary("sqrt", lambda xp, x: xp.sqrt(x), lambda g, ans, x: g / conj_of(2 * ans),
              jvp=lambda t, ans, x: t / (2 * ans), elementwise=True)
sqrt.__doc__ = "√x.  ∂/∂x = 1/(2√x) = 1/(2 ans); +inf at 0, nan below (as numpy's value)."

def _sgn(x, ans):
    # z/|z| (0 at 0) of a complex z, from ops that have derivatives: sign's rule is 0,
    # right for a real x only, so a second derivative through it would be wrong
    zero = equal(ans, 0)
    return where(zero, 0.0, x / where(zero, 1.0, ans))


def _abs_vjp(g, ans, x):
    return g * _sgn(x, ans) if x.dtype.kind == "c" else g * sign(x)


def _abs_jvp(t, ans, x):
    if x.dtype.kind == "c":   # d|z| = re(conj(sgn z)·ż) (as torch's)
        from .complex import real
        return real(t * conj_of(_sgn(x, ans)))
    return t * sign(x)


abs = _unary("abs", lambda xp, x: xp.abs(x), _abs_vjp, jvp=_abs_jvp,
             floating=False, real=True, elementwise=True)
abs.__doc__ = ("|x|.  ∂/∂x = sign x; at x = 0 the subgradient 0 (sign 0 = 0). For a complex "
               "z, z̄ = v̄·z/|z| and the forward rule re(conj(z/|z|)·ż) (PyTorch's).")


# -- maximum / minimum: ties split the derivative equally -----------------------------

def _tie_weight(xp, x, y):
    # 1 where x wins, ½ on a tie, 0 where y wins: in the promoted float dtype
    dtype = xp.result_type(x, y)
    dtype = dtype if dtype.kind in "fc" else xp.float64
    return xp.where(x > y, 1.0, xp.where(x == y, 0.5, 0.0)).astype(dtype, copy=False)


tie_weight = Op("tie_weight", _tie_weight,
                lambda x, y: (broadcast_shapes("maximum", x, y),
                              float_dtype(result_dtype(x, y))),
                vjp=(NONDIFF, NONDIFF), jvp=(NONDIFF, NONDIFF),
                doc="[x > y] + ½[x = y]: the share of maximum(x, y)'s derivative that x gets.")

maximum = _binary("maximum", lambda xp, x, y: xp.maximum(x, y),
                  (lambda g, ans, x, y: g * tie_weight(x, y),
                   lambda g, ans, x, y: g * tie_weight(y, x)), elementwise=True)
maximum.__doc__ = ("max(x, y) elementwise.  ∂/∂x = [x > y], ∂/∂y = [y > x]; "
                   "on a tie each gets ½ (so maximum(x, x) has derivative 1).")

minimum = _binary("minimum", lambda xp, x, y: xp.minimum(x, y),
                  (lambda g, ans, x, y: g * tie_weight(y, x),
                   lambda g, ans, x, y: g * tie_weight(x, y)), elementwise=True)
minimum.__doc__ = ("min(x, y) elementwise.  ∂/∂x = [x < y], ∂/∂y = [y < x]; "
                   "on a tie each gets ½.")
