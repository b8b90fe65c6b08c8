"""fg.argmax, fg.one_hot and fg.metrics.accuracy against numpy."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_argmax_matches_numpy(rng):
    A = rng.normal(size=(4, 5, 3))
    A[0, 0, :] = 1.0                                        # a tie: the first index wins
    with fg.Graph():
        a = fg.placeholder("a", shape=(None, 5, 3))
        for axis in (0, 1, 2, -1, -2):
            out = fg.argmax(a, axis=axis)
            assert out.dtype == np.int64
            np.testing.assert_array_equal(fg.run(out, {a: A}), np.argmax(A, axis=axis))
            kept = fg.argmax(a, axis=axis, keepdims=True)
            np.testing.assert_array_equal(fg.run(kept, {a: A}),
                                          np.argmax(A, axis=axis, keepdims=True))
        assert fg.argmax(a, axis=1).shape == (None, 3)
        assert fg.argmax(a, axis=0, keepdims=True).shape == (1, 5, 3)
        assert fg.run(fg.argmax(a)[0, 0], {a: A}) == 0
        with pytest.raises(fg.ShapeError, match="out of range"):
            fg.argmax(a, axis=3)
        with pytest.raises(fg.ShapeError, match="one int"):
            fg.argmax(a, axis=(0, 1))
        with pytest.raises(fg.ShapeError, match="0-d"):
            fg.argmax(fg.placeholder("s", shape=()))


def test_one_hot_matches_numpy_and_checks_labels():
    labels = np.array([[0, 2], [1, 1], [3, 0]])
    with fg.Graph():
        t = fg.placeholder("t", shape=(None, 2), dtype="int64")
        h = fg.one_hot(t, 4)
        assert h.shape == (None, 2, 4) and h.dtype == np.float64
        np.testing.assert_array_equal(fg.run(h, {t: labels}), np.eye(4)[labels])
        h0 = fg.one_hot(t, 4, axis=0, dtype="float32")
        assert h0.shape == (4, None, 2) and h0.dtype == np.float32
        np.testing.assert_array_equal(fg.run(h0, {t: labels}),
                                      np.moveaxis(np.eye(4)[labels], -1, 0))
        with pytest.raises(fg.FeedError, match=r"\[0, 4\).*from 0 to 4"):
            fg.run(h, {t: np.array([[0, 4]])})
        with pytest.raises(fg.FeedError, match="from -1"):
            fg.run(h, {t: np.array([[-1, 0]])})
        with pytest.raises(fg.ShapeError, match="integers"):
            fg.one_hot(fg.placeholder("f", shape=(3,)), 4)
        with pytest.raises(fg.ShapeError, match="depth"):
            fg.one_hot(t, 0)


def test_argmax_and_one_hot_have_zero_derivatives(rng):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 4))
        k = fg.argmax(x * x, axis=1)
        s = fg.sum(fg.one_hot(k, 4) * x)              # picks x at the argmax: ∂s/∂x = the mask
        X = rng.normal(size=(3, 4))
        gx = fg.run(fg.grad(s, x), {x: X})
        np.testing.assert_array_equal(gx, np.eye(4)[np.argmax(X * X, axis=1)])
        tx = fg.run(fg.jvp(s, x, np.ones((3, 4))), {x: X})
        assert tx == pytest.approx(3.0)
        fg.check_grads(s, [x], feed={x: X}, modes=("rev", "fwd"), order=2)


def test_one_hot_and_argmax_on_dask():
    pytest.importorskip("dask.array")
    from flowgrad.backends.dask_backend import DaskBackend
    with fg.Graph():
        t = fg.placeholder("t", shape=(None,), dtype="int64")
        z = fg.placeholder("z", shape=(None, 3))
        prog = fg.compile([fg.one_hot(t, 3), fg.argmax(z), fg.metrics.accuracy(z, t)],
                          backend=DaskBackend(chunks=2))
        Z = np.array([[0.0, 1, 2], [3, 1, 0], [0, 5, 1], [1, 1, 4], [2, 0, 0]])
        T = np.array([2, 0, 0, 2, 1])
        h, k, acc = prog(t=T, z=Z)
        np.testing.assert_array_equal(h, np.eye(3)[T])
        np.testing.assert_array_equal(k, Z.argmax(1))
        assert acc == pytest.approx(0.6)
        with pytest.raises(fg.FeedError, match=r"\[0, 3\)"):
            prog(t=np.array([0, 1, 3, 0, 0]), z=Z)


def test_accuracy_against_numpy(rng):
    Z = rng.normal(size=(50, 4))
    T = rng.integers(0, 4, size=50)
    want = np.mean(Z.argmax(1) == T)
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 4))
        ti = fg.placeholder("ti", shape=(None,), dtype="int64")
        th = fg.placeholder("th", shape=(None, 4))
        a_idx, a_hot = fg.metrics.accuracy(z, ti), fg.metrics.accuracy(z, th)
        assert a_idx.shape == () and a_idx.dtype == np.float64
        assert fg.run(a_idx, {z: Z, ti: T}) == pytest.approx(want, abs=1e-15)
        assert fg.run(a_hot, {z: Z, th: np.eye(4)[T]}) == pytest.approx(want, abs=1e-15)
        # classes along axis 0
        zt = fg.placeholder("zt", shape=(4, None))
        assert fg.run(fg.metrics.accuracy(zt, ti, axis=0), {zt: Z.T, ti: T}) == \
            pytest.approx(want, abs=1e-15)
        with pytest.raises(fg.ShapeError, match="without the class axis"):
            fg.metrics.accuracy(z, fg.placeholder("bad", shape=(None, 2), dtype="int64"))
        with pytest.raises(fg.ShapeError, match="one-hot"):
            fg.metrics.accuracy(z, fg.placeholder("bad2", shape=(None, 3)))


def test_binary_accuracy(rng):
    s = rng.normal(size=30)
    y = rng.integers(0, 2, size=30)
    want = np.mean((s > 0) == (y == 1))
    with fg.Graph():
        z = fg.placeholder("z", shape=(None,))
        t = fg.placeholder("t", shape=(None,))
        assert fg.run(fg.metrics.accuracy(z, t), {z: s, t: y.astype(float)}) == \
            pytest.approx(want, abs=1e-15)
        z1 = fg.placeholder("z1", shape=(None, 1))
        tb = fg.placeholder("tb", shape=(None,), dtype="bool")
        assert fg.run(fg.metrics.accuracy(z1, tb), {z1: s[:, None], tb: y == 1}) == \
            pytest.approx(want, abs=1e-15)
