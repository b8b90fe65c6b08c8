"""A failure inside a task that dask computes lazily (a loop run as one task, a check
made block by block, a scatter-add on the host) is the numpy backend's RunError: the
same class (also the original's), the same message naming the node and the user's
line, the original as ``__cause__`` -- never the bare exception raised at compute time."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.engine.lazy_errors import guard

DASKS = [pytest.param("dask", id="dask"),
         pytest.param(DaskBackend(chunks=1), id="dask-chunked")]


def _failure(backend, outs, feed):
    """The exception a run raises (results computed, whatever the backend's mode)."""
    with pytest.raises(Exception) as e:
        got = fg.compile(outs, backend=backend)(feed)
        [fg.to_numpy(v) for v in (got if isinstance(got, list) else [got])]
    return e.value


def _head(exc):
    """The message's first line: the node, its line, the original error (the input
    lines below it summarize values numpy holds, dask only declares)."""
    return str(exc).splitlines()[0]


@pytest.mark.parametrize("backend", DASKS + [pytest.param(DaskBackend(lazy=True),
                                                          id="dask-lazy")])
def test_loop_limit_on_dask_is_numpys_run_error_naming_the_loop(backend):
    with fg.Graph():
        x = fg.placeholder("x")
        out = fg.while_loop(lambda c: c < 1e9, lambda c: c * 2.0, x, max_iters=5)
        want = _failure("numpy", out, {x: 1.0})
        got = _failure(backend, out, {x: 1.0})
    assert type(got) is type(want)
    assert isinstance(got, fg.RunError) and isinstance(got, fg.LoopLimitError)
    assert isinstance(got.__cause__, fg.LoopLimitError)
    assert got.node is not None and got.node.name == want.node.name
    # the loop task's inputs are the node's: the whole report is numpy's, word for word
    assert str(got) == str(want)
    assert str(got).startswith(f"'{want.node.name}' (loop), built at ")
    assert "test_dask_lazy_errors.py:" in _head(got) and "max_iters=5" in _head(got)


@pytest.mark.parametrize("backend", DASKS)
def test_loop_limit_in_a_derivative_on_dask_is_numpys_run_error(backend):
    with fg.Graph():
        x = fg.placeholder("x", ())
        y = fg.while_loop(lambda v: v < 10.0, lambda v: v * 1.5, x, max_iters=3)
        outs = [y, fg.grad(y, x)]
        want = _failure("numpy", outs, {x: 1.0})
        got = _failure(backend, outs, {x: 1.0})
    assert type(got) is type(want) and isinstance(got, fg.LoopLimitError)
    assert str(got) == str(want)


@pytest.mark.parametrize("backend", DASKS)
def test_one_hot_label_refused_on_dask_names_the_node(backend):
    """one_hot checks its labels block by block on dask: the refusal is numpy's RunError."""
    with fg.Graph():
        lab = fg.placeholder("lab", (3,), "int64")
        out = fg.one_hot(lab, 4)
        feed = {lab: np.array([0, 1, 4])}       # 4: the first label outside [0, 4)
        want = _failure("numpy", out, feed)
        got = _failure(backend, out, feed)
        assert fg.compile(out, backend=backend)({lab: np.array([0, 3, 1])}).shape == (3, 4)
    assert type(got) is type(want) and isinstance(got, fg.FeedError)
    assert isinstance(got, fg.RunError) and got.node.name == want.node.name
    # the range named is the failing block's on dask (one chunk here: the whole array's)
    cut = "got values from"
    assert _head(got).split(cut)[0] == _head(want).split(cut)[0]
    assert _head(got).startswith("'one_hot_1' (one_hot), built at ")
    assert "FeedError: one_hot: class labels must lie in [0, 4)" in _head(got)


@pytest.mark.parametrize("backend", DASKS)
@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
@pytest.mark.parametrize("bad", [3, -4])
def test_an_index_node_out_of_range_on_dask_is_numpys_index_error(backend, shape, bad):
    """dask's gather reads an index outside the axis as another row without a word (or
    fails with its own words); numpy's IndexError naming the node instead."""
    with fg.Graph():
        t = fg.placeholder("t", (7, 3))
        i = fg.placeholder("i", shape, "int64")
        y = fg.take(t, i, axis=1)
        index = np.full(shape, 1)
        index.flat[-1] = bad                     # the first bad value (valid: -3 … 2)
        feed = {t: np.arange(21.0).reshape(7, 3), i: index}
        want = _failure("numpy", y, feed)
        got = _failure(backend, y, feed)
        index.flat[-1] = bad - 1 if bad > 0 else bad + 1    # the edge itself: values
        np.testing.assert_array_equal(fg.compile(y, backend=backend)(feed),
                                      feed[t][:, index])
    assert type(got) is type(want) and isinstance(got, IndexError)
    assert _head(got) == _head(want)
    assert f"IndexError: index {bad} is out of bounds for axis 1 with size 3" in _head(got)


@pytest.mark.parametrize("backend", DASKS)
def test_scatter_add_out_of_range_on_dask_names_the_adjoint_node(backend):
    """The gradient's scatter-add runs as one host task on dask: its IndexError is
    numpy's RunError naming the adjoint node (the forward gather fails first on both)."""
    with fg.Graph():
        t = fg.placeholder("t", (7, 3))
        i = fg.placeholder("i", (2, 2), "int64")
        g = fg.grad(fg.sum(fg.take(t, i, axis=0)), [t])[0]
        feed = {t: np.ones((7, 3)), i: np.array([[0, 1], [2, 7]])}
        want = _failure("numpy", g, feed)
        got = _failure(backend, g, feed)
    assert type(got) is type(want) and isinstance(got, IndexError)
    assert _head(got) == _head(want) and "(scatter_add)" in _head(got)


def test_guard_outside_a_step_is_the_function_itself():
    assert guard(len) is len                   # no step is being built: nothing to name


@pytest.mark.parametrize("backend", DASKS)
def test_a_lazy_failure_computed_by_a_later_kernel_names_its_own_node(backend):
    """An Embedding's index check reads what a failed one_hot made: the one_hot
    refusal is still one_hot's RunError, as on numpy, never reported as the index
    check's own failure."""
    with fg.Graph():
        lab = fg.placeholder("lab", (3,), "int64")
        y = fg.nn.Embedding(4, 2, seed=0)(fg.argmax(fg.one_hot(lab, 4), axis=-1))
        feed = {lab: np.array([0, 1, 4])}
        want = _failure("numpy", y, feed)
        got = _failure(backend, y, feed)
    assert type(got) is type(want) and isinstance(got, fg.FeedError)
    assert got.node.name == want.node.name == "one_hot_1"
    assert _head(got).split("got values")[0] == _head(want).split("got values")[0]


class _Counted:
    """An integer array that counts the reads dask makes of it."""

    def __init__(self, values):
        self.values, self.reads = np.asarray(values), 0
        self.shape, self.dtype, self.ndim = self.values.shape, self.values.dtype, self.values.ndim

    def __getitem__(self, key):
        self.reads += 1
        return self.values[key]


@pytest.mark.parametrize("chunks", [(2, 2), (1, 4), (2, 4)])
@pytest.mark.parametrize("values", [[[0, 1, 2, 7], [9, 0, 1, 2]],      # 7 at (0, 3) first
                                    [[0, 1, 2, 3], [3, -1, 4, 0]],     # -1 at (1, 1)
                                    [[0, 1, 2, 3], [3, 0, 1, 4]]])     # 4, the last entry
def test_embedding_index_check_on_dask_is_lazy_and_names_the_first_bad_position(chunks,
                                                                                values):
    """Nothing is read while the step runs; computing the output raises numpy's RunError
    for the index check, naming the first bad entry in C order -- also where a block
    that holds a later bad entry comes first in block order ((2, 2): the left one)."""
    import dask.array as da
    source = _Counted(values)
    with fg.Graph():
        tok = fg.placeholder("tok", (2, 4), "int64")
        y = fg.nn.Embedding(4, 3, seed=0)(tok)
        want = _failure("numpy", y, {tok: source.values})
        fed = da.from_array(source, chunks=chunks)
        source.reads = 0                 # from_array reads an empty slice, for its meta
        lazy = fg.compile(y, backend=DaskBackend(lazy=True))({tok: fed})
        assert source.reads == 0                           # no early compute
        with pytest.raises(Exception) as e:
            fg.to_numpy(lazy)
    got = e.value
    assert source.reads > 0
    assert type(got) is type(want) and isinstance(got, IndexError)
    assert got.node.name == want.node.name and got.node.op.name == "embedding_index"
    assert _head(got) == _head(want)
    assert isinstance(got.__cause__, IndexError) and str(got.__cause__) == str(want.__cause__)


@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3)])
def test_embedding_on_dask_with_indices_in_range_equals_numpy(shape):
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) % 4
    if idx.size:
        idx.flat[-1] = 3                                   # the last row: the edge itself
    with fg.Graph():
        tok = fg.placeholder("tok", shape, "int64")
        y = fg.nn.Embedding(4, 3, seed=0)(tok)
        want = fg.compile(y)({tok: idx})
        got = fg.compile(y, backend=DaskBackend(chunks=1))({tok: idx})
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", ["uint8", "uint64"])
def test_embedding_index_check_on_dask_keeps_an_unsigned_value_whole(dtype):
    big = np.iinfo(dtype).max                  # past int64 for uint64: never wrapped
    idx = np.array([[0, 3], [big, 4]], dtype)
    with fg.Graph():
        tok = fg.placeholder("tok", (2, 2), dtype)
        y = fg.nn.Embedding(4, 3, seed=0)(tok)
        want = _failure("numpy", y, {tok: idx})
        got = _failure(DaskBackend(chunks=1), y, {tok: idx})
    assert type(got) is type(want) and _head(got) == _head(want)
    assert f"index {big} at position (1, 0)" in _head(got)
