"""Numerical stability: values and gradients finite and accurate at inputs of ±1000
(where a naive exp overflows), and logdet finite where det over/underflows."""
import warnings

import numpy as np
import pytest

import flowgrad as fg

BIG = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
# Derivatives that reuse a value of size ~1000 (exp(x − logsumexp x)) carry its rounding,
# an ulp of 1000 ≈ 1.1e-13: that is as accurate as float64 allows, and what is held here.
RTOL = 1e-12


def run_with_grad(fn, *arrays):
    """Value, gradient of the sum w.r.t. the first input, and jvp along ones — with numpy's
    overflow, invalid and divide warnings made errors, so an inf/nan made anywhere in the
    program fails the test (underflow to 0, as exp(−2000), is the right answer)."""
    with fg.Graph():
        xs = [fg.placeholder(f"x{i}", shape=np.shape(a)) for i, a in enumerate(arrays)]
        y = fn(*xs)
        s = fg.sum(y)
        g = fg.grad(s, xs[0])
        d = fg.jvp(s, xs[0], np.ones(np.shape(arrays[0])))
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"), \
                warnings.catch_warnings():
            warnings.simplefilter("error")
            return fg.compile([y, g, d])(dict(zip(xs, arrays)))


def test_sigmoid_at_1000():
    y, g, _ = run_with_grad(fg.sigmoid, BIG)
    np.testing.assert_allclose(y, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0],
                               rtol=RTOL, atol=0)
    assert y[0] == 0.0 or y[0] < 1e-300
    np.testing.assert_allclose(g, y * (1 - y), rtol=RTOL, atol=0)


def test_softplus_at_1000():
    y, g, _ = run_with_grad(fg.softplus, BIG)
    np.testing.assert_allclose(y, [0.0, np.log1p(np.exp(-1)), np.log(2),
                                   1 + np.log1p(np.exp(-1)), 1000.0], rtol=RTOL, atol=1e-300)
    np.testing.assert_allclose(g, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0],
                               rtol=RTOL, atol=1e-300)


def test_logsumexp_at_1000():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [1000.0, -1000.0]])
    y, g, d = run_with_grad(lambda a: fg.logsumexp(a, axis=1), x)
    np.testing.assert_allclose(y, [1000 + np.log(2), -1000 + np.log(2), 1000.0], rtol=RTOL)
    np.testing.assert_allclose(g, [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]], rtol=RTOL, atol=0)
    np.testing.assert_allclose(d, 3.0, rtol=RTOL)


def test_logsumexp_second_derivative_at_1000():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        h = fg.hessian(fg.logsumexp(x), x)
        p = np.array([0.5, 0.5])
        # exp(x − lse) with lse ≈ 1000 carries lse's rounding (an ulp of 1000 ≈ 1e-13)
        np.testing.assert_allclose(fg.run(h, {x: np.array([1000.0, 1000.0])}),
                                   np.diag(p) - np.outer(p, p), rtol=RTOL)


def test_logsumexp_of_all_minus_inf_is_minus_inf():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        with np.errstate(divide="ignore"):
            assert fg.run(fg.logsumexp(x), {x: np.array([-np.inf, -np.inf])}) == -np.inf


def test_softmax_at_1000():
    x = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 1000.0]])
    y, g, _ = run_with_grad(lambda a: fg.softmax(a) * np.array([1.0, 2.0, 3.0]), x)
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0], [1 / 3, 2 / 3, 1.0]], rtol=RTOL, atol=0)
    # ∂/∂x Σ c·s = s ∘ (c − ⟨c, s⟩)
    s = np.array([[1.0, 0.0, 0.0], [1 / 3] * 3])
    c = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(g, s * (c - (s * c).sum(1, keepdims=True)), rtol=RTOL, atol=1e-12)


def test_log_softmax_at_1000_is_exact():
    y, _, _ = run_with_grad(fg.log_softmax, np.array([1000.0, -1000.0]))
    np.testing.assert_array_equal(y, [0.0, -2000.0])


def test_bce_with_logits_at_1000():
    z = np.array([1000.0, 1000.0, -1000.0, -1000.0])
    t = np.array([1.0, 0.0, 1.0, 0.0])
    y, g, _ = run_with_grad(lambda a, b: fg.bce_with_logits(a, b, reduction="none"), z, t)
    np.testing.assert_allclose(y, [0.0, 1000.0, 1000.0, 0.0], rtol=RTOL, atol=0)
    np.testing.assert_allclose(g, [0.0, 1.0, -1.0, 0.0], rtol=RTOL, atol=0)


@pytest.mark.parametrize("labels", [False, True])
def test_softmax_cross_entropy_at_1000(labels):
    z = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0]])
    k = np.array([0, 1])
    t = k if labels else np.eye(3)[k]
    y, g, _ = run_with_grad(lambda a: fg.softmax_cross_entropy(a, t, reduction="none"), z)
    np.testing.assert_allclose(y, [0.0, 2000.0], rtol=RTOL, atol=0)
    np.testing.assert_allclose(g, [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]], rtol=RTOL, atol=0)


def test_logdet_where_det_overflows_and_underflows():
    with fg.Graph():
        x = fg.placeholder("x", shape=(400, 400))
        y = fg.logdet(x)
        g = fg.grad(y, x)
        for scale in (1e3, 1e-3):                 # det = scale^400: inf / 0 in float64
            big = scale * np.eye(400)
            yv, gv = fg.compile([y, g])(x=big)
            assert yv == pytest.approx(400 * np.log(scale), rel=1e-14)
            np.testing.assert_allclose(np.diag(gv), 1 / scale, rtol=RTOL)
