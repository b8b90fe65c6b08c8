"""fg.precision_audit on loops and random draws, against numpy run directly in float32
and float64. A loop's body was copied unlowered (it ran in float64 inside the float32
graph: the audit saw none of the digits the loop lost), and a random node's two copies
shared its stream (the float32 run compared a different draw: errors of order 1 where
float32 loses nothing) and moved it twice, so the program's next draw was skipped."""
import numpy as np
import pytest

import flowgrad as fg


def _cancel_scan(c0, xs, dt):
    c, ys = dt(c0), []
    for v in xs:
        ys.append((c + dt(v)) - c)
        c = c + dt(v)
    return np.array(ys, dtype=dt)


@pytest.mark.parametrize("nested", [False, True])
def test_a_scans_body_runs_in_the_lowered_dtype(nested):
    xs = np.array([0.1, 0.2, 0.3, 0.4])
    want64 = _cancel_scan(1e6, xs, np.float64)
    want32 = _cancel_scan(1e6, xs, np.float32).astype(np.float64)
    expected = np.max(np.abs(want32 - want64)) / np.max(np.abs(want64))
    assert expected > 1e-3          # float32 loses digits here: 0.1 + 1e6 − 1e6 = 0.125

    def step(c, v):
        return c + v, (c + v) - c

    with fg.Graph():
        x = fg.placeholder("x", shape=(4,))
        if nested:   # the scan inside a cond's branch: one more level of body
            _, ys = fg.cond(fg.sum(x) > 0, lambda: fg.scan(step, fg.constant(1e6), x),
                            lambda: (fg.constant(0.0), x))
        else:
            _, ys = fg.scan(step, fg.constant(1e6), x)
        aud = fg.precision_audit(fg.sum(ys), {x: xs}, dtype="float32")
        assert aud.error(ys) == pytest.approx(expected, rel=1e-6)


def test_random_draws_are_the_same_in_both_runs_and_the_stream_stays():
    draws = np.random.default_rng(3).standard_normal((2, 5))   # the stream's first two
    with fg.Graph():
        x = fg.placeholder("x", shape=(5,))
        n = fg.random.normal((5,), seed=3)
        y = x + n
        aud = fg.precision_audit(fg.sum(y * y), {x: np.arange(5.0)}, dtype="float32")
        d = draws[0]
        # float32's only error on a draw is its rounding
        want = np.max(np.abs(d.astype(np.float32).astype(np.float64) - d)) / np.max(np.abs(d))
        assert aud.error(n) == pytest.approx(want, rel=1e-6)
        assert aud.error(n) < 6e-8
        # the program's first draw is still the stream's first: the audit moved nothing
        np.testing.assert_array_equal(fg.compile(n)(), draws[0])


def test_outputs_of_two_graphs_are_refused():
    # the other graph's node ids were read as this graph's: a node of the wrong graph
    # was audited (here the sum in place of z * 2) without a word
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.sum(fg.log(x))
        with fg.Graph():
            w = fg.placeholder("z", shape=()) * 2.0
        with pytest.raises(fg.GraphError, match="two graphs"):
            fg.precision_audit([y, w], {x: np.ones(3)})


def test_factor_must_be_a_finite_positive_number():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        small = (1 + x) - 1
        feed = {x: np.array([1e-6, 2e-7, 3e-8])}
        # NaN marked nothing, a negative factor every node, a string raised TypeError
        for bad in (0, 0.0, -1.0, float("nan"), float("inf"), "10", True, None):
            with pytest.raises(fg.UsageError, match="factor= takes a finite number > 0"):
                fg.precision_audit(small, feed, factor=bad)
        # the smallest factors still work; the cancellation is marked at factor 10
        assert fg.precision_audit(small, feed, factor=5e-324).worst is small
        assert [r.node for r in fg.precision_audit(small, feed).marked] == [small]
