"""No value is computed only for its shape (issue 19): the helper ops that need a
run-time shape (broadcast_like, reduced_size) take it from the cheapest node known to
have it — a placeholder, or an ancestor the program computes anyway — and every value,
dtype and refusal is what it was when they took the reduced value itself."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops.broadcast import SHAPE_KEEPING, shape_source
from flowgrad.ops.base import REGISTRY


def _ops_in(prog):
    g = prog.graph
    return [g.node(i).op.name for i in prog.order if g.node(i).op is not None]


def _logistic(d=4):
    x = fg.placeholder("x", shape=(None, d))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.linspace(-0.5, 0.5, d), name="w")
    b = fg.variable(0.2, name="b")
    z = x @ w + b
    return x, t, w, b, z


def test_gradient_alone_does_not_compute_the_loss(rng):
    x, t, w, b, z = _logistic()
    loss = fg.mean(fg.softplus(z) - t * z)
    prog = fg.compile(fg.grad(loss, [w, b]))
    ops = _ops_in(prog)
    # the loss's own terms are not in the plan: only its gradient's σ(z)
    assert "softplus" not in ops and "sub" not in ops and "mean" not in ops, ops
    X, T = rng.standard_normal((7, 4)), (rng.random(7) < 0.5).astype(float)
    gw, gb = prog(x=X, t=T)
    zv = X @ w.value + 0.2
    r = (1 / (1 + np.exp(-zv)) - T) / 7          # the closed form, not flowgrad
    np.testing.assert_allclose(gw, X.T @ r, rtol=1e-13)
    assert gb == pytest.approx(r.sum(), rel=1e-13)


def test_the_shape_reference_is_a_placeholder_when_one_is_reachable():
    x, t, w, b, z = _logistic()
    s = fg.softplus(z) - t * z
    assert shape_source(s) is t          # through sub and mul, to the fed t
    # z = x·w + b: no placeholder below softplus (matmul keeps no shape), so the lowest
    # node reached, the product x·w, an ancestor of z that the program computes anyway
    assert shape_source(fg.softplus(z)) is z.inputs[0]
    known = w * 2.0
    assert shape_source(known) is known  # a static shape needs no reference


def test_a_count_keeps_its_dtype():
    """reduced_size's dtype is its reference's float dtype: a float64 input of a float32
    value is not taken as the reference, so the mean's gradient stays float32."""
    c = fg.placeholder("c", shape=(None,), dtype="float64")
    x32 = fg.exp(fg.astype(c, "float32"))
    v = fg.variable(np.float32(1.5), name="v")
    loss = fg.mean(x32 * v)
    gv = fg.grad(loss, v)
    sizes = [n for n in fg.default_graph().nodes if n.op is not None and n.op.name == "reduced_size"]
    assert sizes and all(n.dtype == np.float32 and n.inputs[0].dtype == np.float32 for n in sizes)
    cv = np.array([0.1, -0.4, 2.0])
    got = fg.run(gv, {c: cv})
    assert got.dtype == np.float32
    assert got == pytest.approx(np.mean(np.exp(cv.astype(np.float32))), rel=1e-6)


@pytest.mark.parametrize("rows_t", [1, 6])   # one short of 7 by broadcasting, and one over
def test_a_feed_whose_lengths_disagree_is_still_refused(rows_t, rng):
    """The shape now comes from t: t's length must still be checked against x's rows
    (a length-1 t would otherwise broadcast, and the count would say 1, not 7)."""
    x, t, w, b, z = _logistic()
    prog = fg.compile(fg.grad(fg.mean(fg.softplus(z) - t * z), [w, b]))
    with pytest.raises(fg.FeedError):
        prog(x=rng.standard_normal((7, 4)), t=np.ones(rows_t))


def test_jvp_broadcast_takes_its_shape_from_a_placeholder(rng):
    x = fg.placeholder("x", shape=(None,))
    c = fg.variable(0.5, name="c")
    y = fg.exp(x * c)
    ydot = fg.jvp(y, c, 1.0)
    X = rng.standard_normal(5)
    got = fg.run(ydot, {x: X})
    np.testing.assert_allclose(got, X * np.exp(0.5 * X), rtol=1e-13)


def test_shape_keeping_ops_exist_and_broadcast():
    """Every name in SHAPE_KEEPING is a registered op (a rename must not silently drop
    one), and such an op's output has its inputs' broadcast shape."""
    assert SHAPE_KEEPING <= set(REGISTRY)
    a = fg.placeholder("a", shape=(None, 3))
    for name in ("sub", "mul", "where", "maximum"):
        op = REGISTRY[name]
        args = (fg.greater(a, 0.0), a, a) if name == "where" else (a, a)
        assert op(*args).shape == (None, 3)
