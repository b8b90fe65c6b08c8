"""On the dask backend a failure of dask's own tasks, raised when the outputs are
computed (after every step has only built tasks), is the numpy backend's RunError: same
class, message, node and the user's line, the original exception as ``__cause__``
(Program.finish -> lazy_errors.raise_located). inv and solve of a singular matrix give
numpy's NaN rule on dask too (numpy's kernel per block), and an integer to a negative
integer power is numpy's ValueError, not dask's TypeError."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.engine.lazy_errors import raise_located

pytest.importorskip("dask")

BACKENDS = [pytest.param("dask", id="dask"), pytest.param(DaskBackend(chunks=1), id="chunked")]


def _raised(backend, out, feed, errstate=None):
    with pytest.raises(Exception) as e, np.errstate(**(errstate or {})):
        fg.compile(out, backend=backend)(feed)
    return e.value


def _max_empty():
    v = fg.placeholder("v", (None,))
    return fg.max(v), {v: np.zeros(0)}, None, ValueError


def _div_zero_raising():
    v = fg.placeholder("v", (None,))
    return 1.0 / v, {v: np.zeros(3)}, {"divide": "raise"}, FloatingPointError


def _cholesky_not_pd():
    a = fg.placeholder("a", (2, 2))
    return fg.cholesky(a), {a: np.array([[1.0, 2.0], [2.0, 1.0]])}, None, np.linalg.LinAlgError


def _cholesky_batch_second_bad():
    a = fg.placeholder("a", (None, 2, 2))
    feed = np.stack([np.eye(2), -np.eye(2)])        # the second matrix alone fails
    return fg.cholesky(a) * 2.0, {a: feed}, None, np.linalg.LinAlgError


# dask's own tasks fail: located by running the plan on numpy, numpy's report itself
LOCATED = {"max of empty": _max_empty, "1/0 under errstate raise": _div_zero_raising}
# numpy's kernel per block, guarded: its input lines give declared shapes (as every
# guarded task's report), so the first line is compared
GUARDED = {"cholesky not positive definite": _cholesky_not_pd,
           "cholesky of a batch": _cholesky_batch_second_bad}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(LOCATED) + sorted(GUARDED))
def test_a_dask_task_failure_is_numpys_run_error(backend, case):
    with fg.Graph():
        out, feed, errstate, cls = {**LOCATED, **GUARDED}[case]()
        want = _raised("numpy", out, feed, errstate)
        got = _raised(backend, out, feed, errstate)
    assert isinstance(want, fg.RunError) and isinstance(want, cls)
    assert type(got) is type(want)
    if case in LOCATED:
        assert str(got) == str(want)
    assert str(got).splitlines()[0] == str(want).splitlines()[0]
    assert got.node is want.node and got.node is not None
    assert "test_dask_compute_errors.py:" in str(got).splitlines()[0]    # the user's line
    assert type(got.__cause__) is type(want.__cause__)
    assert got.__cause__ is not want.__cause__          # dask's own exception, chained


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reference_interpreter_reports_the_same(backend):
    with fg.Graph():
        out, feed, _, _ = _max_empty()
        want = _raised("numpy", out, feed)
        with pytest.raises(fg.RunError) as e:
            fg.compile(out, backend=backend, codegen=False)(feed)
    assert type(e.value) is type(want) and str(e.value) == str(want)


def test_an_int_to_a_negative_power_is_numpys_value_error():
    with fg.Graph():
        i = fg.placeholder("i", (3,), "int64")
        out, feed = i ** -1, {i: np.array([1, 2, 3])}
        want = _raised("numpy", out, feed)
        for backend in ("dask", DaskBackend(chunks=1)):
            got = _raised(backend, out, feed)
            assert type(got) is type(want) and str(got) == str(want)
            assert "Integers to negative integer powers are not allowed" in str(got)
            assert isinstance(got, ValueError) and got.node is want.node
        # the exponent 0, the boundary, is computed as numpy does
        z = i ** 0
        assert np.array_equal(fg.compile(z, backend="dask")(feed), np.ones(3, np.int64))
        assert fg.compile(z, backend="dask")(feed).dtype == np.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_inv_of_a_singular_matrix_is_nan_as_on_numpy(backend):
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(4, 3, 3))
    batch[2] = 0.0                                  # exactly singular
    batch[1] = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]]   # rank 2, exactly
    with fg.Graph():
        a = fg.placeholder("a", (None, 3, 3))
        m = fg.placeholder("m", (2, 2))
        single = fg.compile(fg.inv(m), backend=backend)(m=np.zeros((2, 2)))
        got = fg.compile(fg.inv(a), backend=backend)(a=batch)
    assert np.isnan(single).all() and single.shape == (2, 2)
    want = np.stack([np.linalg.inv(x) if k in (0, 3) else np.full((3, 3), np.nan)
                     for k, x in enumerate(batch)])
    with pytest.raises(np.linalg.LinAlgError):      # numpy's inv refuses it, too
        np.linalg.inv(batch[1])
    assert np.array_equal(got, want, equal_nan=True)   # numpy's kernel, bit for bit


@pytest.mark.parametrize("backend", BACKENDS)
def test_solve_with_a_singular_matrix_is_nan_as_on_numpy(backend):
    rng = np.random.default_rng(4)
    batch, rhs, vec = rng.normal(size=(3, 3, 3)), rng.normal(size=(3, 2)), rng.normal(size=3)
    batch[1] = 0.0
    with fg.Graph():
        a = fg.placeholder("a", (None, 3, 3))
        b = fg.placeholder("b", (3, 2))
        v = fg.placeholder("v", (3,))
        outs = [fg.solve(a, b), fg.solve(a, v)]
        got = fg.compile(outs, backend=backend)(a=batch, b=rhs, v=vec)
    for k, g in enumerate(got):
        r = rhs if k == 0 else vec
        want = np.stack([np.linalg.solve(x, r) if j != 1 else
                         np.full(np.linalg.solve(batch[0], r).shape, np.nan)
                         for j, x in enumerate(batch)])
        assert g.shape == want.shape and np.isnan(g[1]).all()
        np.testing.assert_allclose(g, want, rtol=1e-12)    # (NaN where want is NaN)


def test_a_failure_numpy_does_not_reproduce_names_the_outputs():
    """Where the numpy backend computes the outputs without failing, no step is named:
    the RunError names the outputs and the backend, the original chained."""
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        prog = fg.compile(fg.exp(x), backend="dask")
        cause = OSError("worker lost")
        with pytest.raises(fg.RunError) as e:
            raise_located(prog, cause, ({x: np.zeros(2)},), {})
    assert e.value.node is None and e.value.__cause__ is cause
    assert isinstance(e.value, OSError)
    head = str(e.value).splitlines()[0]
    assert "'exp_1' (exp)" in head and "dask backend" in head and "worker lost" in head


def test_a_lazy_cholesky_failure_is_the_run_error_in_the_users_compute():
    """numpy's cholesky runs as a guarded task: a lazy=True output that the user computes
    with dask.compute fails with the node's RunError too."""
    import dask
    with fg.Graph():
        out, feed, _, _ = _cholesky_not_pd()
        want = _raised("numpy", out, feed)
        lazy = fg.compile(out, backend=DaskBackend(lazy=True))(feed)
        with pytest.raises(fg.RunError) as e:
            dask.compute(lazy)
    assert type(e.value) is type(want) and e.value.node is want.node
    assert str(e.value).splitlines()[0] == str(want).splitlines()[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cholesky_of_a_batch_is_numpys(backend):
    rng = np.random.default_rng(5)
    m = rng.normal(size=(3, 4, 4))
    spd = m @ np.swapaxes(m, -1, -2) + 4 * np.eye(4)
    with fg.Graph():
        a = fg.placeholder("a", (None, 4, 4))
        got = fg.compile(fg.cholesky(a), backend=backend)(a=spd)
    assert np.array_equal(got, np.linalg.cholesky(spd))


def test_fed_dask_arrays_are_read_for_the_numpy_rerun_up_to_the_bound(monkeypatch):
    """A fed dask array is read into memory to find the step only up to RERUN_BYTES: at
    the bound the step is named, one byte below it the outputs are. (A failure of a task
    of dask's own: 1/0 under errstate "raise"; the max of an empty array is refused by
    the max step itself now, as numpy's, without a rerun.)"""
    import dask.array as da
    from flowgrad.engine import lazy_errors
    with fg.Graph():
        v = fg.placeholder("v", (None,))
        prog = fg.compile(fg.sum(1.0 / v), backend="dask")
        empty = da.zeros(3, chunks=1)              # 24 bytes
        extra = da.ones(4, chunks=2)                # 32 bytes: 56 with v, what the bound counts
        w = fg.placeholder("w", (4,))
        prog2 = fg.compile([fg.sum(1.0 / v), fg.sum(w)], backend="dask")
        monkeypatch.setattr(lazy_errors, "RERUN_BYTES", 56)
        with pytest.raises(fg.RunError) as at, np.errstate(divide="raise"):
            prog2({v: empty, w: extra})
        monkeypatch.setattr(lazy_errors, "RERUN_BYTES", 55)
        with pytest.raises(fg.RunError) as over, np.errstate(divide="raise"):
            prog2(v=empty, w=extra)
        with pytest.raises(fg.RunError) as numpy_feed, np.errstate(divide="raise"):
            prog(v=np.zeros(3))                      # numpy feeds are not counted
    assert at.value.node is not None and at.value.node.op.name == "div"
    assert over.value.node is None and "dask backend" in str(over.value).splitlines()[0]
    assert isinstance(over.value, FloatingPointError)
    assert isinstance(over.value.__cause__, FloatingPointError)
    assert numpy_feed.value.node is not None


def test_linalg_on_a_batch_of_unknown_length_is_numpys():
    """A fed dask array whose batch length dask does not know yet (NaN): solve's task
    runs when built and measures; inv and cholesky map their blocks."""
    import dask.array as da
    rng = np.random.default_rng(6)
    m = rng.normal(size=(5, 3, 3))
    m[3] = 0.0
    spd = m @ np.swapaxes(m, -1, -2) + 3 * np.eye(3)
    rhs = rng.normal(size=(3, 2))

    def unknown(x):
        d = da.from_array(x, chunks=2)
        return d[d[:, 0, 0] == d[:, 0, 0]]        # every row kept, the length unknown

    assert np.isnan(unknown(m).shape[0])
    with fg.Graph():
        a = fg.placeholder("a", (None, 3, 3))
        s = fg.placeholder("s", (None, 3, 3))
        b = fg.placeholder("b", (3, 2))
        got = fg.compile([fg.solve(a, b), fg.inv(a), fg.cholesky(s)],
                         backend="dask")(a=unknown(m), b=rhs, s=unknown(spd))
    assert np.isnan(got[0][3]).all() and np.isnan(got[1][3]).all()
    keep = [0, 1, 2, 4]
    np.testing.assert_allclose(got[0][keep], np.linalg.inv(m[keep]) @ rhs, rtol=1e-10)
    assert np.array_equal(got[1][keep], np.linalg.inv(m[keep]))
    assert np.array_equal(got[2], np.linalg.cholesky(spd))
