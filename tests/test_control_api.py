"""The loops' API at its edges: fori_loop's bounds and body signature, a body node used
outside its body, and one output type per program whatever the trip count."""
import numpy as np
import pytest

import flowgrad as fg


def _count(lower, upper, feed=None):
    out = fg.fori_loop(lower, upper, lambda i, c: c + 1.0, fg.constant(0.0))
    return float(fg.run(out, feed or {}))


@pytest.mark.parametrize("lower, upper", [
    (0, 3.0),                  # an integer-valued float: the first non-int
    (0.5, 3), (0, 2.5), (-0.5, 1),
    (True, 3), (0, np.True_),  # bool is an int to Python, never a count here
    (np.float64(0.0), 3), (np.array(0.0), 3),
])
def test_fori_loop_refuses_float_and_bool_bounds(lower, upper):
    # they ran len(range)-defying trip counts: fori_loop(0, 2.5) ran 3, (True, 3) ran 2
    with fg.Graph():
        with pytest.raises(fg.UsageError, match="bound must be an int or a 0-d integer"):
            _count(lower, upper)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bool"])
def test_fori_loop_refuses_a_node_bound_without_an_integer_dtype(dtype):
    with fg.Graph():
        hi = fg.placeholder("hi", (), dtype=dtype)
        with pytest.raises(fg.UsageError, match=f"'hi' has dtype {dtype}.*integer dtype"):
            fg.fori_loop(0, hi, lambda i, c: c + 1.0, fg.constant(0.0))
        lo = fg.placeholder("lo", (), dtype=dtype)
        with pytest.raises(fg.UsageError, match="lower bound 'lo'"):
            fg.fori_loop(lo, 3, lambda i, c: c + 1.0, fg.constant(0.0))


def test_fori_loop_refuses_a_node_bound_that_is_not_0d():
    with fg.Graph():
        hi = fg.placeholder("hi", (1,), dtype="int64")
        with pytest.raises(fg.ShapeError, match="'hi' has shape \\(1,\\); a node bound is 0-d"):
            fg.fori_loop(0, hi, lambda i, c: c + 1.0, fg.constant(0.0))


def test_fori_loop_takes_python_numpy_and_node_integers():
    with fg.Graph():
        n32 = fg.placeholder("n32", (), dtype="int32")
        n64 = fg.placeholder("n64", (), dtype="int64")
        feed = {n32: 5, n64: 2}
        cases = [((-2, 3), 5), ((np.int32(1), 4), 3), ((np.array(1), np.uint8(4)), 3),
                 ((0, n32), 5), ((n64, 5), 3), ((n64, n32), 3), ((4, 1), 0), ((n32, n64), 0)]
        for (lo, up), want in cases:
            assert _count(lo, up, feed) == want, (lo, up)


def test_loop_bodies_with_the_wrong_parameters_are_refused_by_name():
    with fg.Graph():
        x = fg.placeholder("x", ())
        with pytest.raises(fg.UsageError, match=r"the body must take \(i, carry\)"):
            fg.fori_loop(0, 3, lambda c: c + 1.0, x)
        with pytest.raises(fg.UsageError, match=r"the step function must take \(carry, x\)"):
            fg.scan(lambda c: (c, None), x, length=2)
        with pytest.raises(fg.UsageError, match=r"the body must take \(carry\)"):
            fg.while_loop(lambda c: c < 1.0, lambda c, d: c, x)
        # defaults and *args are fine
        out = fg.fori_loop(0, 3, lambda *a: a[1] + 1.0, x)
        assert fg.run(out, {x: 0.5}) == 3.5


def test_a_body_node_used_outside_its_body_is_named_as_such():
    with fg.Graph():
        x = fg.placeholder("x", ())
        xs = fg.placeholder("xs", (None,))
        kept = []
        fg.scan(lambda c, s: (kept.append(c * s) or kept[-1], None), x, xs)
        with pytest.raises(fg.GraphError, match="built inside the body of a scan built at "
                                                ".*test_control_api.py.*return it from the body"):
            kept[0] + x
        with pytest.raises(fg.GraphError, match="inside the body of a scan"):
            x + kept[0]
        fg.cond(x > 0.0, lambda v: kept.append(v * 2.0) or v, lambda v: v, x)
        with pytest.raises(fg.GraphError, match=r"inside the body of a cond \(then\)"):
            fg.grad(kept[1], x)
    # two user graphs still say so
    with fg.Graph():
        a = fg.placeholder("a", ())
    with fg.Graph():
        with pytest.raises(fg.GraphError, match="nodes from two graphs mixed"):
            fg.placeholder("b", ()) + a


def test_a_graph_of_one_node_says_node():
    with fg.Graph() as g:
        fg.placeholder("x", ())
    assert repr(g) == "<flowgrad.Graph with 1 node>"


@pytest.mark.parametrize("how", [dict(codegen=True), dict(codegen=False),
                                 dict(backend="dask")], ids=["codegen", "interpreter", "dask"])
def test_a_loop_result_has_one_type_whatever_the_trip_count(how):
    # 0 trips handed out the 0-d array the carry entered as, ≥ 1 a numpy scalar
    with fg.Graph():
        n = fg.placeholder("n", ())
        xs = fg.placeholder("xs", (None,))
        w = fg.while_loop(lambda c: c < n, lambda c: c + 1.0, fg.constant(0.0))
        s, _ = fg.scan(lambda c, x: (c + x, None), fg.constant(0.0), xs)
        c = fg.cond(n > 0.0, lambda v: v + 1.0, lambda v: v, n)     # an identity branch
        reference = fg.sum(xs) * n                                  # an op's 0-d result
        prog = fg.compile([w, s, c, reference], **how)
        many = prog(n=3.0, xs=np.ones(2))
        none = prog(n=0.0, xs=np.zeros(0))
    assert many == [3.0, 2.0, 4.0, 6.0] and none == [0.0, 0.0, 0.0, 0.0]
    want = type(many[3])
    assert [type(v) for v in many] == [want] * 4
    assert [type(v) for v in none] == [want] * 4
