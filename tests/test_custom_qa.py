"""QA of custom derivatives (fg.custom_vjp / fg.custom_jvp) from the outside: what a
wrong rule or forward does at run-time lengths and closures, and where its errors point."""
import inspect

import numpy as np
import pytest

import flowgrad as fg


def _line() -> int:
    """The caller's line number (so a test pins the line an error must name)."""
    return inspect.currentframe().f_back.f_lineno


def _summing_rule(g, ans, x):
    return (fg.sum(g, axis=0, keepdims=True),)      # shape (1,): wrong for an (n,) input


def _double_summed():
    """x ↦ 2x with a rule that sums its term to shape (1,): wrong for a (None,) input."""
    @fg.custom_vjp
    def double(x):
        return x * 2.0
    double.defvjp(_summing_rule)
    return double


@pytest.mark.parametrize("codegen", [True, False])
def test_a_rule_term_of_another_run_time_length_is_refused_not_broadcast(codegen):
    """A (None,) input given a (1,) gradient by its rule: the build-time check cannot see
    the run-time length, and the (1,) term came back as x's gradient (or was broadcast
    into another path's gradient of shape (3,)), silently. It is checked per call."""
    double = _double_summed()
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        alone = fg.compile(fg.grad(fg.sum(double(x)), x), codegen=codegen)
        mixed = fg.compile(fg.grad(fg.sum(double(x) * x), x), codegen=codegen)
        with pytest.raises(fg.FeedError, match="length 3 on axis 0.*length 1 on axis 0"):
            alone(x=np.arange(3.0))
        with pytest.raises(fg.FeedError, match="length 3 on axis 0.*length 1 on axis 0"):
            mixed(x=np.arange(3.0))
        # the boundary: a length-1 input, whose gradient the rule does give, runs
        np.testing.assert_array_equal(alone(x=np.array([5.0])), [1.0])
        np.testing.assert_array_equal(mixed(x=np.array([5.0])), [5.0 + 2 * 5.0])


@pytest.mark.parametrize("codegen", [True, False])
def test_a_jvp_rule_term_of_another_run_time_length_is_refused(codegen):
    """The same in forward mode and in the rule transposed for reverse mode: a (1,)
    tangent for a (None,) output came back as the jvp, silently."""
    @fg.custom_jvp
    def scaled(x):
        return x * 3.0
    scaled.defjvp(lambda t, ans, x: fg.sum(t[0] * 3.0, axis=0, keepdims=True))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        out = scaled(x)
        tangent = fg.compile(fg.jvp(out, x, np.ones(3)), codegen=codegen)
        grad = fg.compile(fg.grad(fg.sum(out), x), codegen=codegen)
        for prog in (tangent, grad):
            with pytest.raises(fg.FeedError, match="length 3 on axis 0.*length 1 on axis 0"):
                prog(x=np.arange(3.0))
        np.testing.assert_array_equal(grad(x=np.array([2.0])), [3.0])   # length 1: runs


def test_a_wrong_rule_names_the_call_and_the_line_that_asked_for_the_derivative():
    """A rule's mistake is found while fg.grad runs the rule: the error names the line
    of fg.grad (and the line that built the call), not only the function."""
    @fg.custom_vjp
    def double(x):
        return x * 2.0
    double.defvjp(lambda g, ans, x: (fg.sum(g),))
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y, built = fg.sum(double(x)), _line()
        asked = _line() + 2
        with pytest.raises(fg.DifferentiationError) as err:
            fg.grad(y, x)
    text = str(err.value)
    assert f"{__file__}:{asked}" in text and f"built at {__file__}:{built}" in text
    assert "shape ()" in text and "(3,)" in text


def test_a_vjp_rule_term_of_another_run_time_length_is_refused_in_forward_mode():
    """A custom_vjp rule's (1,) term for a (None,) input, transposed for fg.jvp: the
    tangent came back broadcast ([3, 3, 3]·ṫ summed) instead of an error."""
    double = _double_summed()
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        t = fg.placeholder("t", shape=(None,))
        prog = fg.compile(fg.jvp(double(x), x, t))
        with pytest.raises(fg.FeedError, match="length 3 on axis 0.*length 1 on axis 0"):
            prog(x=np.arange(3.0), t=np.ones(3))
        np.testing.assert_array_equal(prog(x=np.array([2.0]), t=np.array([0.5])), [0.5])


def test_a_forward_returning_an_outer_float_node_is_refused_at_the_call():
    """``return w`` (or a node built outside) escaped the closure check, which looked only
    at nodes the forward built: w's gradient came back 0 although the value is w's."""
    @fg.custom_vjp
    def passthrough(x):
        return outer
    passthrough.defvjp(lambda g, ans, x: (g,))
    with fg.Graph():
        w = fg.placeholder("w", shape=(3,))
        x = fg.placeholder("x", shape=(3,))
        for outer in (w, fg.sin(w)):
            line = _line() + 2
            with pytest.raises(fg.DifferentiationError, match="reads '(w|sin_.*)'") as err:
                passthrough(x)
            assert f"{__file__}:{line}" in str(err.value)
        outer = fg.astype(w, "int64")       # the boundary: an int node carries no gradient
        assert passthrough(x).dtype == np.int64
        outer = fg.constant(np.ones(3))      # and a constant none to give
        np.testing.assert_array_equal(fg.run(passthrough(x), {x: np.zeros(3)}), np.ones(3))


def test_a_remat_block_returning_an_outer_node_gives_it_its_gradient():
    """fg.remat lifts what its block reads: a block returning an outer node is that node,
    and the node's inputs get their gradient through it (2 sin w cos w)."""
    W = np.array([0.1, 0.2, 0.3])
    with fg.Graph():
        w = fg.placeholder("w", shape=(3,))
        x = fg.placeholder("x", shape=(3,))
        s = fg.sin(w)
        y = fg.remat(lambda h: s)(x)
        gw, gx = fg.run(fg.grad(fg.sum(y * y), [w, x]), {w: W, x: np.ones(3)})
    np.testing.assert_allclose(gw, 2 * np.sin(W) * np.cos(W), rtol=1e-14)
    np.testing.assert_array_equal(gx, np.zeros(3))


def test_a_remat_block_gives_its_bodys_jvp_and_refuses_a_wider_tangent():
    """fg.jvp of a float32 remat block (its forward mode is its rule transposed) gives
    the block's own bits. A float64 tangent for the float32 input, which remat once
    rounded to float32 where the plain block widened, is now refused for both, as for
    any input: a tangent has its input's dtype (as JAX, flowgrad/seeds.py)."""
    X = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    T = np.array([1e-3, 1.0, 2.0], dtype=np.float32)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        got, plain = fg.run([fg.jvp(fg.remat(lambda u: fg.sin(u))(x), x, T),
                             fg.jvp(fg.sin(x), x, T)], {x: X})
        for block in (fg.remat(lambda u: fg.sin(u)), fg.sin):
            with pytest.raises(fg.UsageError, match="has dtype float64, but 'x' is float32"):
                fg.jvp(block(x), x, T.astype(np.float64))
    assert got.dtype == plain.dtype == np.float32
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_allclose(got, T * np.cos(X), rtol=1e-6)
