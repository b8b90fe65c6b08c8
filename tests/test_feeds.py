"""Feeding a Program: by name or node, and every FeedError of API.md §3 — before any work."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import Op

CALLS = []
_counting = Op("counting_identity", lambda xp, x: (CALLS.append(1), x)[1],
               lambda x: (x.shape, x.dtype), vjp=(lambda g, ans, x: g,))


@pytest.fixture
def model():
    CALLS.clear()
    x = fg.placeholder("x", shape=(None, 2))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.array([1.0, -1.0]), name="w")
    out = fg.sum(_counting(x @ w - t))
    return x, t, w, fg.compile(out)


def test_feed_by_name_and_by_node(model):
    x, t, w, prog = model
    X, T = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.5, 0.5])
    assert prog(x=X, t=T) == pytest.approx(-3.0)
    assert prog({x: X, t: T}) == pytest.approx(-3.0)
    assert prog({"x": X}, t=T) == pytest.approx(-3.0)
    assert fg.run(fg.sum(x), {x: X}) == pytest.approx(10.0)


@pytest.mark.parametrize("feed,match", [
    ({"x": np.ones((2, 2))}, r"missing feed for placeholder\(s\) \['t'\]"),
    ({"x": np.ones((2, 2)), "t": np.ones(2), "nope": 1.0}, "unknown feed 'nope'"),
    ({"x": np.ones((2, 3)), "t": np.ones(2)}, r"'x' expects shape \(None, 2\), got \(2, 3\)"),
    ({"x": np.ones(2), "t": np.ones(2)}, r"'x' expects shape \(None, 2\), got \(2,\)"),
    ({"x": np.ones((2, 2)), "t": np.array(["a", "b"])}, "'t' expects dtype float64"),
    ({"x": np.ones((2, 2)) + 1j, "t": np.ones(2)}, "'x' expects dtype float64"),
])
def test_feed_errors_name_the_placeholder_and_compute_nothing(model, feed, match):
    *_, prog = model
    with pytest.raises(fg.FeedError, match=match):
        prog(**feed)
    assert CALLS == []


def test_feeds_cast_within_kind_and_variables_can_be_overridden(model):
    x, t, w, prog = model
    X = np.array([[1, 2]], dtype=np.int64)           # int -> float64 is allowed
    assert prog(x=X, t=np.float32([0.0])) == pytest.approx(-1.0)
    assert prog(x=X, t=[0.0], w=np.array([2.0, 2.0])) == pytest.approx(6.0)
    assert w.value.tolist() == [1.0, -1.0]           # the override did not stick
    with pytest.raises(fg.FeedError, match="constant"):
        c = fg.constant(1.0, name="c")
        fg.run(c + x, {"c": 2.0, "x": X})


def test_feed_keys_from_another_graph_are_rejected(model):
    *_, prog = model
    with fg.Graph():
        other = fg.placeholder("x", shape=(None, 2))
    with pytest.raises(fg.FeedError, match="another graph"):
        prog({other: np.ones((1, 2))}, t=np.ones(1))
