"""eigvalsh and eigh on non-finite input: NaN for each matrix that holds a NaN or ±inf,
the other matrices of the batch exact — on every path, whatever LAPACK would do there
(numpy's eigvalsh raises LinAlgError for most such matrices, returns NaN for some and
finite numbers for others, e.g. [[nan, 0], [0, 2]] -> [0, -0])."""
import warnings

import numpy as np
import pytest

import flowgrad as fg


def _batch(n, bad, where):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((3, n, n))
    a = a + np.swapaxes(a, -1, -2)
    a[1][where] = bad
    a[1][where[::-1]] = bad
    return a


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (1, 0)])
def test_a_non_finite_matrix_gives_nan_and_the_others_their_values(n, bad, where, codegen):
    a = _batch(n, bad, where)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, n, n))
        w, v = fg.eigh(x)
        prog = fg.compile([fg.eigvalsh(x), w, v, fg.grad(fg.sum(fg.eigvalsh(x) ** 2), x)],
                          codegen=codegen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vals, w2, vecs, grad = prog(x=a)
    good = [0, 2]
    want_w, want_v = np.linalg.eigh(a[good])
    np.testing.assert_allclose(vals[good], want_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(w2, vals)
    np.testing.assert_allclose(np.abs(vecs[good]), np.abs(want_v), rtol=1e-10, atol=1e-12)
    # Σλ² = ‖S‖²: its gradient, in the lower triangle read (an entry below the diagonal
    # stands for two of S), is 2S on the diagonal and 4S below it
    weight = np.eye(n) + 2 * np.tril(np.ones((n, n)), -1)
    np.testing.assert_allclose(grad[good], 2 * a[good] * weight, rtol=1e-10, atol=1e-12)
    assert np.isnan(vals[1]).all() and np.isnan(vecs[1]).all() and np.isnan(grad[1]).all()


def test_float32_keeps_its_dtype():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 2), dtype="float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = fg.run(fg.eigvalsh(x), {x: np.array([[np.nan, 0], [0, 2]], np.float32)})
    assert got.dtype == np.float32 and np.isnan(got).all()
