"""Custom functions and remat at their edges: a rule may not change the gradient's
dtype, and a call's arguments are refused by name when they are not nodes."""
import numpy as np
import pytest

import flowgrad as fg


def _vjp_fn(factor):
    @fg.custom_vjp
    def double(x):
        return x * 2.0

    @double.defvjp
    def double_vjp(g, ans, x):
        return (g * factor,)
    return double


def _jvp_fn(factor):
    @fg.custom_jvp
    def double(x):
        return x * 2.0

    @double.defjvp
    def double_jvp(tangents, ans, x):
        return tangents[0] * factor
    return double


X = np.array([0.5, -1.0, 2.0], np.float32)
T = np.array([1.0, 2.0, -3.0], np.float32)


@pytest.mark.parametrize("make", [_vjp_fn, _jvp_fn])
def test_a_rule_keeping_the_dtype_is_accepted(make):
    with fg.Graph():
        x = fg.placeholder("x", (3,), dtype="float32")
        f = make(fg.constant(np.float32(2.0)))     # the same dtype: the boundary
        y = f(x)
        g, t = fg.grad(fg.sum(y), x), fg.jvp(y, x, T)
        gv, tv = fg.run([g, t], {x: X})
    assert g.dtype == t.dtype == np.float32
    assert gv.dtype == tv.dtype == np.float32
    np.testing.assert_array_equal(gv, np.full(3, 2.0, np.float32))
    np.testing.assert_array_equal(tv, 2.0 * T)


@pytest.mark.parametrize("make, kind", [(_vjp_fn, "vjp"), (_jvp_fn, "jvp")])
def test_a_rule_widening_the_dtype_is_refused_in_both_modes(make, kind):
    # a float64 constant in the rule made the float32 input's gradient float64
    with fg.Graph():
        x = fg.placeholder("x", (3,), dtype="float32")
        y = make(fg.constant(np.float64(2.0)))(x)
        msg = (f"custom_{kind} .*double.*rule 'double_{kind}' returned dtype float64 .*"
               "has dtype float32")
        with pytest.raises(fg.DifferentiationError, match=msg):
            fg.grad(fg.sum(y), x)
        with pytest.raises(fg.DifferentiationError, match=msg):
            fg.jvp(y, x, T)


@pytest.mark.parametrize("make", [_vjp_fn, _jvp_fn])
def test_a_wider_cotangent_or_tangent_may_give_a_wider_term(make):
    # a float64 op after the call widens the cotangent the rule is given, as it widens a
    # built-in op's derivative: the rule's term follows it, and the gradient is then x's
    # dtype, as every gradient (autodiff.as_input_dtype). A wider *tangent* no longer
    # reaches a rule: jvp refuses a float64 tangent for a float32 input, as JAX does
    with fg.Graph():
        x = fg.placeholder("x", (3,), dtype="float32")
        y = make(2.0)(x)
        z = fg.sum(y * fg.constant(np.full(3, 3.0)))
        g, t = fg.grad(z, x), fg.jvp(y, x, T)
        assert g.dtype == np.float32 and t.dtype == np.float32
        with pytest.raises(fg.UsageError, match="tangent for 'x' has dtype float64"):
            fg.jvp(y, x, T.astype(np.float64))
        gv, tv = fg.run([g, t], {x: X})
    np.testing.assert_array_equal(gv, np.full(3, 6.0))
    np.testing.assert_array_equal(tv, 2.0 * T)


def test_remat_keeps_autodiffs_own_dtypes():
    # remat's rule is the built-in sweep of its block: whatever dtype the block's own
    # derivative has is not refused (the same as without remat)
    def block(u):
        return fg.astype(u * fg.constant(np.full(3, 3.0)), "float32")
    with fg.Graph():
        x = fg.placeholder("x", (3,), dtype="float32")
        plain = fg.grad(fg.sum(block(x)), x)
        kept = fg.grad(fg.sum(fg.remat(block)(x)), x)
        assert kept.dtype == plain.dtype
        np.testing.assert_array_equal(fg.run(kept, {x: X}), np.full(3, 3.0))


def test_a_tuple_argument_is_refused_by_name():
    @fg.custom_vjp
    def mul(ab):
        return ab[0] * ab[1]

    @mul.defvjp
    def _(g, ans, ab):
        return ((g * ab[1], g * ab[0]),)
    with fg.Graph():
        x = fg.placeholder("x", ())
        for arg in [(x, x), [x, 2.0], {"a": x}]:
            with pytest.raises(fg.UsageError, match=r"argument 0 \('ab'\) is a .* of nodes; "
                                                    "a custom function takes nodes"):
                mul(arg)
        with pytest.raises(fg.UsageError, match=r"fg.remat\(<lambda>\): argument 0"):
            fg.remat(lambda ab: ab[0] * ab[1])((x, x))
        # a list of numbers is still an array argument
        @fg.custom_vjp
        def scale(u):
            return u * 2.0

        @scale.defvjp
        def _(g, ans, u):
            return (g * 2.0,)
        np.testing.assert_array_equal(fg.run(scale([1.0, 2.0])), [2.0, 4.0])


def test_keywords_are_refused_with_a_typed_error():
    f = _vjp_fn(2.0)
    with fg.Graph():
        x = fg.placeholder("x", ())
        with pytest.raises(fg.UsageError, match="positionally"):
            f(x=x)
        with pytest.raises(fg.UsageError, match=r"fg.remat\(<lambda>\): pass the inputs "
                                                "positionally"):
            fg.remat(lambda u: u * 2.0)(u=x)


@pytest.mark.parametrize("result", [lambda u: (u, u * 2.0), lambda u: {"a": u}])
def test_remat_of_a_block_with_several_results_names_remat(result):
    with fg.Graph():
        x = fg.placeholder("x", ())
        with pytest.raises(fg.DifferentiationError,
                           match=r"^fg.remat\(<lambda>\): the block must return one flowgrad "
                                 "node.*one block per result") as e:
            fg.remat(result)(x)
        assert "custom_vjp" not in str(e.value)
