"""Elementwise arithmetic and transcendental functions.

Each reverse rule is ``g * ∂out/∂in`` (elementwise=True), so the same function
serves as the forward rule with the tangent in place of ``g``; broadcasting is
undone by the sweeps, not here.
"""
from __future__ import annotations

from .base import Op, broadcast_shapes, float_dtype, result_dtype


def _binary(name, forward, vjp, *, floating=False, **kw):
    def infer(x, y):
        dtype = result_dtype(x, y)
        return broadcast_shapes(name, x, y), float_dtype(dtype) if floating else dtype
    return Op(name, forward, infer, vjp=vjp, **kw)


def _unary(name, forward, vjp, *, floating=True, **kw):
    def infer(x):
        return x.shape, float_dtype(x.dtype) if floating else x.dtype
    return Op(name, forward, infer, vjp=(vjp,), **kw)


add = _binary("add", lambda xp, x, y: xp.add(x, y),
              (lambda g, ans, x, y: g, lambda g, ans, x, y: g), elementwise=True)
add.__doc__ = "x + y.  ∂/∂x = 1, ∂/∂y = 1."

sub = _binary("sub", lambda xp, x, y: xp.subtract(x, y),
              (lambda g, ans, x, y: g, lambda g, ans, x, y: -g), elementwise=True)
sub.__doc__ = "x − y.  ∂/∂x = 1, ∂/∂y = −1."

mul = _binary("mul", lambda xp, x, y: xp.multiply(x, y),
              (lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x), multilinear=True)
mul.__doc__ = "x · y.  ∂/∂x = y, ∂/∂y = x."

div = _binary("div", lambda xp, x, y: xp.divide(x, y),
              (lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y),
              floating=True, elementwise=True)
div.__doc__ = "x / y.  ∂/∂x = 1/y, ∂/∂y = −x/y² = −ans/y."

neg = _unary("neg", lambda xp, x: xp.negative(x), lambda g, ans, x: -g,
             floating=False, multilinear=True)
neg.__doc__ = "−x."


def _pow_dx(g, ans, x, p):
    return g * p * pow(x, p - 1)


def _pow_dp(g, ans, x, p):
    return g * ans * log(x)


pow = _binary("pow", lambda xp, x, p: xp.power(x, p), (_pow_dx, _pow_dp), elementwise=True)
pow.__doc__ = "x ** p.  ∂/∂x = p x^(p−1), ∂/∂p = x^p log x."

exp = _unary("exp", lambda xp, x: xp.exp(x), lambda g, ans, x: g * ans, elementwise=True)
exp.__doc__ = "eˣ.  ∂/∂x = eˣ = ans."

log = _unary("log", lambda xp, x: xp.log(x), lambda g, ans, x: g / x, elementwise=True)
log.__doc__ = "Natural log.  ∂/∂x = 1/x."

tanh = _unary("tanh", lambda xp, x: xp.tanh(x), lambda g, ans, x: g * (1 - ans * ans),
              elementwise=True)
tanh.__doc__ = "tanh x.  ∂/∂x = 1 − tanh² x = 1 − ans²."

sin = _unary("sin", lambda xp, x: xp.sin(x), lambda g, ans, x: g * cos(x), elementwise=True)
sin.__doc__ = "sin x.  ∂/∂x = cos x."

cos = _unary("cos", lambda xp, x: xp.cos(x), lambda g, ans, x: -g * sin(x), elementwise=True)
cos.__doc__ = "cos x.  ∂/∂x = −sin x."
