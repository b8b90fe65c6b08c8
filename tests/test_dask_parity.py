"""The dask backend against numpy itself on the inputs where dask.array's own kernels
differ from numpy's: reductions of arrays with no entries, reshapes across chunks, and
the like. Each expectation is numpy's closed form (np.max, np.reshape ...) on the same
array, at several chunkings (one chunk, many uneven chunks, chunks of one)."""
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend

da = pytest.importorskip("dask.array")

CHUNKINGS = [pytest.param(DaskBackend(), id="one-chunk"),
             pytest.param(DaskBackend(chunks=1), id="chunks-of-1"),
             pytest.param(DaskBackend(chunks=2), id="chunks-of-2")]


def _run(out, backend, feed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # dask's PerformanceWarning, numpy's mean of []
        return fg.compile(out, backend=backend)(feed)


# -- max (and min, logsumexp, softmax, softmax_cross_entropy) of arrays with no entries --

@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("shape, axis", [((0, 3), 1), ((2, 0, 3), 0), ((2, 0, 3), (0, 2)),
                                         ((0, 3), (1,))])
def test_max_of_an_empty_array_along_full_axes_is_empty(backend, shape, axis):
    # numpy: the max along axes of nonzero length of an array with no entries is empty,
    # of the shape those axes leave (dask failed: "zero-size array to reduction")
    x = np.zeros(shape)
    want = np.max(x, axis=axis)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None,) * len(shape))
        got = _run([fg.max(p, axis=axis), fg.min(p, axis=axis),
                    fg.logsumexp(p, axis=axis)], backend, {p: x})
    for g in got:
        assert np.shape(g) == want.shape and np.asarray(g).dtype == np.float64


@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("shape, axis", [((0, 3), 0), ((2, 0, 3), 1), ((2, 0, 3), (1, 2)),
                                         ((0, 3), None)])
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_along_an_empty_axis_is_numpys_run_error(backend, shape, axis, reduce):
    # numpy refuses a max over an axis of length 0; dask returned an empty array of a
    # shape other than the declared one ((0,) for a declared (3,)), silently
    x = np.zeros(shape)
    with pytest.raises(ValueError) as np_err:
        np.max(x, axis=axis)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None,) * len(shape))
        out = getattr(fg, reduce)(p, axis=axis)
        with pytest.raises(fg.RunError) as e:
            _run(out, backend, {p: x})
    assert e.value.node is not None and e.value.node.op.name == "max"
    assert type(e.value.__cause__) is ValueError
    assert str(e.value.__cause__) == str(np_err.value)


@pytest.mark.parametrize("backend", CHUNKINGS)
def test_softmax_and_cross_entropy_of_no_rows(backend):
    z0, y0 = np.zeros((0, 4)), np.zeros(0, np.int64)
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 4))
        y = fg.placeholder("y", shape=(None,), dtype="int64")
        outs = [fg.softmax(z), fg.softmax_cross_entropy(z, y, reduction="none"),
                fg.softmax_cross_entropy(z, y, reduction="sum"),
                fg.grad(fg.sum(fg.max(z, axis=1)), z)]
        got = _run(outs, backend, {z: z0, y: y0})
    assert [np.shape(g) for g in got] == [(0, 4), (0,), (), (0, 4)]
    assert float(got[2]) == 0.0          # the sum of no losses


# -- reshape that neither merges nor splits axes ------------------------------------------

FEED_CHUNKS = [None, (1, 1, 1), (1, 2, 3), (2, 3, 4)]     # None: the backend's own


@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("chunks", FEED_CHUNKS)
@pytest.mark.parametrize("shape", [(3, 2, 4), (2, 4, 3), (4, 6), (2, 2, 6), (3, -1, 2),
                                   (6, 4), (24,), (1, 2, 1, 12)])
def test_reshape_of_a_chunked_array_is_numpys(backend, chunks, shape):
    # dask reshapes only by merging or splitting axes: (2, 3, 4) -> (3, 2, 4) raised
    # NotImplementedError (a RunError) on dask where numpy reshapes
    a = np.arange(24.0).reshape(2, 3, 4) - 7.5
    feed = a if chunks is None else da.from_array(a, chunks=chunks)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 3, 4))
        out = fg.reshape(p, shape)
        weights = np.arange(24.0).reshape(a.reshape(shape).shape)
        got, grad = _run([out, fg.grad(fg.sum(out * weights), p)], backend, {p: feed})
    np.testing.assert_array_equal(got, a.reshape(shape))
    np.testing.assert_array_equal(grad, weights.reshape(a.shape))
    assert got.dtype == np.float64


@pytest.mark.parametrize("backend", CHUNKINGS)
def test_reshape_with_two_run_time_lengths_and_its_gradient(backend):
    # two None lengths: the gradient reshapes back with reshape_like
    a = np.arange(12.0).reshape(3, 4)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, None))
        out = fg.reshape(p, (4, 3))
        w = np.arange(12.0).reshape(4, 3)
        got, grad = _run([out, fg.grad(fg.sum(out * w), p)], backend,
                         {p: da.from_array(a, chunks=(2, 3))})
    np.testing.assert_array_equal(got, a.reshape(4, 3))
    np.testing.assert_array_equal(grad, w.reshape(3, 4))


# -- indexing dask.array does not do as numpy ---------------------------------------------

INDEXES = {
    "int then array (separated)": (1, slice(None), [0, 2]),      # dask: shape (3, 2), silently
    "array then int": ([1, 0], slice(None), 2),
    "two arrays": ([0, 1], [2, 1]),                              # dask: NotImplementedError
    "two separated arrays": ([0, 1], slice(None), [1, 0]),
    # a mask over an axis of run-time length is refused when built (it cannot be checked
    # against the axis then): its positions, as the refusal says, index the same entries
    "2-d mask's positions": np.nonzero(np.array([[True, False, True], [False, False, True]])),
    "array, newaxis, int": (slice(1, None), [0, 2], None, 1),    # dask: AssertionError
    "newaxis then array": (None, [1, 0]),
    "negative int, ellipsis, 2-d array": (-1, Ellipsis, [[-1]]),
}


@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("case", sorted(INDEXES))
def test_advanced_indexing_is_numpys(backend, case):
    key = INDEXES[case]
    a = np.arange(24.0).reshape(2, 3, 4) * 0.5 - 3.0
    want = a[key]
    w = np.arange(want.size, dtype=float).reshape(want.shape) + 1.0
    want_grad = np.zeros_like(a)
    np.add.at(want_grad, tuple(np.asarray(k) if isinstance(k, list) else k for k in key), w)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 3, 4))
        out = p[key]
        got, grad = _run([out, fg.grad(fg.sum(out * w), p)], backend,
                         {p: da.from_array(a, chunks=(1, 2, 3))})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("backend", CHUNKINGS)
def test_two_index_arrays_out_of_range_is_numpys_index_error(backend):
    # a row index past the fed length (None at build): numpy's IndexError, at the step
    a = np.arange(24.0).reshape(2, 3, 4)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 3, 4))
        i = fg.placeholder("i", shape=(None,), dtype="int64")
        for out, bad in [(p[[0, 2], :, [1, 0]], 2), (p[i, :, i], 2)]:
            with pytest.raises(IndexError) as np_err:
                a[[0, bad], :, [1, 0]]
            with pytest.raises(fg.RunError) as e:
                _run(out, backend, {p: a, i: np.array([0, bad])})
            assert e.value.node is out and type(e.value.__cause__) is IndexError
            assert str(e.value.__cause__) == str(np_err.value)


# -- the mean of no entries under np.errstate ------------------------------------------

@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("dtype, shape, axis", [("float64", (0, 3), None),
                                                ("float64", (0, 3), 0),
                                                ("float32", (0, 2), 0),
                                                ("int32", (2, 0), 1)])
def test_mean_of_no_entries_under_errstate_raise_is_numpys_error(backend, dtype, shape, axis):
    # numpy's mean of no entries is 0/0: FloatingPointError under invalid="raise";
    # dask divides under errstate "ignore" and returned NaN silently
    x = np.zeros(shape, dtype)
    with pytest.raises(FloatingPointError) as np_err, np.errstate(invalid="raise"):
        np.mean(x, axis=axis)
    with np.errstate(invalid="ignore"):
        want = np.mean(x, axis=axis)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, None), dtype=dtype)
        out = fg.mean(p, axis=axis)
        with pytest.raises(fg.RunError) as e, np.errstate(invalid="raise"):
            _run(out, backend, {p: x})
        with np.errstate(invalid="ignore"):
            got = _run(out, backend, {p: x})
    assert e.value.node is out and type(e.value.__cause__) is FloatingPointError
    assert str(e.value.__cause__) == str(np_err.value)
    assert got.shape == want.shape and got.dtype == want.dtype and np.isnan(got).all()


# -- what the dask backend's docstring promises of values --------------------------------

ELEMENTWISE = {
    "add": lambda a, b: a + b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "exp": lambda a, b: fg.exp(a), "log1p": lambda a, b: fg.log1p(fg.abs(a)),
    "tanh": lambda a, b: fg.tanh(a), "sigmoid": lambda a, b: fg.sigmoid(a),
    "softplus": lambda a, b: fg.softplus(a), "erf": lambda a, b: fg.erf(a),
    "gelu": lambda a, b: fg.gelu(a), "maximum": lambda a, b: fg.maximum(a, b),
    "where": lambda a, b: fg.where(a > b, a, b), "clip": lambda a, b: fg.clip(a, -0.5, 0.5),
    "pow": lambda a, b: fg.abs(a) ** b, "elu": lambda a, b: fg.elu(a),
}


@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_steps_are_numpys_bit_for_bit(backend, dtype, name):
    rng = np.random.default_rng(11)
    a, b = (rng.normal(size=(7, 3)).astype(dtype) for _ in range(2))
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 3), dtype=dtype)
        q = fg.placeholder("q", shape=(None, 3), dtype=dtype)
        out = ELEMENTWISE[name](p, q)
        want = fg.compile(out, backend="numpy", codegen=False)({p: a, q: b})
        got = _run(out, backend, {p: da.from_array(a, chunks=(2, 1)), q: b})
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", CHUNKINGS)
def test_a_chunked_sum_is_within_the_rounding_of_another_order(backend):
    x = np.random.default_rng(12).normal(size=(1001,)).astype(np.float32)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None,), dtype="float32")
        got = _run(fg.sum(p), backend, {p: x})
    exact = np.sum(x.astype(np.float64))
    assert got.dtype == np.float32
    assert abs(float(got) - exact) <= x.size * np.finfo(np.float32).eps * np.abs(x).sum()


# -- feeds whose lengths dask does not know yet (NaN: rows a mask kept) --------------------

def _unknown_rows(a):
    d = da.from_array(a, chunks=1)
    return d[d[:, 0, 0] == d[:, 0, 0]]            # every row kept, the length NaN


@pytest.mark.parametrize("case", ["reshape merge", "reshape other", "two arrays",
                                  "int and array", "arrays on inner axes"])
def test_reshape_and_indexing_of_rows_of_unknown_length(case):
    a = np.arange(24.0).reshape(2, 3, 4) - 5.0
    build, want = {
        "reshape merge": (lambda p: fg.reshape(p, (-1, 4)), a.reshape(-1, 4)),
        "reshape other": (lambda p: fg.reshape(p, (3, -1)), a.reshape(3, -1)),
        "two arrays": (lambda p: p[[0, 1], :, [1, 0]], a[[0, 1], :, [1, 0]]),
        "int and array": (lambda p: p[1, :, [0, 2]], a[1, :, [0, 2]]),
        "arrays on inner axes": (lambda p: p[:, [0, 2], [1, 3]], a[:, [0, 2], [1, 3]]),
    }[case]
    assert np.isnan(_unknown_rows(a).shape[0])
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 3, 4))
        got = _run(build(p), "dask", {p: _unknown_rows(a)})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# -- a bad index or label: numpy's report for the whole array, every call ---------------

BAD = np.array([9, 1, 2, 5, 1, 7, 3, 4])            # numpy names 9, the first in C order


def _bad_index_programs():
    f = fg.placeholder("f", shape=(None, 3))
    i = fg.placeholder("i", shape=(None,), dtype="int64")
    return {f: np.zeros((3, 3)), i: BAD}, {
        "getitem": (f[i], lambda: np.zeros((3, 3))[BAD]),
        "take": (fg.take(f, i, axis=0), lambda: np.take(np.zeros((3, 3)), BAD, axis=0,
                                                        mode="raise")),
        "two index nodes": (f[i, i], lambda: np.zeros((3, 3))[BAD, BAD]),
    }


@pytest.mark.parametrize("backend", CHUNKINGS)
@pytest.mark.parametrize("case", ["getitem", "take", "two index nodes"])
def test_an_index_out_of_range_names_numpys_first_bad_entry(backend, case):
    # checked block by block, the report named whichever block failed first (index 4 or
    # 3, on axis 0 or 1), varying from call to call, where numpy names 9 on axis 0
    with fg.Graph():
        feed, cases = _bad_index_programs()
        out, reference = cases[case]
        with pytest.raises(IndexError) as np_err:
            reference()
        prog = fg.compile(out, backend=backend)
        for _ in range(8):
            with pytest.raises(fg.RunError) as e:
                prog(feed)
            assert e.value.node is out and type(e.value.__cause__) is IndexError
            assert str(e.value.__cause__) == str(np_err.value)


@pytest.mark.parametrize("backend", CHUNKINGS)
def test_one_hot_refusal_gives_the_range_of_all_labels(backend):
    # numpy: "got values from 1 to 9" (all the labels); block by block: "from 4 to 4"
    with fg.Graph():
        i = fg.placeholder("i", shape=(None,), dtype="int64")
        out = fg.one_hot(i, 3)
        with pytest.raises(fg.RunError) as e:
            _run(out, backend, {i: BAD})
    assert e.value.node is out and isinstance(e.value.__cause__, fg.FeedError)
    assert f"got values from {BAD.min()} to {BAD.max()}" in str(e.value.__cause__)
