"""Complex inputs where a real formula was applied: refused, not silently wrong.

norm's 2-norm/Frobenius computed √Σx² (a complex number, not numpy's real √Σ|x|²), the
spectral norm built a plain-transposed Gram matrix (not Hermitian), and logdet dropped
slogdet's complex sign (`sign < 0`), returning log|det X| as a float. Each is now a
ShapeError when the graph is built; what stays correct for complex values (ord 1 and
inf norms, det) still runs and matches numpy."""
import numpy as np
import pytest

import flowgrad as fg

RNG = np.random.default_rng(7)
C = RNG.standard_normal((3, 3)) + 1j * RNG.standard_normal((3, 3))


@pytest.mark.parametrize("build", [
    lambda x: fg.norm(x), lambda x: fg.norm(x, axis=-1), lambda x: fg.norm(x, "fro"),
    lambda x: fg.norm(x, 2, axis=(0, 1)), lambda x: fg.norm(x, 2, axis=1),
    lambda x: fg.logdet(x)])
def test_complex_is_refused_where_the_formula_is_real(build):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3), dtype="complex128")
        with pytest.raises(fg.ShapeError, match="complex values are not supported"):
            build(x)


@pytest.mark.parametrize("ord_", [1, np.inf])
def test_what_is_right_for_complex_still_runs(ord_):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3), dtype="complex128")
        prog = fg.compile([fg.norm(x, ord_), fg.norm(x, ord_, axis=-1), fg.det(x)])
    m, v, d = prog(x=C)
    np.testing.assert_allclose(m, np.linalg.norm(C, ord_), rtol=1e-13)
    np.testing.assert_allclose(v, np.linalg.norm(C, ord_, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(d, np.linalg.det(C), rtol=1e-12)


def test_real_logdet_and_norms_unchanged():
    a = C.real @ C.real.T + np.eye(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3))
        prog = fg.compile([fg.logdet(x), fg.norm(x), fg.norm(x, 2)])
    ld, fro, spec = prog(x=a)
    np.testing.assert_allclose(ld, np.linalg.slogdet(a)[1], rtol=1e-13)
    np.testing.assert_allclose(fro, np.linalg.norm(a), rtol=1e-13)
    np.testing.assert_allclose(spec, np.linalg.norm(a, 2), rtol=1e-12)
