"""Derivatives at the points where a rule's formula alone is 0 · ∞ or names the wrong
function: pow at x = 0 with an exponent 0 (or 1, one order up) and norm at x = 0. Each
against torch's autograd in float64, a closed form or finite differences, on both
executors and through every Jacobian method (found by the higher-order sweep)."""
import numpy as np
import pytest
import torch

import flowgrad as fg

EXECUTORS = [True, False]   # codegen: generated code, or the reference interpreter


def _run(outs, feed, codegen):
    prog = fg.compile(outs, codegen=codegen)
    first = prog(feed)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, prog(feed)))
    return first


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_pow_with_a_tensor_exponent_zero_has_derivative_zero_at_x_zero(codegen):
    # d/dx x^p at p = 0 is 0 (x⁰ = 1); the rule's p · x^(p−1) alone is 0 · ∞ = nan at x = 0
    xv, pv = np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 3.0])
    with fg.Graph():
        x, p = fg.placeholder("x", shape=(3,)), fg.placeholder("p", shape=(3,))
        y = x ** p
        L = fg.sum(y)
        gx, gp = fg.grad(L, [x, p])
        jx = fg.jvp(y, x, np.ones(3))
        got = _run([gx, gp, jx], {x: xv, p: pv}, codegen)
    X = torch.tensor(xv, requires_grad=True)
    P = torch.tensor(pv, requires_grad=True)
    tx, tp = torch.autograd.grad((X ** P).sum(), [X, P])
    np.testing.assert_allclose(got[0], tx.numpy(), rtol=1e-12, atol=0)   # [0, 0, 0]
    np.testing.assert_allclose(got[1], tp.numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(got[2], tx.numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_pow_mixed_second_derivative_survives_the_mask_at_p_zero(codegen):
    # ∂²(x^p)/∂x∂p = x^(p−1) (1 + p log x) = 1/x at p = 0: masking p · x^(p−1) wherever
    # p = 0 would cut it from the forward-over-reverse product (torch's own rule does)
    xv, pv = np.array([2.0, 0.5]), np.array([0.0, 0.0])
    with fg.Graph():
        x, p = fg.placeholder("x", shape=(2,)), fg.placeholder("p", shape=(2,))
        gx = fg.grad(fg.sum(x ** p), x)
        outs = [fg.jvp(gx, p, np.ones(2)), fg.grad(fg.sum(gx), p),
                fg.hvp(fg.sum(x ** p), [x, p], [np.zeros(2), np.ones(2)])[0]]
        got = _run(outs, {x: xv, p: pv}, codegen)
    h = 1e-5
    f = lambda a, b: a ** b
    fd = (f(xv + h, pv + h) - f(xv + h, pv - h) - f(xv - h, pv + h) + f(xv - h, pv - h)) / (4 * h * h)
    for g in got:
        np.testing.assert_allclose(g, 1 / xv, rtol=1e-12)
        np.testing.assert_allclose(g, fd, rtol=1e-6)


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("method", [None, "map"])
@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("power", [0.0, 1.0])
def test_pow_hessian_at_zero_is_the_same_on_every_path(codegen, method, mode, power):
    # x**0 and x**1 have Hessian 0 everywhere; the Jacobian's map body did not fold g · 0
    # and gave nan at x = 0 where the vectorized one gave 0
    xv = np.array([0.0, -1.0, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        L = fg.sum(x ** power)
        got = _run([fg.hessian(L, x, mode=mode, method=method)], {x: xv}, codegen)[0]
    X = torch.tensor(xv)
    ref = torch.autograd.functional.hessian(lambda a: (a ** power).sum(), X).numpy()
    np.testing.assert_array_equal(got, ref)      # zeros
    np.testing.assert_array_equal(got, np.zeros((3, 3)))


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("power", [0.0, 1.0])
def test_pow_second_derivative_at_zero_with_a_run_time_length(codegen, power):
    # the same Hessians over an input of run-time length, where the simplifier cannot
    # fold the zero exponent's product away: it was 0 · ∞ = nan at x = 0
    xv = np.array([0.0, -1.0, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        L = fg.sum(x ** power)
        g = fg.grad(L, x)
        outs = [g, fg.grad(fg.sum(g), x), fg.hvp(L, x, np.ones(3), mode="rev-rev"),
                fg.hvp(L, x, np.ones(3)), fg.grad(fg.jvp(L, x, np.ones(3)), x)]
        got = _run(outs, {x: xv}, codegen)
    X = torch.tensor(xv, requires_grad=True)
    tg, = torch.autograd.grad((X ** power).sum(), X, create_graph=True)
    th = torch.autograd.grad(tg.sum(), X, allow_unused=True)[0] if tg.requires_grad else None
    np.testing.assert_array_equal(got[0], tg.detach().numpy())
    for v in got[1:]:
        np.testing.assert_array_equal(v, np.zeros(3) if th is None else th.numpy())
        np.testing.assert_array_equal(v, np.zeros(3))


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_pow_tensor_exponent_one_second_derivative_at_zero(codegen):
    # d²/dx² x^p = p (p−1) x^(p−2): 0 at p = 1, where the rule's formula is 1 · 0 · 0^(−1)
    xv, pv = np.array([0.0, 3.0]), np.array([1.0, 1.0])
    with fg.Graph():
        x, p = fg.placeholder("x", shape=(2,)), fg.placeholder("p", shape=(2,))
        gx = fg.grad(fg.sum(x ** p), x)
        got = _run([fg.grad(fg.sum(gx), x), fg.jvp(gx, x, np.ones(2))], {x: xv, p: pv}, codegen)
    X = torch.tensor(xv, requires_grad=True)
    g, = torch.autograd.grad((X ** torch.tensor(pv)).sum(), X, create_graph=True)
    ref, = torch.autograd.grad(g.sum(), X)
    for v in got:
        np.testing.assert_array_equal(v, ref.numpy())        # [0, 0]


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("method", [None, "map"])
def test_norm_second_derivative_at_zero_is_abs_s(codegen, method):
    # along every line through 0, ‖s d‖ = |s| ‖d‖: a kink, whose second derivative the
    # library takes as abs's, 0 (std's at zero spread is 0 too). The rule's x / 1 there
    # gave the identity, the Hessian of ½‖x‖²: for a 1-vector, norm and abs disagreed
    xv = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 12.0]])
    W = np.array([1.5, -2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        L = fg.sum(fg.norm(x, axis=1) * W)
        H = fg.hessian(L, x, method=method)
        g = fg.grad(L, x)
        hv = [fg.hvp(L, x, np.ones((2, 3)), mode=m) for m in ("fwd-rev", "rev-rev")]
        got = _run([H, g, *hv], {x: xv}, codegen)
        with fg.Graph():
            a = fg.placeholder("a", shape=(1,))
            b = fg.placeholder("b", shape=())
            one = _run([fg.hessian(fg.norm(a), a), fg.hessian(fg.abs(b), b)],
                       {a: np.zeros(1), b: np.array(0.0)}, codegen)
    assert one[0].item() == one[1].item() == 0.0
    H = got[0].reshape(6, 6)
    np.testing.assert_array_equal(H[:3], 0.0)
    np.testing.assert_array_equal(H[:, :3], 0.0)
    X = torch.tensor(xv[1])
    ref = torch.autograd.functional.hessian(lambda a: torch.linalg.norm(a) * W[1], X).numpy()
    np.testing.assert_allclose(H[3:, 3:], ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(got[1][0], 0.0)
    np.testing.assert_allclose(got[1][1], W[1] * xv[1] / 13.0, rtol=1e-15)
    for v in got[2:]:
        np.testing.assert_array_equal(v[0], 0.0)
        np.testing.assert_allclose(v[1], ref @ np.ones(3), rtol=1e-12, atol=1e-15)
