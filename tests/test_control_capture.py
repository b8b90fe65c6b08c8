"""A custom function (fg.custom_vjp, fg.custom_jvp) or an fg.remat block called inside a
loop body on a weight from outside the loop: the weight is captured as it is for a
plain op (it was a GraphError, "inputs 'a' and others come from two graphs"), so values
and derivatives are those of the same body written with plain ops. Checked against
closed forms and, for nested loops, central differences of the loop in plain Python.
A nested loop over the outer graph's nodes is captured the same way. A custom function
that closes over the weight is still refused, naming the user's node (it named the
body's internal placeholder, 'capture_0')."""
import numpy as np
import pytest

import flowgrad as fg


@fg.custom_vjp
def scale_v(u, k):
    return u * k


@scale_v.defvjp
def _scale_v_vjp(g, ans, u, k):
    return (g * k, fg.sum(g * u))


@fg.custom_jvp
def scale_j(u, k):
    return u * k


@scale_j.defjvp
def _scale_j_jvp(tangents, ans, u, k):
    return tangents[0] * k + tangents[1] * u


def _mul(u, k):
    return u * k


SCALES = {"custom_vjp": scale_v, "custom_jvp": scale_j, "remat": fg.remat(_mul),
          "plain": _mul}
A = 2.0


def _scan(f, a, xs):
    # c ← c·a + x from c = 1 over xs = [1, 2, 3]: a³ + a² + 2a + 3
    hT, _ = fg.scan(lambda c, x: (f(c, a) + x, None), fg.constant(1.0), xs)
    return hT


def _while(f, a, xs):
    # c ← c·a while c < 10, from 1: at a = 2, four steps, a⁴
    return fg.while_loop(lambda c: c < 10.0, lambda c: f(c, a), fg.constant(1.0))


def _fori(f, a, xs):
    return fg.fori_loop(0, 3, lambda i, c: f(c, a), fg.constant(1.0))      # a³


def _fori_node(f, a, xs):
    n = fg.constant(np.int64(3))
    return fg.fori_loop(0, n, lambda i, c: f(c, a), fg.constant(1.0))      # a³


def _cond(f, a, xs):
    return fg.cond(a > 0.0, lambda u: f(u, a), lambda u: u, fg.constant(3.0))   # 3a


#: loop -> (value, first and second derivative in a) at a = 2, xs = [1, 2, 3]
CLOSED = {_scan: (A**3 + A**2 + 2 * A + 3, 3 * A**2 + 2 * A + 2, 6 * A + 2),
          _while: (A**4, 4 * A**3, 12 * A**2),
          _fori: (A**3, 3 * A**2, 6 * A),
          _fori_node: (A**3, 3 * A**2, 6 * A),
          _cond: (3 * A, 3.0, 0.0)}


@pytest.mark.parametrize("kind", list(SCALES))
@pytest.mark.parametrize("loop", list(CLOSED), ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("codegen", [True, False])
def test_custom_function_in_a_body_takes_a_weight_from_outside(kind, loop, codegen):
    with fg.Graph():
        a = fg.placeholder("a", ())
        xs = fg.placeholder("xs", (None,))
        out = loop(SCALES[kind], a, xs)
        g = fg.grad(out, a)
        outs = [out, g, fg.grad(g, a), fg.jvp(out, a, 1.0), fg.hvp(out, a, 1.0)]
        got = fg.compile(outs, codegen=codegen)(a=A, xs=np.array([1.0, 2.0, 3.0]))
    value, d1, d2 = CLOSED[loop]
    np.testing.assert_allclose(got, [value, d1, d2, d1, d2], rtol=1e-12)


def _nested_reference(A, X):
    """The two nested scans below, in plain Python: (the loss, its value only)."""
    c, total = 1.0, 0.0
    for x in (1.0, 2.0):
        d, s = c, 0.0
        for y in X:
            s += d
            d = d * A + y * x
        c, total = d, total + s
    return c + total


@pytest.mark.parametrize("kind", list(SCALES))
def test_nested_loops_capture_through_both_levels(kind):
    """The inner scan's xs and the custom function's weight both come from the
    outermost graph (the inner scan itself was refused: 'nodes from two graphs')."""
    f = SCALES[kind]
    with fg.Graph():
        a = fg.placeholder("a", ())
        xs = fg.placeholder("xs", (None,))

        def outer(c, x):
            inner, ys = fg.scan(lambda d, y: (f(d, a) + y * x, d), c, xs)
            return inner, fg.sum(ys)
        out, ys = fg.scan(outer, fg.constant(1.0), fg.constant(np.array([1.0, 2.0])))
        loss = out + fg.sum(ys)
        X = np.array([1.0, 3.0])
        got = fg.run([loss, fg.grad(loss, a), fg.grad(loss, xs)], {a: A, xs: X})
    e = 1e-6
    da = (_nested_reference(A + e, X) - _nested_reference(A - e, X)) / (2 * e)
    dx = [(_nested_reference(A, X + e * u) - _nested_reference(A, X - e * u)) / (2 * e)
          for u in np.eye(2)]
    np.testing.assert_allclose(got[0], _nested_reference(A, X), rtol=1e-12)
    np.testing.assert_allclose(got[1], da, rtol=1e-7)
    np.testing.assert_allclose(got[2], dx, rtol=1e-7)


def test_remat_block_closing_over_a_weight_in_a_body():
    """A remat block may read a weight it does not take (it becomes the call's input):
    inside a body too, where the weight is the body's capture."""
    with fg.Graph():
        a = fg.placeholder("a", ())
        xs = fg.placeholder("xs", (None,))
        out = _scan(lambda c, _: fg.remat(lambda u: u * a)(c), a, xs)
        got = fg.run([out, fg.grad(out, a)], {a: A, xs: np.array([1.0, 2.0, 3.0])})
    np.testing.assert_allclose(got, CLOSED[_scan][:2], rtol=1e-12)


def test_a_closure_over_an_outer_weight_is_refused_naming_it():
    @fg.custom_vjp
    def closes(u):
        return u * a

    @closes.defvjp
    def _(g, ans, u):
        return (g * a,)

    with fg.Graph():
        a = fg.placeholder("a", ())
        xs = fg.placeholder("xs", (None,))
        with pytest.raises(fg.DifferentiationError, match="reads 'a', which is not one of"):
            fg.scan(lambda c, x: (closes(c) + x, None), fg.constant(1.0), xs)
        # two bodies deep: still the user's node, not the outer body's placeholder
        with pytest.raises(fg.DifferentiationError, match="reads 'a', which is not one of"):
            fg.scan(lambda c, x: (fg.scan(lambda d, y: (closes(d) + y, None), c, xs)[0],
                                  None), fg.constant(1.0), xs)


def test_a_node_of_an_unrelated_graph_is_still_refused():
    with fg.Graph():
        other = fg.placeholder("other", ())
    with fg.Graph():
        xs = fg.placeholder("xs", (None,))
        with pytest.raises(fg.GraphError, match="'other' and others come from two graphs"):
            fg.scan(lambda c, x: (scale_v(c, other) + x, None), fg.constant(1.0), xs)
