"""fg.vectorize at its boundaries (found by the vectorize QA probe):

* a batched value declared with a run-time length where the example's key has a known
  one is held to the key's length per call (a FeedError naming the value), never
  reinterpreted by a reshape or summed over the wrong length;
* examples with a length-0 axis batch with a run-time batch length (a reshape behind
  a run-time batch axis of an empty example, a full sum of a product with a weight);
* a refusal names the per-example node's line and the user's vectorize call;
* a broadcast behind a run-time batch length keeps -0.0 (a select, not x + 0);
* (P·u)·v is not reassociated where P·u wraps or rounds in a narrower dtype.

Values are checked against numpy on each example, stacked.
"""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.batching import BatchingError


@pytest.mark.parametrize("codegen", [False, True], ids=["reference", "codegen"])
def test_a_run_time_length_where_the_key_has_a_known_one_is_checked_per_call(codegen, rng):
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(None, None))          # a generic data placeholder
    outs = fg.vectorize([fg.reshape(x, (3, 1)), fg.sum(x)], {x: X})
    assert outs[0].shape == (None, 3, 1)
    prog = fg.compile(outs, codegen=codegen)
    Xv = rng.standard_normal((4, 3))
    for _ in range(2):                                   # first and later calls
        r, s = prog({X: Xv})
        np.testing.assert_array_equal(r, Xv.reshape(4, 3, 1))
        np.testing.assert_allclose(s, Xv.sum(1), rtol=1e-15)
    # rows of 4 (the reshape read them as 4 examples of 3) and of 1 (never a broadcast 1)
    for bad in (4, 2, 1):
        with pytest.raises(fg.FeedError, match=r"'X' has length %d on axis 1" % bad):
            prog({X: rng.standard_normal((3, bad))})


def test_a_static_batch_with_a_run_time_example_length_is_checked_too(rng):
    x = fg.placeholder("x", shape=(2, 3))
    X = fg.placeholder("X", shape=(4, 2, None))
    out = fg.vectorize(fg.transpose(x) * 2.0, {x: X})
    Xv = rng.standard_normal((4, 2, 3))
    np.testing.assert_array_equal(fg.run(out, {X: Xv}), Xv.transpose(0, 2, 1) * 2.0)
    with pytest.raises(fg.FeedError, match="'X' has length 5 on axis 2"):
        fg.run(out, {X: rng.standard_normal((4, 2, 5))})


@pytest.mark.parametrize("codegen", [False, True], ids=["reference", "codegen"])
def test_empty_examples_with_a_run_time_batch_length(codegen, rng):
    s = fg.placeholder("s", shape=(0, 3))
    S = fg.placeholder("S", shape=(None, 0, 3))
    w = fg.constant(rng.standard_normal((0, 3)))
    outs = fg.vectorize([fg.sum(s * w), fg.reshape(s, (3, 0)), fg.sum(s, 1) + 1.0],
                        {s: S})
    prog = fg.compile(outs, codegen=codegen)
    for n in (5, 0):
        a, b, c = prog({S: np.zeros((n, 0, 3))})
        np.testing.assert_array_equal(a, np.zeros(n))
        assert b.shape == (n, 3, 0)
        np.testing.assert_array_equal(c, np.ones((n, 0)))


def test_a_refusal_names_the_examples_line_and_the_vectorize_call():
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(4, 3))
    out = fg.while_loop(lambda c: fg.less(fg.sum(c), 5.0), lambda c: c + 1.0, x)  # HERE-1
    with pytest.raises(BatchingError) as err:
        fg.vectorize(out, {x: X})                                                 # HERE-2
    msg = str(err.value)
    for tag in ("HERE-1", "HERE-2"):
        line = _line_of(tag)
        assert f"test_vectorize_boundaries.py:{line}" in msg, (tag, msg)


def test_vectorize_argument_errors_name_the_users_line():
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(4, 2))
    with pytest.raises(fg.ShapeError) as err:
        fg.vectorize(x * 2.0, {x: X})                                             # HERE-3
    assert f"test_vectorize_boundaries.py:{_line_of('HERE-3')}" in str(err.value)


def _line_of(tag):
    with open(__file__) as f:
        return next(k for k, line in enumerate(f, 1) if line.rstrip().endswith(f"# {tag}"))


@pytest.mark.parametrize("codegen", [False, True], ids=["reference", "codegen"])
def test_a_broadcast_behind_a_run_time_batch_keeps_signed_zeros(codegen):
    """With a run-time batch length the rule broadcast by adding zeros: -0.0 + 0.0 is
    +0.0, so the batch lost the signs numpy's broadcast_to keeps."""
    x = fg.placeholder("x", shape=(1, 3))
    X = fg.placeholder("X", shape=(None, 1, 3))
    n = fg.placeholder("n", shape=(1, 3), dtype="int8")
    N = fg.placeholder("N", shape=(None, 1, 3), dtype="int8")
    outs = fg.vectorize([fg.broadcast_to(x, (2, 3)), fg.broadcast_to(n, (2, 3))], {x: X, n: N})
    Xv = np.array([[[-0.0, 1.0, np.nan]], [[-0.0, -np.inf, -0.0]]])
    Nv = np.array([[[-128, 0, 127]], [[1, -1, 5]]], np.int8)
    prog = fg.compile(outs, codegen=codegen)
    for _ in range(2):
        a, b = prog({X: Xv, N: Nv})
        want = np.broadcast_to(Xv, (2, 2, 3))
        np.testing.assert_array_equal(a, want)
        np.testing.assert_array_equal(np.signbit(a), np.signbit(want))
        assert b.dtype == np.int8
        np.testing.assert_array_equal(b, np.broadcast_to(Nv, (2, 2, 3)))


@pytest.mark.parametrize("dtype, u, x", [("int32", 100000, 100000), ("float32", 0.3, 0.7)])
def test_a_product_of_a_narrower_dtype_is_not_reassociated_into_a_wider_one(dtype, u, x):
    """(x·u)·v with x, u int32 (float32) and v float64: x·u wraps (rounds) in int32
    (float32) before v widens it. Reassociated as x·(u·v), in float64, it did not: 1e10
    where numpy gives 1410065408 (and 0.21 where it gives float32(0.7·0.3))."""
    xi = fg.placeholder("xi", shape=(2,), dtype=dtype)
    X = fg.placeholder("X", shape=(3, 2), dtype=dtype)
    uc = fg.constant(np.array([u, 3], dtype))
    vc = fg.constant(np.array([1.0, 1.0]))
    out = fg.vectorize((xi * uc) * vc, {xi: X})
    Xv = np.full((3, 2), x, dtype)
    with np.errstate(over="ignore"):
        want = (Xv * np.array([u, 3], dtype)) * np.array([1.0, 1.0])
    for codegen in (False, True):
        got = fg.compile(out, codegen=codegen)({X: Xv})
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
