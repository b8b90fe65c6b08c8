"""bce_with_logits and the σ(z) of its derivative share one exp(−|z|) in the generated
code (numpy_kernels.bce_and_sigmoid): the same values as the two ops' own kernels and
as the interpreter, bit for bit, on edge values too; gradients still match finite
differences."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen, fusion, numpy_kernels
from flowgrad.ops.base import REGISTRY

EDGES = [np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 3e38, -3e38, 40.0, -40.0, 1.0, -1.0,
         1e-300, -1e-300, 745.5, -745.5, np.nan]


def _edges(dtype):
    with np.errstate(over="ignore"):        # ±1e300 becomes ±inf in float32, on purpose
        return np.asarray(EDGES, dtype)


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)


def _generic(z, t, reduction):
    bce = REGISTRY["bce_with_logits"].kernel(np, {"reduction": reduction})
    return bce(z, t), REGISTRY["sigmoid"].kernel(np, {})(z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ["edges", "random", "2d", "empty", "0d", "mixed", "number"])
def test_kernel_equals_the_two_generic_kernels(dtype, reduction, case):
    rng = np.random.default_rng(3)
    z = _edges(dtype)
    t = np.resize(np.asarray([0.0, 1.0, 0.5, 0.25], dtype), z.shape)
    if case == "random":
        z, t = (rng.standard_normal(1000) * 30).astype(dtype), rng.random(1000).astype(dtype)
    elif case == "2d":
        z, t = z[:16].reshape(4, 4), t[:16].reshape(4, 4)
    elif case == "empty":
        z, t = z[:0], t[:0]
    elif case == "0d":
        z, t = np.asarray(dtype(-2.5)), np.asarray(dtype(1.0))
    elif case == "mixed":
        t = t.astype(np.float64 if dtype == np.float32 else np.float32)
    elif case == "number":
        t = np.asarray(1.0)
    with np.errstate(all="ignore"):
        got = numpy_kernels.bce_and_sigmoid(reduction)(z, t)
        want = _generic(z, t, reduction)
    for g, w in zip(got, want):
        _same(g, w)


def _model(dtype, reduction="mean", weighted=False):
    d = 4
    x = fg.placeholder("x", shape=(None, d), dtype=dtype)
    t = fg.placeholder("t", shape=(None,), dtype=dtype)
    w = fg.variable(np.linspace(-2, 2, d).astype(dtype), name="w")
    b = fg.variable(np.asarray(0.25, dtype), name="b")
    z = fg.linear(x, w, b)
    if weighted:                      # per-entry weights on an unreduced loss
        s = fg.placeholder("s", shape=(None,), dtype=dtype)
        loss = fg.sum(s * fg.bce_with_logits(z, t, reduction="none"))
    else:
        loss = fg.bce_with_logits(z, t, reduction=reduction)
    loss = loss + 1e-3 * fg.l2(w)
    return x, t, w, b, loss


def _feed(dtype, n, edges):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 4))
    if edges:
        X[: len(EDGES) - 1, 0] = [e for e in EDGES if e == e]   # ±inf, huge, 0 … as z
    with np.errstate(over="ignore"):
        X = X.astype(dtype)
    T = rng.random(n).astype(dtype)
    T[::3] = np.round(T[::3])
    return X, T, rng.random(n).astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction, weighted", [("mean", False), ("sum", False),
                                                 ("none", True)])
@pytest.mark.parametrize("regions, numexpr_min", [(True, None), (False, None), (False, 0)])
def test_program_equals_interpreter(dtype, reduction, weighted, regions, numexpr_min,
                                    monkeypatch):
    monkeypatch.setattr(codegen, "REGIONS", regions)
    if numexpr_min is not None:
        monkeypatch.setattr(fusion, "NUMEXPR_MIN", numexpr_min)
    with fg.Graph():
        x, t, w, b, loss = _model(dtype, reduction, weighted)
        outs = [loss, *fg.grad(loss, [w, b])]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    src = gen._generated.source
    assert src.count(" = s") == 1 and "sigmoid" not in src   # one kernel computes both
    for n, edges in ((0, False), (3, False), (200, False), (200, True)):
        X, T, S = _feed(dtype, n, edges)
        feed = {"x": X, "t": T, **({"s": S} if weighted else {})}
        with np.errstate(all="ignore"):
            got, want = gen(**feed), ref(**feed)
        for g, c in zip(got, want):
            if numexpr_min is None:
                _same(g, c)
            else:                   # a numexpr chain hands out a 0-d array, same bits
                np.testing.assert_array_equal(np.asarray(g), np.asarray(c), strict=True)


def test_sigmoid_read_before_the_loss_is_left_alone():
    """A σ(z) the user computes before the loss is not moved; the values agree."""
    with fg.Graph():
        z = fg.placeholder("z", shape=(5,))
        t = fg.placeholder("t", shape=(5,))
        p = fg.sigmoid(z)
        loss = fg.sum(p) + fg.bce_with_logits(z, t)
        outs = [loss, fg.grad(loss, z)]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    Z, T = np.linspace(-3, 3, 5), np.full(5, 0.5)
    for g, c in zip(gen(z=Z, t=T), ref(z=Z, t=T)):
        _same(g, c)


def test_gradients_match_finite_differences():
    X, T, _ = _feed("float64", 30, False)
    with fg.Graph():
        x, t, w, b, loss = _model("float64")
        fg.testing.check_grads(loss, [w, b], {x: X, t: T}, order=2, rtol=1e-8, atol=1e-10)
        gw, gb = fg.grad(loss, [w, b])
        got = fg.compile([gw, gb])(x=X, t=T)
    z = X @ w.value + b.value                         # closed form: Xᵀ(σ(z) − t)/n + λw
    r = (1 / (1 + np.exp(-z)) - T) / len(T)
    np.testing.assert_allclose(got[0], X.T @ r + 1e-3 * w.value, rtol=1e-13)
    np.testing.assert_allclose(got[1], r.sum(), rtol=1e-12, atol=1e-15)


# -- softplus and its derivative σ share exp(−|x|) too -----------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softplus_kernel_equals_the_two_generic_kernels(dtype):
    for x in (_edges(dtype), np.asarray(dtype(-3.0)), np.zeros((0, 2), dtype)):
        with np.errstate(all="ignore"):
            got = numpy_kernels.softplus_and_sigmoid()(x)
            want = (REGISTRY["softplus"].kernel(np, {})(x), REGISTRY["sigmoid"].kernel(np, {})(x))
        for g, w in zip(got, want):
            _same(g, w)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("regions, numexpr_min", [(True, None), (False, None), (False, 0)])
def test_softplus_program_equals_interpreter(dtype, regions, numexpr_min, monkeypatch):
    monkeypatch.setattr(codegen, "REGIONS", regions)
    if numexpr_min is not None:
        monkeypatch.setattr(fusion, "NUMEXPR_MIN", numexpr_min)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,), dtype=dtype)
        y = fg.sum(fg.softplus(fg.tanh(x) * 3.0) * x)       # softplus feeding a chain
        outs = [y, fg.grad(y, x)]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    assert gen._generated.source.count(" = s") == 1
    for n in (0, 5, 300):
        X = np.resize(_edges(dtype), n)
        with np.errstate(all="ignore"):
            for g, c in zip(gen(x=X), ref(x=X)):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(c), strict=True)
