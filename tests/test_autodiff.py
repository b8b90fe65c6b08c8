"""The reverse and forward sweeps: grad, adjoints, vjp, jvp, and their errors."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import Op


def test_grad_list_in_list_out_and_single_in_single_out():
    x = fg.placeholder("x", shape=(3,))
    w = fg.variable(np.array([1.0, 2.0, 3.0]))
    loss = fg.sum(w * x)
    gw, gx = fg.grad(loss, [w, x])
    g1 = fg.grad(loss, w)
    assert isinstance(gw, fg.Node) and isinstance(g1, fg.Node)
    X = np.array([4.0, 5.0, 6.0])
    out = fg.run([gw, gx, g1], {x: X})
    assert [o.tolist() for o in out] == [X.tolist(), [1.0, 2.0, 3.0], X.tolist()]


def test_grad_of_grad_is_the_second_derivative():
    x = fg.placeholder("x")
    f = x ** 3 + fg.sin(x)
    d1 = fg.grad(f, x)
    d2 = fg.grad(d1, x)
    d3 = fg.grad(d2, x)
    v = fg.run([d1, d2, d3], {x: 0.7})
    assert v[0] == pytest.approx(3 * 0.49 + np.cos(0.7), rel=1e-14)
    assert v[1] == pytest.approx(6 * 0.7 - np.sin(0.7), rel=1e-14)
    assert v[2] == pytest.approx(6 - np.cos(0.7), rel=1e-14)


def test_unconnected_input_gets_zeros_of_its_shape():
    x = fg.placeholder("x", shape=(2,))
    w = fg.variable(np.ones((2, 3)))
    g = fg.grad(fg.sum(x), w)
    assert fg.run(g, {x: np.ones(2)}).tolist() == np.zeros((2, 3)).tolist()


def test_grad_needs_a_scalar_output():
    x = fg.placeholder("x", shape=(3,))
    with pytest.raises(fg.DifferentiationError, match=r"scalar output.*shape \(3,\)"):
        fg.grad(fg.exp(x), x)


def test_missing_rule_names_op_and_argument():
    half = Op("half_rules", lambda xp, a, b: a * b,
              lambda a, b: (a.shape, a.dtype), vjp=(lambda g, ans, a, b: g * b,))
    x = fg.placeholder("x")
    y = fg.placeholder("y")
    with pytest.raises(fg.DifferentiationError,
                       match=r"op 'half_rules' has no reverse-mode \(vjp\) rule for argument 1"):
        fg.grad(half(x, y), y)
    with pytest.raises(fg.DifferentiationError,
                       match=r"op 'half_rules' has no forward-mode \(jvp\) rule for argument 0"):
        fg.jvp(half(x, y), x, 1.0)


def test_adjoints_cover_every_ancestor_and_only_those():
    x = fg.placeholder("x")
    w = fg.variable(2.0)
    unrelated = fg.exp(w)
    loss = w * x + x
    adj = fg.adjoints(loss)
    assert set(adj) == {loss, w, x, loss.inputs[0]}
    assert unrelated not in adj
    vals = fg.run([adj[x], adj[w]], {x: 3.0})
    assert vals == [pytest.approx(3.0), pytest.approx(3.0)]


def test_reverse_sweep_skips_nodes_off_the_path():
    x = fg.placeholder("x", shape=(4, 3))
    w = fg.variable(np.ones(3))
    loss = fg.sum(x @ w)
    before = len(w.graph)
    fg.grad(loss, w)
    added = [n.op.name for n in w.graph.nodes[before:] if n.op is not None]
    # Only w's rule ran (Xᵀ ḡ, one transpose and one matmul), not x's outer product.
    assert added.count("matmul") == 1


def test_vjp_and_jvp_against_the_jacobian():
    A = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    x = fg.placeholder("x", shape=(3,))
    y = fg.tanh(fg.constant(A) @ x)
    X = np.array([0.1, -0.2, 0.3])
    J = (1 - np.tanh(A @ X) ** 2)[:, None] * A
    u, v = np.array([1.0, -2.0]), np.array([0.5, 1.0, -1.0])
    np.testing.assert_allclose(fg.run(fg.vjp(y, x, u), {x: X}), u @ J, rtol=1e-14)
    np.testing.assert_allclose(fg.run(fg.jvp(y, x, v), {x: X}), J @ v, rtol=1e-14)


def test_integer_inputs_are_not_differentiated():
    x = fg.placeholder("x", shape=(3,))
    k = fg.placeholder("k", shape=(3,), dtype="int64")
    g = fg.grad(fg.sum(x * k), x)
    assert fg.run(g, {x: np.ones(3), k: np.array([1, 2, 3])}).tolist() == [1.0, 2.0, 3.0]


def test_broadcast_gradients_are_summed_back_to_each_input_shape():
    a = fg.placeholder("a", shape=(3, 1))
    b = fg.placeholder("b", shape=(1, 4))
    s = fg.placeholder("s")
    loss = fg.sum(a * b * s)
    ga, gb, gs = fg.grad(loss, [a, b, s])
    assert (ga.shape, gb.shape, gs.shape) == ((3, 1), (1, 4), ())
    A, B = np.arange(3.0).reshape(3, 1), np.arange(4.0).reshape(1, 4)
    va, vb, vs = fg.run([ga, gb, gs], {a: A, b: B, s: 2.0})
    np.testing.assert_allclose(va, 2.0 * B.sum() * np.ones((3, 1)))
    np.testing.assert_allclose(vb, 2.0 * A.sum() * np.ones((1, 4)))
    assert vs == pytest.approx(float((A * B).sum()))


@pytest.mark.parametrize("build, closed_form", [
    (lambda x, c: fg.sum(x * c), lambda x, c: c),          # promoted by a float64 constant
    (lambda x, c: fg.sum(fg.astype(x * c, "float32")), lambda x, c: c),   # … and cast back
    (lambda x, c: fg.sum(fg.exp(x) * fg.sin(c * x)),
     lambda x, c: np.exp(x) * (np.sin(c * x) + c * np.cos(c * x))),
])
def test_a_float32_input_gets_a_float32_gradient_when_the_forward_promotes(build,
                                                                          closed_form):
    """x̄ has x's dtype, as in PyTorch and JAX, whatever dtype the forward computed in
    (here float64: a float64 constant); its values are the float64 closed form's."""
    X = np.array([0.5, -1.0, 2.0], np.float32)
    C = np.array([1.0, 2.0, 3.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        gx = fg.grad(build(x, fg.constant(C)), x)
        hx = fg.grad(fg.sum(gx * gx), x)                   # and the second order
        assert gx.dtype == np.float32 and hx.dtype == np.float32
        for codegen in (True, False):
            g, h = fg.compile([gx, hx], codegen=codegen)(x=X)
            assert g.dtype == np.float32 and h.dtype == np.float32
            np.testing.assert_allclose(g, closed_form(X.astype(np.float64), C), rtol=1e-6)
