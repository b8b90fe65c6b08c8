"""Second derivatives through eigen/singular vectors at exactly repeated values.

The eigenvector rules meet F_ij = 1/(λ_j − λ_i); at an exact tie the true coefficient is
a limit the rule cannot see (for Σ h(λᵢ) the divided difference → h″(λ)). It used to be
0, silently wrong unless h is linear (Σ λᵢ² at S = I was off by 3.2); it is now NaN, as
PyTorch. First derivatives of eigenvalue functions never meet F and stay exact at ties,
and the spectral norm goes through the top eigenpair alone, exact at lower ties.
"""
import numpy as np
import pytest

import flowgrad as fg

V = np.arange(9.).reshape(3, 3) / 10 + 0.1
MODES = ["fwd-rev", "rev-rev"]
DISTINCT = [np.diag([3., 2., 1.]),
            np.array([[2.0, 0.3, -0.5], [0.1, 1.0, 0.7], [0.4, -0.2, -1.5]])]
TIED = [np.eye(3), np.diag([3., 2., 2.]), np.diag([2., 2., 5.])]


def _sym(a):
    return np.tril(a) + np.tril(a, -1).T


def _hvp(f_of, a, mode, direction=V):
    with fg.Graph():
        x = fg.placeholder("x", shape=np.shape(a))
        return fg.run(fg.hvp(f_of(x), x, direction, mode=mode), {x: a})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("a", DISTINCT, ids=["diag", "dense"])
def test_svd_sum_of_squares_hessian_at_distinct_values(a, mode):
    # Σ s² = ‖A‖²_F: H v = 2 v
    got = _hvp(lambda x: fg.sum(fg.svd(x)[1] ** 2), a, mode)
    np.testing.assert_allclose(got, 2 * V, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("a", DISTINCT, ids=["diag", "dense"])
def test_eigvalsh_sum_of_squares_hessian_at_distinct_values(a, mode):
    # Σ λ² = ‖S‖²_F with S from x's lower triangle: Σ x_ii² + 2 Σ_{i>j} x_ij²
    got = _hvp(lambda x: fg.sum(fg.eigvalsh(x) ** 2), _sym(a), mode)
    want = 4 * np.tril(V, -1) + 2 * np.diag(np.diag(V))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("a", TIED, ids=["I", "tie low", "tie high"])
def test_second_derivatives_through_vectors_are_nan_at_exact_ties(a, mode):
    for f in (lambda x: fg.sum(fg.svd(x)[1] ** 2), lambda x: fg.sum(fg.eigvalsh(x) ** 2)):
        assert np.isnan(_hvp(f, a, mode)).all()


@pytest.mark.parametrize("a", TIED, ids=["I", "tie low", "tie high"])
def test_first_derivatives_of_eigenvalue_functions_are_exact_at_ties(a):
    x = fg.placeholder("x", shape=(3, 3))
    g_svd = fg.run(fg.grad(fg.sum(fg.svd(x)[1] ** 2), x), {x: a})
    np.testing.assert_allclose(g_svd, 2 * a, rtol=1e-14, atol=0)
    # Σ λ³ = tr S³: ∂/∂S = 3 S², seen through the lower triangle (off-diagonal twice)
    g_eig = fg.run(fg.grad(fg.sum(fg.eigvalsh(x) ** 3), x), {x: a})
    s2 = 3 * a @ a
    np.testing.assert_allclose(g_eig, np.tril(s2 + s2.T) - np.diag(np.diag(s2)),
                               rtol=1e-14, atol=0)


def test_eigenvector_functions_are_nan_at_ties_and_exact_apart():
    # V diag(λ²) Vᵀ = S²: its derivative at a tie needs the divided difference, unseen
    x = fg.placeholder("x", shape=(3, 3))
    w, vec = fg.eigh(x)
    c = np.arange(9.).reshape(3, 3)
    f = fg.sum(fg.matmul(vec * fg.expand_dims(w ** 2, 0), fg.transpose(vec)) * c)
    g = fg.grad(f, x)
    assert np.isnan(fg.run(g, {x: np.eye(3)})).all()
    s = np.diag([1., 2., 3.])
    full = c @ s + s @ c                       # ∂⟨C, S²⟩/∂S, then through the triangle
    full = (full + full.T) / 2
    np.testing.assert_allclose(fg.run(g, {x: s}),
                               np.tril(2 * full) - np.diag(np.diag(full)), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("x0", [[1., 0, 0], [1., 1., 0], [0.3, -1.2, 0.7]],
                         ids=["e1", "e1+e2", "dense"])
def test_spectral_norm_of_xxT_has_hessian_2I_even_at_exact_lower_ties(x0, mode):
    # ‖xxᵀ‖₂ = ‖x‖²; the Gram matrix's lower eigenvalues are exactly 0 at e₁ and e₁ + e₂
    x = fg.placeholder("x", shape=(3,))
    f = fg.norm(fg.outer(x, x), 2)
    for k in range(3):
        e = np.eye(3)[k]
        got = fg.run(fg.hvp(f, x, e, mode=mode), {x: np.array(x0)})
        np.testing.assert_allclose(got, 2 * e, rtol=1e-12, atol=1e-12)


def _top_singular_gradient(a):
    u, s, vh = np.linalg.svd(a)
    return np.outer(u[:, 0], vh[0])            # ∂σ₁/∂A = u₁ v₁ᵀ (σ₁ simple)


@pytest.mark.parametrize("a", [np.diag([3., 1., 1.]), np.diag([3., 0., 0.])],
                         ids=["tied", "tied zeros"])
def test_spectral_norm_hessian_at_lower_ties_matches_finite_differences(a):
    x = fg.placeholder("x", shape=(3, 3))
    got = fg.run(fg.hvp(fg.norm(x, 2), x, V), {x: a})
    h = 1e-6
    want = (_top_singular_gradient(a + h * V) - _top_singular_gradient(a - h * V)) / (2 * h)
    np.testing.assert_allclose(got, want, atol=1e-8)


def test_spectral_norm_hessian_is_nan_at_a_tied_top():
    x = fg.placeholder("x", shape=(3, 3))
    assert np.isnan(fg.run(fg.hvp(fg.norm(x, 2), x, V), {x: np.diag([2., 2., 1.])})).all()
