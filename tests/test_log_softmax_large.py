"""log_softmax of large floats is (x − m) − logsumexp(x − m), m the max along the axis,
as PyTorch and scipy.special.log_softmax compute it. It was x − logsumexp(x): two
numbers of x's size subtracted, so at x = [1e8, 1e8 + 1] in float64 it was off by
~4·10⁶ ulp, at [1.7e308, 1.7e308] it gave 0 for −log 2, in float32 at [1e4, 1e4 + 1]
~7000 ulp. Checked against scipy on every executor, onnxruntime, both derivative rules
against torch (rtol 1e-12) and central differences in float64, and the paths that read
log_softmax: softmax_cross_entropy's ∂/∂t and its decomposition (fg.vectorize)."""
import warnings

import numpy as np
import pytest
import scipy.special as sp

import flowgrad as fg

torch = pytest.importorskip("torch")

EXECUTORS = [{}, {"codegen": False}, {"verify": True}, {"check_numerics": True},
             {"backend": "dask"}]
ROWS = [0.0, 1.0, 3.0, -2.5]
CASES = [   # (dtype, values): rows of one offset and small spreads, along the last axis
    ("float64", [[1e8, 1e8 + 1, 1e8 - 2, 1e8 + 0.5]]),
    ("float64", [[1e15 + r for r in ROWS], [-1e15 + r for r in ROWS]]),
    ("float64", [[1.7e308, 1.7e308, 1.7e308 * (1 - 2 ** -50), -1.0]]),
    ("float32", [[1e4 + r for r in ROWS], [1000.0 + r for r in ROWS]]),
    ("float32", [[3e38, 3e38, 1e38, 0.0]]),
]


def _ulps(got, want):
    """The largest error in units of the last place of scipy's value (float64 scipy,
    rounded to the dtype: the correctly computed answer to ~1 ulp)."""
    want = np.asarray(want)
    return float(np.max(np.abs(got.astype(np.float64) - want) /
                        np.spacing(np.abs(want).astype(got.dtype)).astype(np.float64)))


def _want(values, axis=-1):
    return sp.log_softmax(np.asarray(values, np.float64), axis=axis)


def _run(out, kw, **feed):
    r = fg.compile(out, **kw)(**feed)
    return np.asarray(r.compute() if hasattr(r, "compute") else r)


@pytest.mark.parametrize("kw", EXECUTORS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_log_softmax_of_large_values_is_within_a_few_ulp_of_scipy(case, kw):
    dtype, values = CASES[case]
    X = np.array(values, dtype)
    with fg.Graph():
        x = fg.placeholder("x", X.shape, dtype)
        got = _run(fg.log_softmax(x), kw, x=X)
        xt = fg.placeholder("xt", X.T.shape, dtype)
        got0 = _run(fg.log_softmax(xt, axis=0), kw, xt=X.T.copy())
    assert got.dtype == dtype
    assert _ulps(got, _want(X)) <= 2, (got, _want(X))
    assert _ulps(got0, _want(X.T, axis=0)) <= 2


def test_onnxruntime_agrees_at_large_values(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for k, (dtype, values) in enumerate(CASES):
        X = np.array(values, dtype)
        with fg.Graph():
            x = fg.placeholder("x", (None, X.shape[1]), dtype)
            path = tmp_path / f"lsm{k}.onnx"
            fg.export_onnx([fg.log_softmax(x), fg.softmax(x)], path)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        lsm, sm = sess.run(None, {"x": X})
        assert _ulps(lsm, _want(X)) <= 2, (k, lsm)
        np.testing.assert_allclose(sm, sp.softmax(X.astype(np.float64), axis=-1),
                                   rtol=8 * np.finfo(dtype).eps, atol=1e-300)


def _torch_rules(X, ybar, xdot):
    t = torch.tensor(X, requires_grad=True)
    vjp, = torch.autograd.grad(torch.log_softmax(t, -1), t, torch.tensor(ybar))
    _, jvp = torch.func.jvp(lambda a: torch.log_softmax(a, -1), (torch.tensor(X),),
                            (torch.tensor(xdot),))
    return vjp.numpy(), jvp.numpy()


@pytest.mark.parametrize("kw", [{}, {"codegen": False}])
def test_both_derivative_rules_agree_with_torch_and_finite_differences(kw):
    rng = np.random.default_rng(0)
    X = np.array([[1e8 + r for r in ROWS], [1e15 + r for r in ROWS],
                  [-3.0, 0.5, 2.0, 1.0]])
    ybar, xdot = rng.normal(size=X.shape), rng.normal(size=X.shape)
    with fg.Graph():
        x = fg.placeholder("x", X.shape)
        y = fg.log_softmax(x)
        vjp, jvp = fg.compile([fg.vjp(y, x, ybar), fg.jvp(y, x, xdot)], **kw)(x=X)
    tv, tj = _torch_rules(X, ybar, xdot)
    np.testing.assert_allclose(vjp, tv, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jvp, tj, rtol=1e-12, atol=1e-15)
    # central differences along xdot, in exact steps of x's ulp at 1e15 (0.125)
    h = 0.125
    fd = (sp.log_softmax(X + h * xdot.round(), -1) - sp.log_softmax(X - h * xdot.round(),
                                                                       -1)) / (2 * h)
    with fg.Graph():
        x = fg.placeholder("x", X.shape)
        jvp_r = fg.compile(fg.jvp(fg.log_softmax(x), x, xdot.round()), **kw)(x=X)
    np.testing.assert_allclose(jvp_r, fd, rtol=1e-2, atol=1e-3)   # (h² terms: ~1e-3)
    np.testing.assert_allclose(np.sum(vjp * xdot.round()), np.sum(ybar * jvp_r),
                               rtol=1e-12)


def test_softmax_cross_entropy_target_gradient_at_large_logits():
    # its ∂/∂t is −log softmax(z)/n: it read the unshifted form
    Z = np.array([[1e8 + r for r in ROWS], [1e15 + r for r in ROWS]])
    T = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    with fg.Graph():
        z, t = fg.placeholder("z", Z.shape), fg.placeholder("t", T.shape)
        loss = fg.softmax_cross_entropy(z, t)
        got_loss, gz, gt = fg.compile([loss, *fg.grad(loss, [z, t])])(z=Z, t=T)
    a, b = torch.tensor(Z, requires_grad=True), torch.tensor(T, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(a, b)
    tl.backward()
    np.testing.assert_allclose(got_loss, tl.item(), rtol=1e-14)
    np.testing.assert_allclose(gz, a.grad.numpy(), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(gt, b.grad.numpy(), rtol=1e-14)


def test_the_decomposed_cross_entropy_at_large_logits():
    # fg.vectorize decomposes softmax_cross_entropy into log_softmax (a per-example loss)
    Z = np.array([[1e8 + r for r in ROWS], [1e15 + r for r in ROWS]])
    labels = np.array([1, 3])
    with fg.Graph():
        zi, ti = fg.placeholder("zi", (4,)), fg.placeholder("ti", (), "int64")
        one = fg.softmax_cross_entropy(zi[None], ti[None])
        z = fg.placeholder("z", (None, 4))
        t = fg.placeholder("t", (None,), "int64")
        got = fg.compile(fg.vectorize(one, {zi: z, ti: t}))(z=Z, t=labels)
    want = -_want(Z)[np.arange(2), labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _ulps(np.asarray(got), want) <= 2, (got, want)
