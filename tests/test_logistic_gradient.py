"""The batch logistic regression loss: flowgrad's gradient against the analytic one."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.mark.parametrize("n,d", [(200, 5), (1000, 30)])
def test_batch_logistic_gradient_matches_analytic(n, d, rng):
    X = rng.standard_normal((n, d))
    T = (rng.random(n) < 0.5).astype(float)
    W, B, lam = rng.standard_normal(d), 0.3, 0.01
    x = fg.placeholder("x", shape=(None, d))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(W, name="w")
    b = fg.variable(B, name="b")
    loss = fg.bce_with_logits(fg.linear(x, w, b), t) + lam * fg.l2(w)
    loss_v, gw, gb = fg.compile([loss, *fg.grad(loss, [w, b])])(x=X, t=T)

    z = X @ W + B
    p = 1 / (1 + np.exp(-z))
    want_loss = np.mean(np.logaddexp(0, z) - T * z) + lam * 0.5 * W @ W
    want_gw = X.T @ (p - T) / n + lam * W
    want_gb = np.mean(p - T)
    assert loss_v == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(gw, want_gw, rtol=1e-10, atol=0)
    assert gb == pytest.approx(want_gb, rel=1e-10)


def test_sigmoid_mse_model_of_the_api_contract(rng):
    X, T = rng.standard_normal((50, 3)), rng.random(50)
    x = fg.placeholder("x", shape=(None, 3))
    t = fg.placeholder("t", shape=(None,), dtype="float64")
    w = fg.variable(np.array([0.1, -0.2, 0.3]), name="w")
    b = fg.variable(0.05, name="b")
    loss = fg.mse(fg.sigmoid(fg.linear(x, w, b)), t) + 0.1 * fg.l2(w)
    gw, gb = fg.grad(loss, [w, b])
    y = 1 / (1 + np.exp(-(X @ w.value + 0.05)))
    r = 2 * (y - T) * y * (1 - y) / 50
    got_w, got_b = fg.run([gw, gb], {x: X, t: T})
    np.testing.assert_allclose(got_w, X.T @ r + 0.1 * w.value, rtol=1e-10)
    assert got_b == pytest.approx(r.sum(), rel=1e-10)
