"""Gathers by an index array of any rank on dask (whose indexers must be 1-d): values and
gradients equal the numpy backend's bit for bit -- an Embedding, ``fg.take`` along an
inner axis, a vectorized lookup -- and none of it is computed while the graph is built."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend

DASKS = [pytest.param("dask", id="dask"),
         pytest.param(DaskBackend(chunks=1), id="dask-chunked")]
SHAPES = [(), (5,), (2, 3), (2, 3, 4)]


def _same(got, want, backend="dask"):
    """Of the same dtype and shape; equal bit for bit, the first (a gather) always, the
    rest on one chunk (a sum over many chunks adds in another order: to 1e-12)."""
    assert len(got) == len(want)
    chunked = isinstance(backend, DaskBackend) and backend.chunks != "auto"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(fg.to_numpy(g)), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        if chunked and k:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)
        else:
            assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w).tobytes()


def _indices(shape, high, seed=0):
    idx = np.random.default_rng(seed).integers(0, high, size=shape)
    if idx.size > 1:
        idx.flat[:2] = [high - 1, high - 1]    # the last row, read twice: adjoints add up
    return idx


@pytest.mark.parametrize("backend", DASKS)
@pytest.mark.parametrize("shape", SHAPES)
def test_embedding_and_its_gradient_on_dask_equal_numpy(backend, shape):
    with fg.Graph():
        tok = fg.placeholder("tok", shape, "int64")
        emb = fg.nn.Embedding(7, 3, seed=0)
        y = emb(tok)
        loss = fg.sum(fg.sin(y) * y)
        outs = [y, loss, fg.grad(loss, emb.table)]
        feed = {tok: _indices(shape, 7)}
        want = fg.run(outs, feed, backend="numpy")
        _same(fg.run(outs, feed, backend=backend), want, backend)
    table = emb.table.value
    np.testing.assert_array_equal(want[0], table[feed[tok]])   # independent: numpy's gather
    rows = np.zeros_like(table)       # d/dT sum(sin(T[i]) T[i]) = scatter of sin + T cos
    np.add.at(rows, feed[tok], np.sin(table[feed[tok]]) + table[feed[tok]] *
              np.cos(table[feed[tok]]))
    np.testing.assert_allclose(want[2], rows, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", DASKS)
@pytest.mark.parametrize("shape", SHAPES)
def test_take_on_an_inner_axis_and_its_derivatives_on_dask_equal_numpy(backend, shape):
    """An index node (a dask array on dask), a constant 2-d index, forward mode too."""
    with fg.Graph():
        x = fg.placeholder("x", (2, 6, 3))
        i = fg.placeholder("i", shape, "int64")
        y = fg.take(x, i, axis=1) * fg.take(x, fg.constant(_indices((2, 2), 6, 1)),
                                            axis=1)[0, 0, 0, 0]
        loss = fg.sum(y * y)
        outs = [y, fg.grad(loss, x), fg.jvp(loss, x, fg.ones_like(x))]
        feed = {x: np.random.default_rng(2).normal(size=(2, 6, 3)), i: _indices(shape, 6)}
        _same(fg.run(outs, feed, backend=backend), fg.run(outs, feed, backend="numpy"),
              backend)


@pytest.mark.parametrize("backend", DASKS)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_vectorized_lookup_and_its_gradient_on_dask_equal_numpy(backend, shape):
    with fg.Graph():
        table = fg.placeholder("table", (7, 3))
        j = fg.placeholder("j", shape, "int64")
        one = fg.sum(fg.take(table, j, axis=0) ** 2)
        batch = fg.placeholder("batch", (4,) + shape, "int64")
        ys = fg.vectorize(one, {j: batch})
        outs = [ys, fg.grad(fg.sum(ys), table)]
        feed = {table: np.random.default_rng(3).normal(size=(7, 3)),
                batch: _indices((4,) + shape, 7)}
        want = fg.run(outs, feed, backend="numpy")
        _same(fg.run(outs, feed, backend=backend), want, backend)
    rows = feed[table][feed[batch]]
    np.testing.assert_allclose(want[0], (rows ** 2).sum(axis=tuple(range(1, rows.ndim))),
                               rtol=1e-12)


def test_a_gather_and_its_scatter_add_build_without_computing_on_dask():
    """dask builds the lookup and the gradient's scatter-add as tasks: nothing is
    computed until the caller computes the lazy results."""
    from dask.callbacks import Callback
    computed = []
    with fg.Graph():
        table = fg.placeholder("table", (7, 3))
        i = fg.placeholder("i", (2, 3), "int64")
        loss = fg.sum(fg.take(table, i, axis=0) ** 2)
        outs = [loss, fg.grad(loss, table)]
        feed = {table: np.random.default_rng(4).normal(size=(7, 3)), i: _indices((2, 3), 7)}
        prog = fg.compile(outs, backend=DaskBackend(lazy=True))
        with Callback(start=lambda dsk: computed.append(len(dsk))):
            lazy = prog(feed)
        assert computed == []
        _same([fg.to_numpy(v) for v in lazy], fg.run(outs, feed, backend="numpy"))
