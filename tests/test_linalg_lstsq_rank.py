"""lstsq of a numerically rank-deficient A is NaN (value and gradients), not ~1e14.

QR leaves R's diagonal at round-off for a rank-deficient A (1.6e-15 for the probe's
matrix, not 0), so solve(R, ·) returned ~1e14 with no warning. The bound is
numpy.linalg.matrix_rank's, m·ε·max|R_jj| on |R_ii|: at it, NaN; one ulp above, the exact
solution. Wide matrices, and the ONNX refusal, name lstsq.
"""
import warnings

import numpy as np
import pytest

import flowgrad as fg

PATHS = [dict(codegen=True), dict(codegen=False), dict(backend="dask")]
PATH_IDS = ["codegen", "interpreter", "dask"]


def _lstsq_program(m, n, dtype="float64", **how):
    a = fg.placeholder("a", shape=(m, n), dtype=dtype)
    b = fg.placeholder("b", shape=(m,), dtype=dtype)
    x = fg.lstsq(a, b)
    return fg.compile([x, *fg.grad(fg.sum(x * x), [a, b])], **how)


def _run(prog, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [np.asarray(v) for v in prog(a=a, b=b)]


@pytest.mark.parametrize("how", PATHS, ids=PATH_IDS)
def test_the_probes_rank_one_matrix_gives_nan_value_and_gradients(how):
    if how.get("backend") == "dask":
        pytest.importorskip("dask")
    a = np.array([[1., 2.], [2., 4.], [3., 6.]])
    assert 0 < abs(np.linalg.qr(a)[1][1, 1]) < 1e-14          # round-off, not exactly 0
    x, da, db = _run(_lstsq_program(3, 2, **how), a, np.array([1., 2., 3.5]))
    assert np.isnan(x).all() and np.isnan(da).all() and np.isnan(db).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("how", PATHS, ids=PATH_IDS)
def test_the_rank_bound_is_m_eps_max_diagonal(dtype, how):
    if how.get("backend") == "dask":
        pytest.importorskip("dask")
    eps = np.finfo(dtype).eps
    prog = _lstsq_program(3, 2, dtype, **how)
    b = np.array([0.5, 2.0, 7.0], dtype)
    at = np.asarray(3 * eps, dtype)                          # |R_22| = 3ε · max|R_jj| = 3ε
    above = np.nextafter(at, np.asarray(1, dtype))
    for d in (at, -at):
        a = np.array([[1, 0], [0, d], [0, 0]], dtype)
        x, da, db = _run(prog, a, b)
        assert np.isnan(x).all() and np.isnan(da).all() and np.isnan(db).all(), d
    a = np.array([[1, 0], [0, above], [0, 0]], dtype)
    x, da, db = _run(prog, a, b)
    assert x.dtype == dtype
    np.testing.assert_allclose(x, [0.5, 2.0 / above], rtol=4 * eps)   # the exact solution
    # ∂Σx²/∂b = 2 A⁺ᵀ x: A⁺ = diag(1, 1/d) on the first two rows
    np.testing.assert_allclose(db, [1.0, 4.0 / above ** 2, 0.0], rtol=8 * eps)
    assert np.isfinite(da).all()


def test_a_full_rank_matrix_is_unchanged():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 3)), rng.standard_normal(6)
    x = _run(_lstsq_program(6, 3), a, b)[0]
    np.testing.assert_allclose(x, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-12)


def test_a_wide_matrix_is_refused_naming_lstsq():
    a = fg.placeholder("a", shape=(2, 3))
    with pytest.raises(fg.ShapeError, match=r"^lstsq: needs m ≥ n .* got 2×3"):
        fg.lstsq(a, np.ones(2))
    with pytest.raises(fg.ShapeError, match=r"^lstsq: needs m ≥ n .* got 3×None"):
        fg.lstsq(fg.placeholder("c", shape=(3, None)), np.ones(3))


def test_onnx_export_refusal_names_lstsq(tmp_path):
    from flowgrad.io.onnx_export import OnnxExportError
    a = fg.placeholder("a", shape=(3, 2))
    x = fg.lstsq(a, np.ones(3)).named("x")
    with pytest.raises(OnnxExportError, match="op 'qr'.*fg.lstsq is built on qr"):
        fg.export_onnx(x, tmp_path / "lstsq.onnx")
