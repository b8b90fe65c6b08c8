"""Drawn reverse rules of the matrix ops, the model ops and the losses (see ``rules``).

Each evaluator is the caption's formula in numpy, with numpy's conventions for 1-d
operands and batches; the losses divide by n only for ``reduction="mean"`` (the caption
then states n), exactly as the ops' own rules do.
"""
from __future__ import annotations

import math

import numpy as np

from .rule_expr import (POW, PROD, SUM, Ans, Arg, Call, Count, Fn, G, NoFlow, Num, bshape,
                        minus, plus)

V, X0, X1, G_ANS = G(), Arg(0), Arg(1), Ans()


def _mT(a):
    return np.swapaxes(a, -1, -2)


# -- matmul and linear ---------------------------------------------------------------------

def _mm_da(c, g, a, b):
    """Ā = Ḡ Bᵀ with 1-d operands promoted to matrices and squeezed back."""
    if a.ndim == 1 and b.ndim == 1:
        return g * b
    if b.ndim == 1:
        return g[..., None] * b
    gm = g[..., None, :] if a.ndim == 1 else g
    out = gm @ _mT(b)
    return out[..., 0, :] if a.ndim == 1 else out


def _mm_db(c, g, a, b):
    """B̄ = Aᵀ Ḡ with 1-d operands promoted to matrices and squeezed back."""
    if a.ndim == 1 and b.ndim == 1:
        return g * a
    if a.ndim == 1:
        return a[:, None] * g[..., None, :]
    gm = g[..., None] if b.ndim == 1 else g
    out = _mT(a) @ gm
    return out[..., 0] if b.ndim == 1 else out


def _mm_shape(c, k):
    """The static shape of argument k's term before summing over broadcast batches."""
    a, b = c.shapes[0], c.shapes[1]
    if len(a) == 1 and len(b) == 1:
        return c.shapes[1 - k]
    mine = c.shapes[k]
    if k == 0:
        return mine if len(b) == 1 else c.out_shape[:-1] + mine if len(a) == 1 \
            else c.out_shape[:-2] + mine[-2:]
    if len(a) == 1:
        return c.out_shape[:-1] + mine[-2:]
    return c.out_shape[:-1] + mine if len(b) == 1 else c.out_shape[:-2] + mine[-2:]


def _matmul(c):
    a, b = c.shapes[0], c.shapes[1]
    if len(a) == 1 and len(b) == 1:
        text = "v̄ · {1}" if c.argnum == 0 else "v̄ · {0}"
    else:
        text = "v̄ {1}ᵀ" if c.argnum == 0 else "{0}ᵀ v̄"
    fn = _mm_da if c.argnum == 0 else _mm_db
    k = c.argnum
    return plus(Call(text, fn, V, X0, X1, prec=PROD, shape=lambda c: _mm_shape(c, k)))


def _linear(c):
    if c.argnum == 2:
        return plus(V)                                  # b̄: v̄ summed to b's shape
    if c.shapes[0] == () or c.shapes[1] == ():          # the univariate w x + b
        return plus(V * (X1 if c.argnum == 0 else X0))
    return _matmul(c)


# -- square matrices -------------------------------------------------------------------------

def _trace(c):
    k, a1, a2 = c.attrs["offset"], c.attrs["axis1"], c.attrs["axis2"]

    def fn(c, g):
        x = np.shape(c.args[0])
        m = np.eye(x[a1], x[a2], k=k)
        shape = [1] * len(x)
        shape[a1], shape[a2] = x[a1], x[a2]
        m = m.reshape(shape) if a1 < a2 else m.T.reshape(shape)
        return np.expand_dims(g, tuple(sorted((a1, a2)))) * m
    diag = "I" if k == 0 else f"I (diagonal {k})"
    return plus(Call(f"v̄ · {diag}", fn, V, prec=PROD))


def _inv_T(x):
    return _mT(np.linalg.inv(x))


def _col(c, v):
    return v[..., None] if len(c.shapes[1]) == 1 else v


def _solve_db(c, g, a):
    out = np.linalg.solve(_mT(a), _col(c, g))
    return out[..., 0] if len(c.shapes[1]) == 1 else out


def _solve_da(c, g, a, y):
    return _col(c, _solve_db(c, g, a)) @ _mT(_col(c, y))


def _solve(c):
    if c.argnum == 1:
        return plus(Call("{0}⁻ᵀ v̄", _solve_db, V, X0, prec=PROD,
                         shape=lambda c: c.out_shape))
    lead = 1 if len(c.shapes[1]) == 1 else 2
    return minus(Call("({0}⁻ᵀ v̄) {ans}ᵀ", _solve_da, V, X0, G_ANS, prec=PROD,
                      shape=lambda c: c.out_shape[:len(c.out_shape) - lead] + c.shapes[0][-2:]))


def _eig_share(c, g, s):
    v = np.linalg.eigh(s)[1]
    return (v * g[..., None, :]) @ _mT(v)


def _eigvec_share(c, g, s, v):
    w = np.linalg.eigvalsh(s)
    gap = w[..., None, :] - w[..., :, None]
    f = np.where(gap == 0, np.nan, 1 / np.where(gap == 0, 1.0, gap))
    f[..., np.arange(w.shape[-1]), np.arange(w.shape[-1])] = 0.0
    return v @ (f * (_mT(v) @ g)) @ _mT(v)


def _top_share(c, g, s):
    """The top eigenpair's rules: λ̄ v vᵀ, or (K v̄) vᵀ with K = Σ_{j≠top} vⱼvⱼᵀ/(λ − λⱼ)."""
    w, vs = np.linalg.eigh(s)
    v = vs[..., -1]
    if c.attrs["part"] == "w":
        return g[..., None, None] * v[..., :, None] * v[..., None, :]
    k = (vs[..., :-1] / (w[..., -1:] - w[..., :-1])[..., None, :]) @ _mT(vs[..., :-1])
    return (k @ g[..., None]) * v[..., None, :]



LINALG = {
    "matmul": _matmul,
    "linear": _linear,
    "trace": _trace,
    "det": lambda c: plus(Call("v̄ · {ans} · {0}⁻ᵀ",
                               lambda c, g, d, x: (g * d)[..., None, None] * _inv_T(x),
                               V, G_ANS, X0, prec=PROD)),
    "logdet": lambda c: plus(Call("v̄ · {0}⁻ᵀ",
                                  lambda c, g, x: g[..., None, None] * _inv_T(x),
                                  V, X0, prec=PROD)),
    "inv": lambda c: minus(Call("{ans}ᵀ v̄ {ans}ᵀ", lambda c, g, y: _mT(y) @ g @ _mT(y),
                                V, G_ANS, prec=PROD)),
    "solve": _solve,
    "eigvalsh": lambda c: plus(Call("V diag(v̄) Vᵀ (V: the eigenvectors of {0})", _eig_share,
                                    V, X0, prec=PROD)),
    "eigh_vectors": lambda c: plus(Call(
        "{ans} (F ∘ {ans}ᵀ v̄) {ans}ᵀ (F_ij = 1/(λ_j − λ_i), NaN where equal)",
        _eigvec_share, V, X0, G_ANS, prec=PROD)),
    "eigh_top": lambda c: plus(Call(
        "v̄ v vᵀ (v: the top eigenvector of {0})" if c.attrs["part"] == "w" else
        "(K v̄) vᵀ, K = Σ_{j≠top} vⱼvⱼᵀ/(λ − λⱼ) (v, λ: the top eigenpair of {0})",
        _top_share, V, X0, prec=PROD)),
}


# -- losses ------------------------------------------------------------------------------------

def _entries(c):
    return Count(lambda c: math.prod(bshape(c.shapes[0], c.shapes[1])),
                 "the entries averaged")


def _mean(c, e):
    """``e`` divided by the count a mean averages (reduction="mean" only)."""
    return e / _entries(c) if c.attrs["reduction"] == "mean" else e


def _mse(c):
    e = _mean(c, V * Num(2).juxt(X0 - X1))
    return plus(e) if c.argnum == 0 else minus(e)


def _bce(c):
    if c.argnum == 0:
        return plus(_mean(c, V * (Fn("σ", lambda v: 0.5 * (1 + np.tanh(0.5 * v)), X0,
                                     paren=True) - X1)))
    return minus(_mean(c, V * X0))


def _rows(c):
    axis = c.attrs["axis"]
    return Count(lambda c: math.prod(s for k, s in enumerate(c.shapes[0]) if k != axis),
                 "the rows averaged")


def _row_g(c):
    """v̄ of each row's loss, with the class axis back (for reduction="none")."""
    axis, none = c.attrs["axis"], c.attrs["reduction"] == "none"
    shape = (lambda c: c.out_shape[:axis] + (1,) + c.out_shape[axis:]) if none \
        else (lambda c: c.out_shape)
    return Call("v̄", lambda c, g: np.expand_dims(g, axis) if none else g, V, shape=shape)


def _softmax(c, z):
    e = np.exp(z - z.max(c.attrs["axis"], keepdims=True))
    return e / e.sum(c.attrs["axis"], keepdims=True)


def _residual(c, z, t):
    if c.attrs["labels"]:
        hot = np.expand_dims(t, c.attrs["axis"]) == np.arange(z.shape[c.attrs["axis"]]).reshape(
            (-1,) + (1,) * (z.ndim - c.attrs["axis"] - 1))
        return _softmax(c, z) - hot
    return _softmax(c, z) * t.sum(c.attrs["axis"], keepdims=True) - t


def _sce(c):
    g = _row_g(c)
    if c.argnum == 1:
        if c.attrs["labels"]:
            return NoFlow("class indices")
        logp = Call("log softmax({0})", lambda c, z: np.log(_softmax(c, z)), X0, prec=POW,
                    shape=lambda c: c.shapes[0])
        return minus(_rows_mean(c, g * logp))
    text = "softmax({0}) − one_hot({1})" if c.attrs["labels"] else "softmax({0}) Σ{1} − {1}"
    res = Call(text, _residual, X0, X1, prec=SUM, shape=lambda c: c.shapes[0])
    return plus(_rows_mean(c, g * res))


def _rows_mean(c, e):
    return e / _rows(c) if c.attrs["reduction"] == "mean" else e


LOSSES = {
    "mse": _mse,
    "l2": lambda c: plus(V * X0),
    "bce_with_logits": _bce,
    "softmax_cross_entropy": _sce,
}
