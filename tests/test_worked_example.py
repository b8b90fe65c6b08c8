"""The lecture notes' worked example, "Univariate logistic least squares regression":
flowgrad's adjoints R̄ L̄ ȳ z̄ w̄ b̄ x̄ against the lecture notes' backward-pass formulas."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.mark.parametrize("w0,b0,x0,t0,lam", [
    (0.8, -0.3, 1.5, 1.0, 0.1),
    (-2.0, 0.5, -0.7, 0.0, 0.01),
    (0.0, 0.0, 3.0, 1.0, 1.0),
])
def test_adjoints_match_the_seed_formulas(w0, b0, x0, t0, lam):
    x = fg.placeholder("x")
    t = fg.placeholder("t")
    w = fg.variable(w0, name="w")
    b = fg.variable(b0, name="b")
    z = w * x + b
    y = fg.sigmoid(z)
    L = 0.5 * (y - t) ** 2
    R = 0.5 * w ** 2
    total = L + lam * R
    tr = fg.compile(total).trace(x=x0, t=t0)

    sig = 1 / (1 + np.exp(-(w0 * x0 + b0)))
    Lbar, Rbar = 1.0, lam                      # L̄ = 𝓛̄, R̄ = 𝓛̄ λ
    ybar = Lbar * (sig - t0)                   # ȳ = L̄ (y − t)
    zbar = ybar * sig * (1 - sig)              # z̄ = ȳ σ'(z)
    expected = {total: 1.0, L: Lbar, R: Rbar, y: ybar, z: zbar,
                w: zbar * x0 + Rbar * w0,      # w̄ = z̄ x + R̄ w
                b: zbar,                       # b̄ = z̄
                x: zbar * w0}                  # x̄ = z̄ w
    for node, value in expected.items():
        assert tr.adjoint(node) == pytest.approx(value, rel=1e-14, abs=1e-15), node.name
    assert tr[y] == pytest.approx(sig, rel=1e-15)
    assert tr[total] == pytest.approx(0.5 * (sig - t0) ** 2 + lam * 0.5 * w0 ** 2, rel=1e-15)


def test_grad_equals_trace_adjoints():
    x = fg.placeholder("x")
    w = fg.variable(0.3, name="w")
    loss = fg.sigmoid(w * x) ** 2
    gw, gx = fg.grad(loss, [w, x])
    prog = fg.compile([loss, gw, gx])
    _, gw_v, gx_v = prog(x=2.0)
    tr = prog.trace(x=2.0)
    assert tr.adjoint(w) == pytest.approx(gw_v, rel=1e-15)
    assert tr.adjoint(x) == pytest.approx(gx_v, rel=1e-15)
    s = 1 / (1 + np.exp(-0.6))
    assert gw_v == pytest.approx(2 * s * s * (1 - s) * 2.0, rel=1e-14)
