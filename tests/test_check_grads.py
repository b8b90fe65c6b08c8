"""fg.check_grads catches wrong rules — at first order, at second order, in one mode only —
and passes right ones; its error names the order, the mode and the worst entry."""
import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import Op, apply

_unary = dict(infer=lambda x: (x.shape, x.dtype))

# sin with the derivative of −cos mistaken for cos: wrong at first order
bad_sin = Op("test_check_grads.bad_sin", lambda xp, x: xp.sin(x), vjp=(lambda g, ans, x: g * fg.sin(x),),
             elementwise=True, **_unary)

# x² whose rule forgets the 2: wrong at first order ...
bad_square = Op("test_check_grads.bad_square", lambda xp, x: x * x,
                vjp=(lambda g, ans, x: g * x,), elementwise=True, **_unary)

# ... and x³ whose rule 3·bad_square(x) is right in value, so only its derivative is wrong
cube = Op("test_check_grads.cube", lambda xp, x: x * x * x,
          vjp=(lambda g, ans, x: g * 3.0 * apply(bad_square, x),), elementwise=True, **_unary)

# exp with a right reverse rule and a wrong forward rule
bad_fwd_exp = Op("test_check_grads.bad_fwd_exp", lambda xp, x: xp.exp(x),
                 vjp=(lambda g, ans, x: g * ans,), jvp=(lambda t, ans, x: t * ans * 1.01,),
                 **_unary)


@pytest.fixture
def x_and_feed(rng):
    x = fg.placeholder("x", shape=(2, 3))
    return x, {x: rng.uniform(0.3, 1.2, (2, 3))}


def test_right_rules_pass_to_third_order(x_and_feed):
    x, feed = x_and_feed
    w = fg.variable(np.array([0.5, -1.0, 2.0]), name="w")
    f = fg.sum(fg.tanh(x * w) ** 2) + fg.sum(fg.exp(x) @ w)
    fg.check_grads(f, [x, w], feed=feed, order=3)
    fg.check_grads(fg.sin(x) * w, [x, w], feed=feed, modes=("fwd",), order=2)


@pytest.mark.parametrize("modes", [("rev",), ("fwd",), ("rev", "fwd")])
def test_a_wrong_rule_is_caught_at_first_order(x_and_feed, modes):
    x, feed = x_and_feed
    f = fg.sum(apply(bad_sin, x) * 2.0)
    with pytest.raises(fg.GradientCheckError, match=r"order 1, .*mode") as err:
        fg.check_grads(f, x, feed=feed, modes=modes, order=1)
    msg = str(err.value)
    assert "finite differences" in msg and "tolerance" in msg
    if modes == ("rev",):   # the worst entry is named, with both numbers
        assert "at entry (" in msg


def test_the_worst_entry_is_reported(rng):
    x = fg.placeholder("x", shape=(3,))
    xv = np.array([0.1, 1.4, 0.7])           # |cos - sin| is largest at x = 0.1
    with pytest.raises(fg.GradientCheckError, match=r"entry \(0,\)") as err:
        fg.check_grads(fg.sum(apply(bad_sin, x)), x, feed={x: xv}, modes=("rev",), order=1)
    auto, fd = map(float, re.search(r"autodiff (\S+), finite differences (\S+) ",
                                    str(err.value)).groups())
    assert auto / fd == pytest.approx(np.tan(0.1), rel=1e-6)   # u sin(0.1) against u cos(0.1)


def test_a_wrong_second_derivative_is_caught_only_at_second_order(x_and_feed):
    x, feed = x_and_feed
    f = fg.sum(apply(cube, x))
    fg.check_grads(f, x, feed=feed, order=1)                 # first derivatives are right
    for modes in [("rev",), ("fwd",), ("rev", "fwd")]:
        with pytest.raises(fg.GradientCheckError, match=r"order 2, "):
            fg.check_grads(f, x, feed=feed, modes=modes, order=2)
    with pytest.raises(fg.GradientCheckError, match=r"order 1, "):
        fg.check_grads(fg.sum(apply(bad_square, x)), x, feed=feed, order=1)


def test_a_wrong_forward_rule_is_caught_by_forward_mode_only(x_and_feed):
    x, feed = x_and_feed
    f = apply(bad_fwd_exp, x)
    fg.check_grads(f, x, feed=feed, modes=("rev",), order=2)
    with pytest.raises(fg.GradientCheckError, match="forward mode"):
        fg.check_grads(f, x, feed=feed, modes=("fwd",), order=1)


def test_modes_are_checked_against_each_other(x_and_feed):
    """A 1e-4 relative error hides under loose finite-difference tolerances, but not from
    the exact <u, J v> = <J^T u, v> comparison between modes."""
    x, feed = x_and_feed
    slightly = Op("test_check_grads.slightly_off", lambda xp, x: xp.exp(x),
                  vjp=(lambda g, ans, x: g * ans,), jvp=(lambda t, ans, x: t * ans * (1 + 1e-4),),
                  **_unary)
    f = apply(slightly, x)
    fg.check_grads(f, x, feed=feed, modes=("fwd",), order=1, rtol=1e-3)
    fg.check_grads(f, x, feed=feed, modes=("rev",), order=1, rtol=1e-3)
    with pytest.raises(fg.GradientCheckError, match=r"order 1, modes of .* against each other"):
        fg.check_grads(f, x, feed=feed, order=1, rtol=1e-3)


def test_bad_arguments_are_refused(x_and_feed):
    x, feed = x_and_feed
    f = fg.sum(fg.exp(x))
    with pytest.raises(ValueError, match="modes"):
        fg.check_grads(f, x, feed=feed, modes=("sideways",))
    with pytest.raises(ValueError, match="placeholders and variables"):
        fg.check_grads(f, fg.exp(x), feed=feed)
    with pytest.raises(ValueError, match="needs a value"):
        fg.check_grads(f, x, feed={})


def test_a_function_of_fresh_random_draws_is_refused_by_name():
    with fg.Graph():
        x = fg.placeholder("x", shape=(16,))
        training = fg.placeholder("training", shape=(), dtype=bool)
        y = fg.sum(fg.nn.dropout(fg.tanh(x), 0.5, training) ** 2)
        xs = np.linspace(-1.0, 1.0, 16)
        with pytest.raises(fg.DifferentiationError, match="random draws"):
            fg.check_grads(y, x, {x: xs, training: True})
        fg.check_grads(y, x, {x: xs, training: False})   # dropout off: the mask is unread
