"""flowgrad's derivatives against the closed forms of matrix calculus (the lecture notes'
exercises and the standard identities), to round-off."""
import numpy as np
import pytest

import flowgrad as fg

rng = np.random.default_rng(11)
n = 3
A, B, C = (rng.standard_normal((n, n)) for _ in range(3))
X0 = n * np.eye(n) + rng.standard_normal((n, n))
x0 = 0.5 * rng.standard_normal(n)
TIGHT = dict(rtol=1e-12, atol=1e-13)


def run(build, at, *more):
    """Evaluate the nodes ``build(x)`` returns, x a placeholder fed ``at``."""
    with fg.Graph():
        x = fg.placeholder("x", shape=np.shape(at))
        outs = build(x)
        return fg.compile(list(outs))(x=at)


def test_grad_log_det_is_inverse_transpose_batched():
    Xs = np.stack([X0, X0.T @ X0])
    g, d = run(lambda X: [fg.grad(fg.sum(fg.logdet(X)), X),
                          fg.jvp(fg.logdet(X), X, C[None] * np.ones((2, 1, 1)))], Xs)
    np.testing.assert_allclose(g, np.linalg.inv(Xs).transpose(0, 2, 1), **TIGHT)
    np.testing.assert_allclose(d, np.trace(np.linalg.inv(Xs) @ C, axis1=1, axis2=2), **TIGHT)


def test_grad_det_is_det_times_inverse_transpose():
    (g,) = run(lambda X: [fg.grad(fg.det(X), X)], X0)
    np.testing.assert_allclose(g, np.linalg.det(X0) * np.linalg.inv(X0).T, **TIGHT)


def test_grad_trace_AXB_is_AT_BT():
    (g,) = run(lambda X: [fg.grad(fg.trace(A @ X @ B), X)], X0)
    np.testing.assert_allclose(g, A.T @ B.T, **TIGHT)


def test_grad_trace_inverse_and_its_jacobian():
    Xi = np.linalg.inv(X0)
    g, J = run(lambda X: [fg.grad(fg.trace(fg.inv(X)), X), fg.jacobian(fg.inv(X), X)], X0)
    np.testing.assert_allclose(g, -(Xi @ Xi).T, **TIGHT)
    # d(X⁻¹)_ij / dX_kl = −(X⁻¹)_ik (X⁻¹)_lj
    np.testing.assert_allclose(J, -np.einsum("ik,lj->ijkl", Xi, Xi), **TIGHT)


def test_hessian_of_log_det():
    Xi = np.linalg.inv(X0)
    (H,) = run(lambda X: [fg.hessian(fg.logdet(X), X)], X0)
    np.testing.assert_allclose(H, -np.einsum("jk,li->ijkl", Xi, Xi), **TIGHT)


def test_sum_and_product_of_eigenvalues():
    # exercise 14 for symmetric X (eigvalsh reads the lower triangle, so the gradient
    # lives there: an off-diagonal entry below counts for both symmetric positions)
    S = X0 @ X0.T
    g_sum, g_prod = run(lambda X: [fg.grad(fg.sum(fg.eigvalsh(X)), X),
                                   fg.grad(_prod3(fg.eigvalsh(X)), X)], S)
    np.testing.assert_allclose(g_sum, np.eye(n), **TIGHT)
    G = np.linalg.det(S) * np.linalg.inv(S)
    np.testing.assert_allclose(g_prod, np.tril(G, -1) * 2 + np.diag(np.diag(G)), rtol=1e-10)


def _prod3(w):
    return w[0] * w[1] * w[2]


def test_eigenvalue_gradients_are_eigenvector_outer_products():
    S = np.diag([1.0, 2.0, 4.0]) + 0.1 * (C + C.T)
    w, V = np.linalg.eigh(S)
    (J,) = run(lambda X: [fg.jacobian(fg.eigvalsh(X), X)], S)
    for i in range(n):   # ∂λᵢ/∂S = vᵢvᵢᵀ, folded onto the lower triangle
        P = np.outer(V[:, i], V[:, i])
        np.testing.assert_allclose(J[i], np.tril(P, -1) * 2 + np.diag(np.diag(P)), **TIGHT)


def test_spectral_norm_gradient_is_top_singular_vectors():
    M = rng.standard_normal((4, 3))
    U, s, Vt = np.linalg.svd(M)
    (g,) = run(lambda X: [fg.grad(fg.norm(X, 2), X)], M)
    np.testing.assert_allclose(g, np.outer(U[:, 0], Vt[0]), **TIGHT)


def test_softmax_jacobian():
    z = rng.standard_normal(4)
    s = np.exp(z - z.max())
    s /= s.sum()
    (J,) = run(lambda x: [fg.jacobian(fg.softmax(x), x)], z)
    np.testing.assert_allclose(J, np.diag(s) - np.outer(s, s), **TIGHT)


def test_softmax_cross_entropy_gradient_is_softmax_minus_targets():
    z = rng.standard_normal((5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    (g,) = run(lambda x: [fg.grad(fg.softmax_cross_entropy(x, labels), x)], z)
    np.testing.assert_allclose(g, (s - np.eye(3)[labels]) / 5, **TIGHT)


@pytest.mark.parametrize("exercise", ["4", "5", "12", "20", "24", "28"])
def test_hessians_of_seed_exercises(exercise):
    I = np.eye(n)
    M, c, a = rng.standard_normal((4, n)), rng.standard_normal(4), rng.standard_normal(n)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    if exercise == "4":                       # −exp(−xᵀx)
        e = np.exp(-x0 @ x0)
        f, g, h = lambda x: -fg.exp(-(x @ x)), 2 * x0 * e, 2 * e * (I - 2 * np.outer(x0, x0))
    elif exercise == "5":                     # ½‖Ax − b‖²
        f, g, h = lambda x: 0.5 * fg.sum((A @ x - a) ** 2), A.T @ (A @ x0 - a), A.T @ A
    elif exercise == "12":                    # log Σ exp(aᵢᵀx + bᵢ)
        p = np.exp(M @ x0 + c) / np.exp(M @ x0 + c).sum()
        f, g, h = (lambda x: fg.logsumexp(M @ x + c), M.T @ p,
                   M.T @ (np.diag(p) - np.outer(p, p)) @ M)
    elif exercise == "20":                    # ln(1 + exp⟨a, x⟩)
        s = sig(a @ x0)
        f, g, h = lambda x: fg.softplus(fg.dot(a, x)), s * a, s * (1 - s) * np.outer(a, a)
    elif exercise == "24":                    # ⟨x, x⟩^⟨x, x⟩
        t = x0 @ x0
        L = np.log(t) + 1
        f, g = lambda x: (x @ x) ** (x @ x), 2 * t ** t * L * x0
        h = 2 * t ** t * L * I + 4 * t ** t * (L ** 2 + 1 / t) * np.outer(x0, x0)
    else:                                     # (1/m) Σ log(1 + exp(aᵢᵀx)) + μ/2 ‖x‖²
        mu = 0.3
        s = sig(M @ x0)
        f = lambda x: fg.mean(fg.softplus(M @ x)) + mu / 2 * fg.sum(x * x)  # noqa: E731
        g = M.T @ s / 4 + mu * x0
        h = M.T @ np.diag(s * (1 - s)) @ M / 4 + mu * I
    gv, hv, hv_rev = run(lambda x: [fg.grad(f(x), x), fg.hessian(f(x), x),
                                    fg.jacobian(fg.grad(f(x), x), x)], x0)
    np.testing.assert_allclose(gv, g, **TIGHT)
    np.testing.assert_allclose(hv, h, **TIGHT)
    np.testing.assert_allclose(hv_rev, h, **TIGHT)


def test_hvp_of_the_spectral_norm_of_a_rank_one_matrix():
    # exercise 27: ‖xxᵀ‖₂ = ‖x‖², so ∇ = 2x and H v = 2v — through eigvalsh of a Gram
    # matrix with a repeated (zero) eigenvalue
    v = rng.standard_normal(n)
    g, hv = run(lambda x: [fg.grad(fg.norm(fg.outer(x, x), 2), x),
                           fg.hvp(fg.norm(fg.outer(x, x), 2), x, v)], x0)
    np.testing.assert_allclose(g, 2 * x0, **TIGHT)
    np.testing.assert_allclose(hv, 2 * v, rtol=1e-10, atol=1e-12)
