"""The documented values and gradients at non-differentiable points and outside a
domain (README "## Ops", policies): each asserted, in both modes where it matters."""
import numpy as np
import pytest

import flowgrad as fg


def value_and_grad(fn, *arrays, argnum=0):
    """fn(*nodes) summed, its value and reverse gradient w.r.t. input ``argnum``, plus the
    forward-mode directional derivative along ones."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    with fg.Graph():
        xs = [fg.placeholder(f"x{i}", shape=a.shape) for i, a in enumerate(arrays)]
        y = fn(*xs)
        s = fg.sum(y)
        g = fg.grad(s, xs[argnum])
        d = fg.jvp(s, xs[argnum], np.ones(arrays[argnum].shape))
        feed = dict(zip(xs, arrays))
        with np.errstate(all="ignore"):
            yv, gv, dv = fg.run(y, feed), fg.run(g, feed), fg.run(d, feed)
    return yv, gv, dv


# -- kinks -------------------------------------------------------------------------------

def test_abs_at_zero_has_subgradient_zero():
    y, g, d = value_and_grad(fg.abs, [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(y, [2.0, 0.0, 3.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])
    assert d == 0.0


def test_relu_at_zero_has_subgradient_zero():
    y, g, d = value_and_grad(fg.relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(y, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])
    assert d == 1.0


def test_maximum_and_minimum_split_ties_equally():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    _, gx, _ = value_and_grad(fg.maximum, x, y, argnum=0)
    _, gy, _ = value_and_grad(fg.maximum, x, y, argnum=1)
    np.testing.assert_array_equal(gx, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(gy, [1.0, 0.5, 0.0])
    _, gx, _ = value_and_grad(fg.minimum, x, y, argnum=0)
    np.testing.assert_array_equal(gx, [1.0, 0.5, 0.0])
    # maximum(x, x) = x, and its derivative is exactly 1
    _, g, d = value_and_grad(lambda a: fg.maximum(a, a), x)
    np.testing.assert_array_equal(g, [1.0, 1.0, 1.0])
    assert d == 3.0


def test_max_reduction_splits_ties_among_maxima():
    y, g, d = value_and_grad(lambda a: fg.max(a, axis=1), [[1.0, 3.0, 3.0], [5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(y, [3.0, 5.0])
    np.testing.assert_allclose(g, [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)
    assert d == pytest.approx(2.0)
    _, g, _ = value_and_grad(lambda a: fg.min(a), [[1.0, 3.0], [1.0, 2.0]])
    np.testing.assert_array_equal(g, [[0.5, 0.0], [0.5, 0.0]])


@pytest.mark.parametrize("ord", [None, 2, 1, np.inf])
def test_vector_norm_at_zero_has_gradient_zero(ord):
    y, g, d = value_and_grad(lambda a: fg.norm(a, ord), np.zeros(3))
    assert y == 0.0
    np.testing.assert_array_equal(g, np.zeros(3))
    assert d == 0.0


@pytest.mark.parametrize("ord", ["fro", 2, 1, np.inf])
def test_matrix_norm_at_zero_has_gradient_zero(ord):
    y, g, d = value_and_grad(lambda a: fg.norm(a, ord), np.zeros((2, 3)))
    assert y == 0.0
    np.testing.assert_array_equal(g, np.zeros((2, 3)))
    assert d == 0.0


def test_norm_gradient_at_zero_row_of_a_batch_is_zero_elsewhere_exact():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y, g, _ = value_and_grad(lambda a: fg.norm(a, axis=1), x)
    np.testing.assert_array_equal(y, [0.0, 5.0])
    np.testing.assert_allclose(g, [[0.0, 0.0], [0.6, 0.8]], rtol=1e-15)


def test_sqrt_at_zero_is_infinite_slope():
    y, g, _ = value_and_grad(fg.sqrt, [0.0, 4.0])
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert g[0] == np.inf and g[1] == 0.25


# -- outside a domain ------------------------------------------------------------------

def test_log_of_negative_is_nan_with_the_gradient_of_log_abs():
    y, g, _ = value_and_grad(fg.log, [-2.0, 0.0, 2.0])
    assert np.isnan(y[0]) and y[1] == -np.inf and y[2] == pytest.approx(np.log(2))
    np.testing.assert_array_equal(g, [-0.5, np.inf, 0.5])


def test_sqrt_and_log1p_outside_their_domain():
    y, g, _ = value_and_grad(fg.sqrt, [-1.0])
    assert np.isnan(y[0]) and np.isnan(g[0])
    y, g, _ = value_and_grad(fg.log1p, [-3.0])
    assert np.isnan(y[0]) and g[0] == -0.5          # that of log|1 + x|


def test_pow_exponent_gradient_at_zero_base_is_zero_and_nan_below():
    # d/dp x^p = x^p log x: the limit 0 at x = 0 (p > 0); nan for x < 0
    _, gp, _ = value_and_grad(lambda x, p: x ** p, [0.0, 2.0, -2.0], [1.5, 1.5, 2.0], argnum=1)
    assert gp[0] == 0.0
    assert gp[1] == pytest.approx(2.0 ** 1.5 * np.log(2.0), rel=1e-14)
    assert np.isnan(gp[2])
    # the base's gradient of x ** 2 at negative x is unaffected: 2x
    _, gx, _ = value_and_grad(lambda x: x ** 2, [-2.0, 0.0])
    np.testing.assert_array_equal(gx, [-4.0, 0.0])


def test_pow_second_derivative_in_the_exponent_at_zero_base_is_finite():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        p = fg.placeholder("p", shape=(2,))
        gp = fg.grad(fg.sum(x ** p), p)
        hpp = fg.grad(fg.sum(gp), p)       # x^p log² x
        hpx = fg.grad(fg.sum(gp), x)       # x^(p−1)(1 + p log x)
        feed = {x: np.array([0.0, 2.0]), p: np.array([2.0, 2.0])}
        np.testing.assert_allclose(fg.run(hpp, feed), [0.0, 4 * np.log(2) ** 2], rtol=1e-14)
        np.testing.assert_allclose(fg.run(hpx, feed), [0.0, 2 * (1 + 2 * np.log(2))],
                                   rtol=1e-14)


def test_det_of_singular_matrix_is_zero_with_nan_gradient():
    s = np.array([[1.0, 2.0], [2.0, 4.0]])
    y, g, _ = value_and_grad(fg.det, s)
    assert y == 0.0
    assert np.isnan(g).all()


def test_inv_of_singular_matrix_is_nan_not_an_exception():
    batch = np.stack([np.eye(2), np.zeros((2, 2))])
    y, _, _ = value_and_grad(fg.inv, batch)
    np.testing.assert_array_equal(y[0], np.eye(2))
    assert np.isnan(y[1]).all()
    y, _, _ = value_and_grad(lambda a: fg.solve(a, np.ones(2)), batch)
    np.testing.assert_array_equal(y[0], [1.0, 1.0])
    assert np.isnan(y[1]).all()


def test_logdet_of_singular_is_minus_inf_and_of_negative_det_is_nan():
    y, g, _ = value_and_grad(fg.logdet, np.zeros((2, 2)))
    assert y == -np.inf and np.isnan(g).all()
    neg = np.array([[0.0, 1.0], [1.0, 0.0]])          # det = −1
    y, g, _ = value_and_grad(fg.logdet, neg)
    assert np.isnan(y)
    np.testing.assert_allclose(g, np.linalg.inv(neg).T, rtol=1e-15)   # that of log|det X|


def test_where_blocks_nan_from_the_branch_not_taken():
    # the classic guard: log(where(x > 0, x, 1)) has a finite gradient at x ≤ 0
    def guarded(a):
        pos = fg.greater(a, 0)
        return fg.where(pos, fg.log(fg.where(pos, a, 1.0)), 0.0)
    y, g, d = value_and_grad(guarded, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(y, [0.0, 0.0, np.log(2.0)])
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.5])
    assert d == 0.5


def test_out_of_range_labels_are_an_error():
    with fg.Graph():
        z = fg.placeholder("z", shape=(2, 3))
        loss = fg.softmax_cross_entropy(z, np.array([0, 3]))
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            fg.run(loss, {z: np.zeros((2, 3))})
