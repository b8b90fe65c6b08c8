"""One table of op cases, shared by the op tests (values and derivatives against
finite differences) and the mode-consistency tests (jvp rows = vjp columns).

Each case: (id, fn over nodes, input arrays, numpy reference or None).
Inputs are float64; shapes cover broadcasting, 0-d arrays and batches.
Ops with a restricted domain get inputs inside it.
"""
import numpy as np

import flowgrad as fg

_r = np.random.default_rng(7)


def randn(*shape):
    return _r.standard_normal(shape)


def pos(*shape):
    return _r.uniform(0.5, 2.0, shape)


CASES = [
    # elementwise, with broadcasting and 0-d inputs
    ("add (3,1)+(1,4)", lambda a, b: a + b, [randn(3, 1), randn(1, 4)], np.add),
    ("add scalar+(2,3)", lambda a, b: a + b, [randn(), randn(2, 3)], np.add),
    ("sub (2,3)-(3,)", lambda a, b: a - b, [randn(2, 3), randn(3)], np.subtract),
    ("mul (3,1)*(1,4)", lambda a, b: a * b, [randn(3, 1), randn(1, 4)], np.multiply),
    ("mul 0-d*0-d", lambda a, b: a * b, [randn(), randn()], np.multiply),
    ("div (2,3)/(3,)", lambda a, b: a / b, [randn(2, 3), pos(3)], np.divide),
    ("neg", lambda a: -a, [randn(2, 3)], np.negative),
    ("pow x**3", lambda a: a ** 3, [randn(4)], lambda a: a ** 3),
    ("pow x**y", lambda a, b: a ** b, [pos(2, 3), randn(3)], np.power),
    ("exp", fg.exp, [randn(2, 3)], np.exp),
    ("log", fg.log, [pos(2, 3)], np.log),
    ("tanh", fg.tanh, [randn(2, 3)], np.tanh),
    ("sin", fg.sin, [randn(5)], np.sin),
    ("cos", fg.cos, [randn()], np.cos),
    ("x*x (shared input)", lambda a: a * a, [randn(3)], lambda a: a * a),
    ("x used by three children", lambda a: fg.exp(a) * fg.sin(a) + a,
     [randn(3)], lambda a: np.exp(a) * np.sin(a) + a),
    # reductions
    ("sum all", fg.sum, [randn(2, 3)], np.sum),
    ("sum axis=0", lambda a: fg.sum(a, axis=0), [randn(2, 3)], lambda a: a.sum(0)),
    ("sum axis=(0,2) keepdims", lambda a: fg.sum(a, axis=(0, 2), keepdims=True),
     [randn(2, 3, 2)], lambda a: a.sum((0, 2), keepdims=True)),
    ("sum 0-d", fg.sum, [randn()], np.sum),
    ("mean axis=-1", lambda a: fg.mean(a, axis=-1), [randn(2, 3)], lambda a: a.mean(-1)),
    ("mean all", fg.mean, [randn(4)], np.mean),
    # shape
    ("reshape", lambda a: fg.reshape(a, (3, -1)), [randn(2, 3)], lambda a: a.reshape(3, -1)),
    ("transpose .T", lambda a: a.T, [randn(2, 3)], lambda a: a.T),
    ("transpose axes", lambda a: fg.transpose(a, (1, 2, 0)), [randn(2, 3, 4)],
     lambda a: a.transpose(1, 2, 0)),
    ("broadcast_to", lambda a: fg.broadcast_to(a, (2, 3)), [randn(3)],
     lambda a: np.broadcast_to(a, (2, 3))),
    ("expand_dims", lambda a: fg.expand_dims(a, 0), [randn(3)], lambda a: a[None]),
    ("squeeze", lambda a: fg.squeeze(a, 1), [randn(3, 1)], lambda a: a[:, 0]),
    # matmul, every rank combination
    ("matmul 2d@2d", fg.matmul, [randn(2, 3), randn(3, 4)], np.matmul),
    ("matmul 2d@1d", fg.matmul, [randn(2, 3), randn(3)], np.matmul),
    ("matmul 1d@2d", fg.matmul, [randn(3), randn(3, 4)], np.matmul),
    ("matmul 1d@1d", fg.matmul, [randn(3), randn(3)], np.matmul),
    ("matmul batched (2,2,3)@(3,2)", fg.matmul, [randn(2, 2, 3), randn(3, 2)], np.matmul),
    ("matmul batched (2,3)@(4,3,2)", fg.matmul, [randn(2, 3), randn(4, 3, 2)], np.matmul),
    # model ops
    ("linear", fg.linear, [randn(4, 3), randn(3), randn()], lambda x, w, b: x @ w + b),
    ("sigmoid", fg.sigmoid, [randn(2, 3)], lambda a: 1 / (1 + np.exp(-a))),
    ("softplus", fg.softplus, [randn(2, 3)], lambda a: np.log1p(np.exp(a))),
    ("mse", fg.mse, [randn(5), randn(5)], lambda y, t: np.mean((y - t) ** 2)),
    ("mse sum", lambda y, t: fg.mse(y, t, reduction="sum"), [randn(5), randn(5)],
     lambda y, t: np.sum((y - t) ** 2)),
    ("l2", fg.l2, [randn(3)], lambda w: 0.5 * np.sum(w ** 2)),
    ("bce_with_logits", fg.bce_with_logits, [randn(5), _r.uniform(0, 1, 5)],
     lambda z, t: np.mean(np.log1p(np.exp(z)) - z * t)),
    ("bce_with_logits none", lambda z, t: fg.bce_with_logits(z, t, reduction="none"),
     [randn(2, 3), _r.uniform(0, 1, (2, 3))], lambda z, t: np.log1p(np.exp(z)) - z * t),
]
