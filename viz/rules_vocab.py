"""Drawn rules of the everyday vocabulary (clip, the activations, erf, tan, var, prod,
cumsum, pad, astype), declared as in ``rules``: each caption evaluates, with numpy, to
the adjoint term the drawing shows beside it. The conventions at kinks are the ops' own
(torch's): clip gives x the whole v̄ at a bound, leaky_relu and elu take the lower
branch's slope at 0. einsum and the matrix factorisations state their rule in words
(``rules.IN_WORDS``): their adjoints are whole programs, not formulas.
"""
from __future__ import annotations

import math

import numpy as np

from .rule_expr import Ans, Arg, Call, G, NoFlow, indicator, plus

V, X0, X1, X2, ANS = G(), Arg(0), Arg(1), Arg(2), Ans()
_erf = np.vectorize(math.erf, otypes=[float])


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + _erf(x / math.sqrt(2)))


def _pick(*rules):
    return lambda c: rules[c.argnum]


def _same(c):
    return c.shapes[0]


def _factor(fmt, fn, *args):
    """v̄ times an elementwise factor ``fn(c, *values)``."""
    return plus(V * Call(fmt, fn, *args, shape=_same))


def _spread(c, g, x):
    """v̄ of a reduction over ``c.attrs["axis"]`` broadcast back to x's shape."""
    axes = tuple(c.attrs["axis"])
    g = np.asarray(g)
    if not c.attrs.get("keepdims", False):
        g = np.expand_dims(g, axes) if axes else g
    return np.broadcast_to(g, np.shape(x))


def _var_term(c, g, x):
    axes = tuple(c.attrs["axis"])
    n = math.prod(np.shape(x)[a] for a in axes)
    # the scale 2/(n − ddof) as one Python float, rounded to x's dtype, as var's rule: n
    # itself in float16 is inf past 65504 (the term was 0 there)
    centred = x - x.mean(axis=axes, keepdims=True)
    return _spread(c, g, x) * (centred * (2.0 / (n - c.attrs["ddof"])))


def _others(x, axes):
    """The product of the other entries of each reduced slice (no division: exact at 0)."""
    moved = np.moveaxis(x, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,))
    left = np.cumprod(np.concatenate([ones, flat[..., :-1]], -1), -1)
    right = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], -1), -1)[..., ::-1]
    return np.moveaxis((left * right).reshape(moved.shape),
                       tuple(range(-len(axes), 0)), axes)


def _prod_term(c, g, x):
    return _spread(c, g, x) * _others(x, tuple(c.attrs["axis"]))


def _cumsum_term(c, g):
    axis = c.attrs["axis"]
    return np.flip(np.cumsum(np.flip(g, axis), axis), axis)


def _interior(c, g):
    widths = np.broadcast_to(np.asarray(c.attrs["widths"]), (np.ndim(g), 2))
    return g[tuple(slice(int(b), g.shape[k] - int(a)) for k, (b, a) in enumerate(widths))]


def _astype(c):
    if np.dtype(c.attrs["dtype"]).kind not in "fc":
        return NoFlow("an integer or bool result")
    return plus(Call("astype(v̄, {0}'s dtype)",
                     lambda c, g, x: np.asarray(g).astype(np.asarray(x).dtype), V, X0))


VOCAB = {
    "clip": _pick(
        plus(V * indicator("[{1} ≤ {0} ≤ {2}]", lambda x, lo, hi: (lo <= x) & (x <= hi),
                           X0, X1, X2)),
        plus(V * indicator("[{0} < {1} < {2}]", lambda x, lo, hi: (x < lo) & (lo < hi),
                           X0, X1, X2)),
        plus(V * indicator("([{0} > {2}] + [{0} < {1}, {2} ≤ {1}])",
                           lambda x, lo, hi: (x > hi) | ((x < lo) & ~(lo < hi)), X0, X1, X2))),
    "leaky_relu": _pick(_factor("([{0} > 0] + {slope}·[{0} ≤ 0])",
                                lambda c, x: np.where(x > 0, 1.0, c.attrs["slope"]), X0)),
    "elu": _pick(_factor("([{0} > 0] + {alpha} exp({0}) [{0} ≤ 0])",
                         lambda c, x: np.where(x > 0, 1.0, c.attrs["alpha"]
                                               * np.exp(np.minimum(x, 0.0))), X0)),
    "gelu": _pick(_factor("(Φ({0}) + {0} φ({0}))", lambda c, x: _cdf(x) + x * _phi(x), X0)),
    "erf": _pick(_factor("2/√π exp(−{0}²)",
                         lambda c, x: 2 / math.sqrt(math.pi) * np.exp(-x * x), X0)),
    "normal_cdf": _pick(_factor("φ({0})", lambda c, x: _phi(x), X0)),
    "tan": _pick(_factor("(1 + {ans}²)", lambda c, y: 1 + y * y, ANS)),
    "var": _pick(plus(Call("broadcast(v̄) · 2({0} − mean {0}) / (n − {ddof})", _var_term,
                           V, X0))),
    "prod": _pick(plus(Call("broadcast(v̄) · Π of the others in {0}", _prod_term, V, X0))),
    "cumsum": _pick(plus(Call("reversed cumsum(reversed v̄)", _cumsum_term, V))),
    "pad": _pick(plus(Call("v̄'s interior (where {0} went)", _interior, V))),
    "astype": _astype,
}

#: rules stated in words, with why (``rules.IN_WORDS``)
VOCAB_IN_WORDS = {
    "einsum": "an einsum of v̄ with the other operands, its subscripts derived from the spec",
    "cholesky": "L̄ ↦ sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹), a matrix program",
    "qr": "(Q̄ + Q copyltu(M)) R⁻ᵀ with M = R R̄ᵀ − Q̄ᵀ Q, a matrix program",
    "svd": "U (F ∘ (Uᵀ Ū − Ūᵀ U)) S … Vᵀ, a matrix program (distinct singular values)",
}
