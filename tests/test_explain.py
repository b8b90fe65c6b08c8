"""Explained NaNs (issue 23): the locator names the classic trap and its usual fix, in
the NumericsError's message and in err.explain()."""
import numpy as np
import pytest

import flowgrad as fg


def _caught(outputs, feed):
    with pytest.raises(fg.NumericsError) as info:
        fg.compile(outputs, check_numerics=True)(feed)
    return info.value


@pytest.fixture
def g():
    with fg.Graph() as graph:
        yield graph


def test_untaken_where_branch_forward(g):
    x = fg.placeholder("x", (3,))
    y = fg.where(x > 0, fg.log(x).named("logx"), 0.0).named("safe_log")
    loss = fg.sum(y)
    err = _caught([loss, fg.grad(loss, x)], {x: np.array([-1.0, 0.5, 2.0])})
    assert err.node.name == "logx"
    assert err.explanation.name == "untaken where branch"
    assert "the where 'safe_log' discards it" in err.explain()
    assert "double where" in err.explain() and "double where" in str(err)


def test_untaken_where_branch_forward_with_the_condition_built_after_the_culprit(g):
    """The run stops at the log before it reaches `x > 0`: the condition is computed from
    the fed x (it was not recognised when the trap read the condition from the trace)."""
    x = fg.placeholder("x", (3,))
    logx = fg.log(x).named("logx")
    y = fg.where(x > 0, logx, 0.0).named("safe_log")
    loss = fg.sum(y)
    err = _caught([loss, fg.grad(loss, x)], {x: np.array([-1.0, 0.5, 2.0])})
    assert err.node is logx and err.explanation.name == "untaken where branch"
    assert err.explanation.nodes == (y,)
    ok = _caught(fg.log(x) * 1.0, {x: np.array([-1.0, 0.5, 2.0])})   # no where: log < 0
    assert ok.explanation.name == "log at 0"


def test_untaken_where_branch_backward(g):
    x = fg.placeholder("x", (2,))
    y = fg.where(x > 0, fg.sqrt(x), 0.0)     # forward finite at 0: sqrt(0) = 0
    loss = fg.sum(y)
    err = _caught(fg.grad(loss, x), {x: np.array([0.0, 4.0])})
    assert "adjoint" in str(err)
    assert err.explanation.name == "untaken where branch"
    assert "0 · ∞ or 0 / 0 = NaN" in err.explain()


def test_sqrt_at_zero_in_the_backward_pass(g):
    x = fg.placeholder("x", (3,))
    norm = fg.sqrt(fg.sum(x * x)).named("norm")
    err = _caught(fg.grad(norm, x), {x: np.zeros(3)})
    assert err.explanation.name == "sqrt at 0 in the backward pass"
    assert "'norm'" in err.explain() and "1e-12" in err.explain()


def test_log_at_zero(g):
    p = fg.placeholder("p", (3,))
    t = fg.placeholder("t", (3,))
    loss = -fg.sum(t * fg.log(p))
    err = _caught(loss, {p: np.array([0.5, 0.5, 0.0]), t: np.array([0.0, 1.0, 0.0])})
    assert err.explanation.name == "log at 0"
    assert "log_softmax" in err.explain() and "log1p" in err.explain()


def test_log_of_a_negative(g):
    p = fg.placeholder("p", ())
    err = _caught(fg.log(p), {p: -1.0})
    assert "negative" in err.explanation.cause


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exp_overflow_at_the_boundary(g, dtype):
    z = fg.placeholder("z", (2,), dtype=dtype)
    prog = fg.compile(fg.exp(z), check_numerics=True)
    last_ok = np.asarray(np.log(np.finfo(dtype).max), dtype)
    with np.errstate(over="ignore"):
        while not np.isfinite(np.exp(last_ok)):
            last_ok = np.nextafter(last_ok, np.asarray(0, dtype))
    first_bad = np.nextafter(last_ok, np.asarray(np.inf, dtype))
    prog(z=np.array([0.0, last_ok], dtype))            # the largest finite exp: no error
    with pytest.raises(fg.NumericsError) as info:
        prog(z=np.array([0.0, first_bad], dtype))
    assert info.value.explanation.name == "exp overflow"
    assert "logsumexp" in info.value.explain()


def test_division_by_zero(g):
    a = fg.placeholder("a", (2,))
    d = fg.placeholder("d", (2,))
    err = _caught(a / d, {a: np.ones(2), d: np.array([1.0, 0.0])})
    assert err.explanation.name == "division by zero"
    assert "'d'" in err.explanation.cause


def test_unrecognised_and_fed_nans_say_so(g):
    x = fg.placeholder("x", ())
    err = _caught(x * 1e308 * 10, {x: 1e308})      # overflow in a product: no known trap
    assert err.explanation is None and "no known trap" in err.explain()
    with pytest.raises(fg.NumericsError) as info:
        fg.compile(x * 2, check_numerics=True)(x=np.nan)
    assert "no known trap" in info.value.explain()


def test_a_nan_made_from_an_inherited_inf_is_caught_where_it_is_made(g):
    """A mask's −inf passed on is no culprit, but an op that turns it into a NaN is: the
    checked run used to let log(−inf) = NaN through (its input was not all finite) and
    returned a NaN loss with no error at all (found by helper qa-viz)."""
    x = fg.placeholder("x", (3,))
    mask = fg.constant(np.array([-np.inf, 0.0, 0.0]))
    masked = (x + mask).named("masked")          # [−inf, 1, 2]: passed on, not made
    z = fg.log(masked).named("z")                # log(−inf) = NaN: made here
    loss = fg.sum(fg.exp(z))
    feed = {x: np.array([1.0, 1.0, 2.0])}
    with np.errstate(all="ignore"):
        assert np.isnan(np.sum(np.exp(np.log(feed[x] + np.array([-np.inf, 0, 0])))))
        err = _caught(loss, feed)
    assert err.node is z
    assert "'z' (log) produced NaN from inputs holding ±Inf but no NaN" in str(err)
    # passing the −inf on is still not flagged: exp(masked) is 0 where it is −inf
    ok = fg.sum(fg.exp(masked))
    with np.errstate(all="ignore"):
        got = fg.compile(ok, check_numerics=True)(feed)
    assert np.isclose(got, np.exp(1.0) + np.exp(2.0), rtol=1e-15)


def test_an_inf_passed_on_with_no_nan_is_still_no_culprit(g):
    """The boundary: −inf + 1 and −inf · 2 keep −inf (passed on); −inf · 0 is NaN (made)."""
    x, s = fg.placeholder("x", (2,)), fg.placeholder("s", ())   # (a constant 0 is folded)
    masked = x + fg.constant(np.array([-np.inf, 0.0]))
    y = (masked * s).named("scaled")
    prog = fg.compile(fg.sum(y + 1.0), check_numerics=True)
    with np.errstate(all="ignore"):
        assert prog({x: np.array([1.0, 2.0]), s: 2.0}) == -np.inf
        with pytest.raises(fg.NumericsError) as info:
            prog({x: np.array([1.0, 2.0]), s: 0.0})
    assert info.value.node is y and "produced NaN from inputs holding" in str(info.value)
