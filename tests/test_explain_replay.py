"""err.explain() recomputes a where's condition the failing run had not reached from
that run's recorded values, on a copy: it used to re-run the condition on the graph
itself, which drew a random node again (explaining another draw than the one that
failed, and moving the user's stream) and wrote batch-norm statistics after a failed
run (which writes none)."""
import numpy as np
import pytest

import flowgrad as fg

SEED = 3
U1, U2, U3 = np.random.default_rng(SEED).random((3, 6))      # the stream's first draws


def _caught(prog, **feed):
    with pytest.raises(fg.NumericsError) as info:
        prog(**feed)
    return info.value


def test_a_draw_the_run_made_is_read_from_the_trace_not_drawn_again():
    # an entry untaken under the failing run's draw, taken under the next one: the
    # explanation must be about the first (it said "log of a negative number")
    i = int(np.flatnonzero((U1 <= 0.5) & (U2 > 0.5))[0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        u = fg.random.uniform((6,), seed=SEED)          # drawn before the culprit
        logx = fg.log(x)
        keep = u > 0.5                                   # built after it: not in the trace
        prog = fg.compile(fg.sum(fg.where(keep, logx, 0.0)), check_numerics=True)
        draw = fg.compile(u)
        X = np.ones(6)
        X[i] = -1.0
        err = _caught(prog, x=X)
        assert u in err.trace and keep not in err.trace and err.node is logx
        np.testing.assert_array_equal(err.trace[u], U1)
        assert err.explanation.name == "untaken where branch"
        np.testing.assert_array_equal(draw(), U2)      # the stream moved by one draw only


def test_a_draw_the_run_had_not_reached_is_the_one_it_would_have_made():
    i = int(np.flatnonzero(U1 <= 0.5)[0])
    j = int(np.flatnonzero(U1 > 0.5)[0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        logx = fg.log(x)
        u = fg.random.uniform((6,), seed=SEED)          # after the culprit: never drawn
        keep = u > 0.5
        prog = fg.compile(fg.sum(fg.where(keep, logx, 0.0)), check_numerics=True)
        draw = fg.compile(u)
        untaken, taken = np.ones(6), np.ones(6)
        untaken[i], taken[j] = -1.0, -1.0
        err = _caught(prog, x=untaken)
        assert u not in err.trace
        assert err.explanation.name == "untaken where branch"
        assert _caught(prog, x=taken).explanation.name == "log at 0"   # U1[j] keeps it
        np.testing.assert_array_equal(draw(), U1)       # the user's stream has not moved


def test_batch_norm_statistics_are_not_written_by_the_explanation():
    X = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 2.0], [1.0, 1.0]])
    good = np.array([[1.0, 2.0], [0.5, 4.0], [3.0, 2.0], [1.5, 1.0]])
    with fg.Graph():
        x = fg.placeholder("x", shape=(4, 2))
        logx = fg.log(x)
        bn = fg.nn.BatchNorm(2, momentum=0.1)
        h = bn(x)                                        # built after the culprit
        prog = fg.compile(fg.sum(fg.where(h > 0.0, logx, 0.0)), check_numerics=True)
        err = _caught(prog, x=X)
        # x[1, 1] = −1 is below its column's mean 1: h < 0 there, the branch untaken
        assert err.explanation.name == "untaken where branch"
        mean, var = (v.value for v in bn.state)
        np.testing.assert_array_equal(mean, [0.0, 0.0])   # a failed run writes nothing
        np.testing.assert_array_equal(var, [1.0, 1.0])
        prog(x=good)                                     # one successful run: one update
        mean, var = (v.value for v in bn.state)
    np.testing.assert_allclose(mean, 0.1 * good.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(var, 0.9 + 0.1 * good.var(axis=0, ddof=1), rtol=1e-15)
