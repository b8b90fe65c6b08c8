"""A custom function called, or a rule written, with the wrong number of arguments or
results is a typed error naming the function, what it takes and what it got, at the
user's line (a rule of the wrong arity was Python's bare TypeError from deep in the
sweep, naming neither the function nor the expected call)."""
import inspect

import numpy as np
import pytest

import flowgrad as fg

X = np.array([0.3, -0.7, 1.1])
Y = np.array([2.0, 0.5, -1.5])


def _make(kind, rule, name):
    dec = fg.custom_jvp if kind == "jvp" else fg.custom_vjp

    @dec(name=f"tests.arity.{name}")
    def f(x, y):
        return fg.sin(x) * y
    (f.defjvp if kind == "jvp" else f.defvjp)(rule)
    return f


def _jvp_rule(ts, ans, x, y):
    return ts[0] * fg.cos(x) * y + ts[1] * fg.sin(x)


def _vjp_rule(g, ans, x, y):
    return g * fg.cos(x) * y, g * fg.sin(x)


RIGHT = {"jvp": _jvp_rule, "vjp": _vjp_rule}
#: rules of the right arity in another spelling: defaults and *args bind the same call
SPELLED = {
    "defaults": {"jvp": lambda ts, ans, x, y, extra=None: _jvp_rule(ts, ans, x, y),
                 "vjp": lambda g, ans, x, y, extra=None: _vjp_rule(g, ans, x, y)},
    "varargs": {"jvp": lambda ts, ans, *xs: _jvp_rule(ts, ans, *xs),
                "vjp": lambda g, ans, *xs: _vjp_rule(g, ans, *xs)},
}


def _derivatives(f, how):
    with fg.Graph():
        x, y = fg.placeholder("x", shape=(3,)), fg.placeholder("y", shape=(3,))
        out = f(x, y)
        line = inspect.currentframe().f_lineno + 1
        d = fg.grad(fg.sum(out), [x, y]) if how == "grad" else fg.jvp(out, [x, y], [Y, X])
        return fg.run(d, {x: X, y: Y}), line


@pytest.mark.parametrize("kind", ["jvp", "vjp"])
@pytest.mark.parametrize("how", ["grad", "jvp"])
@pytest.mark.parametrize("spelling", ["plain", "defaults", "varargs"])
def test_a_rule_of_the_right_arity_is_accepted(kind, how, spelling):
    rule = RIGHT[kind] if spelling == "plain" else SPELLED[spelling][kind]
    got, _ = _derivatives(_make(kind, rule, f"ok{kind}{how}{spelling}"), how)
    if how == "grad":                       # d/dx sin(x)·y, d/dy sin(x)·y
        np.testing.assert_allclose(got[0], np.cos(X) * Y, rtol=1e-14)
        np.testing.assert_allclose(got[1], np.sin(X), rtol=1e-14)
    else:
        np.testing.assert_allclose(got, np.cos(X) * Y * Y + np.sin(X) * X, rtol=1e-14)


BAD = {   # one argument too few and one too many: the boundary on both sides
    "too_few": ({"jvp": lambda ts, ans, x: ts[0], "vjp": lambda g, ans, x: (g, g)},
                "takes 3 positional arguments, but is called with 4"),
    "too_many": ({"jvp": lambda ts, ans, x, y, z: ts[0],
                  "vjp": lambda g, ans, x, y, z: (g, g)},
                 "takes 5 positional arguments, but is called with 4"),
}


@pytest.mark.parametrize("kind", ["jvp", "vjp"])
@pytest.mark.parametrize("how", ["grad", "jvp"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_a_rule_of_the_wrong_arity_is_a_typed_error(kind, how, case):
    rules, words = BAD[case]
    f = _make(kind, rules[kind], f"{case}{kind}{how}")
    with pytest.raises(fg.DifferentiationError) as info:
        _derivatives(f, how)
    text = str(info.value)
    head = "tangents" if kind == "jvp" else "g"
    assert f"custom_{kind} 'tests.arity.{case}{kind}{how}'" in text
    assert words in text and f"rule({head}, ans, x, y)" in text
    rule_line = inspect.getsourcelines(rules[kind])[1]
    assert f"test_custom_arity.py:{rule_line})" in text        # where the rule is defined
    line = inspect.getsourcelines(_derivatives)[1] + 5
    assert text.endswith(f"test_custom_arity.py:{line}")     # the line that asked


@pytest.mark.parametrize("how", ["grad", "jvp"])
@pytest.mark.parametrize("count", [0, 2])
def test_a_jvp_rule_returning_a_tuple_is_refused(how, count):
    # a jvp rule returns the one output's tangent; a tuple (one per input?) is refused
    f = _make("jvp", lambda ts, ans, x, y: tuple(ts[:count]), f"tuple{count}{how}")
    with pytest.raises(fg.DifferentiationError,
                       match=f"returned a tuple of {count} values, but a jvp rule returns "
                             "one node"):
        _derivatives(f, how)


@pytest.mark.parametrize("count", [1, 3])
def test_a_vjp_rule_returning_the_wrong_count_is_refused(count):
    # the boundary either side of the 2 inputs' 2 cotangents
    f = _make("vjp", lambda g, ans, x, y: (g,) * count, f"count{count}")
    for how in ("grad", "jvp"):
        with pytest.raises(fg.DifferentiationError,
                           match=f"returned {count} values?, but tests.arity.count{count} "
                                 "takes 2 inputs"):
            _derivatives(f, how)


@pytest.mark.parametrize("kind", ["jvp", "vjp"])
@pytest.mark.parametrize("args", [1, 3])
def test_a_call_with_the_wrong_number_of_inputs_is_a_usage_error(kind, args):
    f = _make(kind, RIGHT[kind], f"call{kind}{args}")
    with fg.Graph():
        xs = [fg.placeholder(f"x{k}", shape=(3,)) for k in range(args)]
        line = inspect.currentframe().f_lineno + 2
        with pytest.raises(fg.UsageError) as info:
            f(*xs)
    text = str(info.value)
    assert f"custom_{kind} 'tests.arity.call{kind}{args}' takes (x, y), called with " \
           f"{args} input" in text
    assert text.endswith(f"test_custom_arity.py:{line}")
