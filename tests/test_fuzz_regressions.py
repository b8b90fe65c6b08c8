"""Bugs the fuzzer (tests/test_fuzz.py) found, one regression test each: the op accepted
operands it cannot take and failed later with a raw Python/numpy error, or silently did
something else."""
import numpy as np
import pytest

import flowgrad as fg


def test_logsumexp_of_an_empty_axis_is_refused_when_built():
    # 1.0: built fine, then numpy's "zero-size array to reduction operation maximum"
    x = fg.placeholder("x", shape=(0, 2))
    with pytest.raises(fg.ShapeError, match="logsumexp.*zero-size axis"):
        fg.logsumexp(x, axis=0)
    with pytest.raises(fg.ShapeError, match="zero-size axis"):
        fg.log_softmax(x, axis=0)
    assert fg.logsumexp(x, axis=1).shape == (0,)      # reducing the other axis is fine


def test_concatenate_of_zero_dimensional_operands_is_a_shape_error():
    # 1.0: ZeroDivisionError (axis % 0)
    a, b = fg.placeholder("a"), fg.placeholder("b")
    with pytest.raises(fg.ShapeError, match="zero-dimensional.*fg.stack"):
        fg.concatenate([a, b])
    assert fg.stack([a, b]).shape == (2,)


def test_transpose_axes_out_of_range_are_refused_not_wrapped():
    # 1.0: transpose(x, (1,)) of a 1-d x wrapped 1 % 1 = 0 and returned x
    x = fg.placeholder("x", shape=(3,))
    with pytest.raises(fg.ShapeError, match=r"axes \(1,\) are out of range"):
        fg.transpose(x, (1,))
    y = fg.placeholder("y", shape=(2, 3))
    with pytest.raises(fg.ShapeError, match="out of range"):
        fg.transpose(y, (0, 2))
    assert fg.transpose(y, (-1, 0)).shape == (3, 2)


def test_broadcast_to_a_negative_length_is_a_shape_error():
    # 1.0: built with shape (-1,), then numpy's "all elements of broadcast shape must be
    # non-negative" at run time
    with pytest.raises(fg.ShapeError, match="negative length"):
        fg.broadcast_to(fg.placeholder("x"), (-1,))
    assert fg.run(fg.broadcast_to(fg.constant(np.float64(2.0)), (2,)), {}).tolist() == [2.0, 2.0]


# -- found by the dask leg of the fuzzer -------------------------------------------------
def _both(outs, feed):
    from flowgrad.backends.dask_backend import DaskBackend
    want = fg.compile(outs)(feed)
    got = fg.compile(outs, backend=DaskBackend(chunks=2))(feed)
    for w, v in zip(want, got):
        np.testing.assert_allclose(fg.to_numpy(v), w, rtol=1e-12)
    return want


def test_trace_of_a_non_square_matrix_differentiates_on_dask():
    # 1.0: dask's eye(2, M=3) builds a broken graph ("Missing dependency eye-…")
    x = fg.placeholder("x", shape=(3,))
    out = fg.trace(fg.broadcast_to(x, (2, 3)))
    gx = fg.grad(out, x)
    _, g = _both([out, gx], {x: np.array([1.0, 2.0, 3.0])})
    assert g.tolist() == [1.0, 1.0, 0.0]
    y = fg.placeholder("y", shape=(3, 2))
    assert _both([fg.grad(fg.trace(y, offset=-1), y)], {y: np.ones((3, 2))})[0].tolist() == \
        np.eye(3, 2, k=-1).tolist()


def test_gradient_of_a_newaxis_index_on_dask():
    # 1.0: dask's item assignment takes no None in the key of getitem's scatter
    x = fg.placeholder("x", shape=(2,))
    y = x[None, ...] * np.array([[3.0, 4.0]])
    (g,) = _both([fg.grad(fg.sum(y), x)], {x: np.array([1.0, 2.0])})
    assert g.tolist() == [3.0, 4.0]


def test_an_output_that_simplifies_to_an_input_runs_on_dask():
    # 1.0: the copy step called dask.array.array(..., copy=True), which has no copy
    x = fg.placeholder("x")
    out = -(-x)
    assert float(_both([out], {x: 0.5})[0]) == 0.5


def test_inv_and_solve_of_a_matrix_fed_in_chunks_of_rows_on_dask():
    # 1.0: dask's LU needs square chunks; a (3, 3) matrix fed in chunks of 2 rows failed
    a = fg.placeholder("a", shape=(3, 3))
    b = fg.placeholder("b", shape=(3,))
    A = np.eye(3) + 0.2 * np.arange(9.0).reshape(3, 3) / 9
    B = np.array([1.0, -1.0, 2.0])
    y = fg.solve(a, b)
    outs = [fg.inv(a), y, *fg.grad(fg.sum(y), [a, b])]
    want = _both(outs, {a: A, b: B})
    np.testing.assert_allclose(want[0] @ A, np.eye(3), atol=1e-14)
