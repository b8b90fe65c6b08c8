"""Higher order: nested grad of tanh to order 6, hvp (both modes) against hessian @ v and
finite differences, jacobian/hessian shapes (0-d too) and values, and differentiating
a Jacobian node again."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import simplify
from flowgrad.autodiff import ancestors


def tanh_derivative(k, x):
    """The k-th derivative of tanh in closed form: a polynomial in t = tanh x.
    d/dx p(t) = p'(t) (1 − t²), starting from p(t) = t."""
    p = np.polynomial.Polynomial([0, 1])
    one_minus_t2 = np.polynomial.Polynomial([1, 0, -1])
    for _ in range(k):
        p = p.deriv() * one_minus_t2
    return p(np.tanh(x))


def test_closed_form_helper_is_right():
    x = np.linspace(-1.5, 1.5, 7)
    t = np.tanh(x)
    np.testing.assert_allclose(tanh_derivative(1, x), 1 - t ** 2)
    np.testing.assert_allclose(tanh_derivative(2, x), -2 * t * (1 - t ** 2))


def test_nested_grad_of_tanh_to_order_six_matches_the_closed_form():
    xv = np.linspace(-2.0, 2.0, 9)
    x = fg.placeholder("x", shape=(9,))
    d = fg.tanh(x)
    steps = []
    for k in range(1, 7):
        d = fg.grad(fg.sum(d), x)
        prog = fg.compile(d)
        steps.append(prog.n_steps)
        np.testing.assert_allclose(prog(x=xv), tanh_derivative(k, xv), rtol=1e-10, atol=1e-10)
    # the simplified plan stays small: ~2.2–2.7x per order (absorbed negations shrink some
    # orders more than others), 144 steps at order 6
    assert steps[-1] <= 160
    assert all(b <= 3.0 * a for a, b in zip(steps, steps[1:]))


def test_simplification_halves_the_sixth_derivative():
    x = fg.placeholder("x", shape=(4,))
    d = fg.tanh(x)
    for _ in range(6):
        d = fg.grad(fg.sum(d), x)
    before = sum(1 for i in ancestors([d]) if x.graph.node(i).kind == "op")
    with simplify.disabled():
        plain = fg.compile(d)
    simplified = fg.compile(d)
    assert plain.n_steps == before
    assert simplified.n_steps < 0.5 * before
    xv = np.array([-1.0, -0.1, 0.3, 2.0])
    np.testing.assert_allclose(simplified(x=xv), plain(x=xv), rtol=1e-12, atol=1e-12)


def _logistic_setup(rng, n=7, d=4, mu=0.3):
    A = rng.standard_normal((n, d))
    x = fg.placeholder("x", shape=(d,))
    f = fg.mean(fg.softplus(fg.constant(A) @ x)) + mu / 2 * fg.sum(x * x)
    return A, x, f, mu


def _logistic_hessian(A, xv, mu):
    s = 1 / (1 + np.exp(-(A @ xv)))
    return A.T @ (A * (s * (1 - s))[:, None]) / len(A) + mu * np.eye(A.shape[1])


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev"])
def test_hvp_equals_analytic_hessian_times_v_and_finite_differences(rng, mode):
    A, x, f, mu = _logistic_setup(rng)
    v = fg.placeholder("v", shape=(4,))
    hv = fg.hvp(f, x, v, mode=mode)
    g = fg.grad(f, x)
    xv, vv = rng.standard_normal(4), rng.standard_normal(4)
    hv_v, H_v = fg.run([hv, fg.hessian(f, x)], {x: xv, v: vv})
    expected = _logistic_hessian(A, xv, mu) @ vv
    np.testing.assert_allclose(hv_v, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H_v @ vv, hv_v, rtol=1e-10, atol=1e-12)
    eps = 1e-6
    fd = (fg.run(g, {x: xv + eps * vv}) - fg.run(g, {x: xv - eps * vv})) / (2 * eps)
    np.testing.assert_allclose(hv_v, fd, rtol=1e-6, atol=1e-8)


def test_hvp_modes_agree_on_lists_and_never_form_the_hessian(rng):
    a = fg.placeholder("a", shape=(3,))
    b = fg.placeholder("b", shape=(2, 3))
    f = fg.sum(fg.tanh(b * a) ** 2) + fg.sum(fg.sin(a))
    va, vb = rng.standard_normal(3), rng.standard_normal((2, 3))
    fr = fg.hvp(f, [a, b], [va, vb])
    rr = fg.hvp(f, [a, b], [va, vb], mode="rev-rev")
    feed = {a: rng.standard_normal(3), b: rng.standard_normal((2, 3))}
    for p, q in zip(fg.run(fr, feed), fg.run(rr, feed)):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)
    # no node of the hvp graph is as large as H (9 x 9 entries for the joint input)
    graph = a.graph
    assert max(int(np.prod(graph.node(i).shape)) for i in ancestors(fr)) <= 6
    with pytest.raises(ValueError, match="mode"):
        fg.hvp(f, a, va, mode="sideways")


def test_jacobian_shapes_and_values(rng):
    x = fg.placeholder("x", shape=(2, 3))
    W = rng.standard_normal((3, 4))
    y = fg.tanh(x @ fg.constant(W))                       # (2, 4)
    xv = rng.standard_normal((2, 3))
    t = np.tanh(xv @ W)
    expected = np.zeros((2, 4, 2, 3))
    for i in range(2):
        expected[i, :, i, :] = ((1 - t[i] ** 2)[:, None] * W.T)
    for mode in ("fwd", "rev", None):
        J = fg.jacobian(y, x, mode=mode)
        assert J.shape == (2, 4, 2, 3)
        np.testing.assert_allclose(fg.run(J, {x: xv}), expected, rtol=1e-12, atol=1e-14)


def test_jacobian_and_hessian_of_zero_d_nodes(rng):
    s = fg.placeholder("s", shape=())
    v = fg.placeholder("v", shape=(3,))
    f = fg.sin(s) * s                                    # 0-d
    H = fg.hessian(f, s)
    assert H.shape == ()
    assert fg.run(H, {s: 0.4}) == pytest.approx(-np.sin(0.4) * 0.4 + 2 * np.cos(0.4))
    J0 = fg.jacobian(v * s, s)                           # (3,) by 0-d
    assert J0.shape == (3,)
    np.testing.assert_allclose(fg.run(J0, {s: 2.0, v: [1.0, 2.0, 3.0]}), [1.0, 2.0, 3.0])
    J1 = fg.jacobian(fg.sum(v * v) * s, v)               # 0-d by (3,)
    assert J1.shape == (3,)
    np.testing.assert_allclose(fg.run(J1, {s: 2.0, v: [1.0, 2.0, 3.0]}), [4.0, 8.0, 12.0])
    Hv = fg.hessian(fg.sum(v ** 3), v)
    assert Hv.shape == (3, 3)
    np.testing.assert_allclose(fg.run(Hv, {v: [1.0, 2.0, 3.0]}), np.diag([6.0, 12.0, 18.0]))


def test_jacobian_picks_the_mode_by_size_and_reuses_one_program(rng):
    x = fg.placeholder("x", shape=(2,))
    y = fg.exp(fg.broadcast_to(x, (5, 2)))               # 10 outputs, 2 inputs: forward
    graph = x.graph
    before = len(graph)
    J = fg.jacobian(y, x, method="map")    # the loop over basis vectors (vectorize's fallback)
    grown = len(graph) - before
    assert J.op.name == "transpose" and J.inputs[0].op.name == "basis_map"
    z = fg.broadcast_to(x, (5, 2)) * 2.0
    big = fg.jacobian(fg.sum(fg.exp(z) ** 2), z, method="map")   # 1 output, 10 inputs: reverse
    assert big.op.name == "basis_map" and big.shape == (5, 2)
    np.testing.assert_allclose(fg.run(big, {x: [0.1, 0.2]}),
                               np.broadcast_to(2 * np.exp(2 * np.array([0.2, 0.4])), (5, 2)))
    # the graph grows by one body, not by one graph per column
    assert grown < 15
    xv = np.array([0.5, -1.0])
    Jv = fg.run(J, {x: xv})
    expected = np.zeros((5, 2, 2))
    expected[:, 0, 0], expected[:, 1, 1] = np.exp(xv[0]), np.exp(xv[1])
    np.testing.assert_allclose(Jv, expected)
    body = J.inputs[0].attrs["body"]
    assert len(body._programs) == 1 and body.n == 2


def test_hessian_of_a_matrix_function_against_finite_differences(rng):
    X = fg.placeholder("X", shape=(2, 2))
    f = fg.sum(fg.tanh(X @ X))
    H = fg.hessian(f, X)
    assert H.shape == (2, 2, 2, 2)
    Xv = rng.standard_normal((2, 2)) * 0.5
    Hv = fg.run(H, {X: Xv})
    g = fg.grad(f, X)
    eps = 1e-6
    for idx in np.ndindex(2, 2):
        E = np.zeros((2, 2))
        E[idx] = eps
        col = (fg.run(g, {X: Xv + E}) - fg.run(g, {X: Xv - E})) / (2 * eps)
        np.testing.assert_allclose(Hv[..., idx[0], idx[1]], col, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(Hv.reshape(4, 4), Hv.reshape(4, 4).T, atol=1e-12)
    np.testing.assert_allclose(fg.run(fg.hessian(f, X, mode="rev"), {X: Xv}), Hv, atol=1e-12)


def test_jacobian_nodes_can_be_differentiated_again(rng):
    x = fg.placeholder("x", shape=(3,))
    y = fg.sin(x) * fg.sum(x * x)
    xv = rng.standard_normal(3)
    for mode in ("fwd", "rev"):
        J = fg.jacobian(y, x, mode=mode)
        fg.check_grads(J, x, feed={x: xv}, order=2)
    H = fg.hessian(fg.sum(fg.exp(x) * fg.sum(x * x)), x)
    fg.check_grads(fg.sum(H * fg.constant(rng.standard_normal((3, 3)))), x,
                   feed={x: xv}, order=2)


@pytest.mark.parametrize("mode", [None, "fwd", "rev"])
def test_jacobian_with_lengths_known_only_at_run_time(mode):
    x = fg.placeholder("x", shape=(None, 2))
    w = fg.variable(np.array([0.5, -1.0]), name="w")
    y = fg.tanh(x @ w)                                   # shape (None,)
    Jx = fg.jacobian(y, x, mode=mode)                    # both sides have a None
    Jw = fg.jacobian(y, w, mode=mode)                    # the output side has a None
    assert Jx.shape == (None, None, 2) and Jw.shape == (None, 2)
    for n in (1, 3):                                     # one program, any length
        X = np.arange(2.0 * n).reshape(n, 2) / 5
        s = 1 - np.tanh(X @ w.value) ** 2
        jx, jw = fg.run([Jx, Jw], {x: X})
        np.testing.assert_allclose(jx, np.einsum("ij,k->ijk", np.diag(s), w.value), rtol=1e-12)
        np.testing.assert_allclose(jw, s[:, None] * X, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("mode", [None, "fwd", "rev"])
def test_jacobian_of_a_run_time_length_output_that_ignores_x_or_over_an_empty_x(mode, backend):
    """y of shape (None, 2): its Jacobian with respect to a w it does not read (or reads
    through stop_gradient only) was a TypeError in forward mode (the default here), the
    zeros broadcast to a shape holding None; with respect to an x of shape (0,) it had
    the shape (0, 2, 0) in forward mode, the run-time length written as 0. Against
    numpy: zeros of y's run-time shape + x's shape, and the closed form where y reads w."""
    x = fg.placeholder("x", shape=(None, 2))
    w = fg.variable(np.array([0.5, -1.0]), name="w")
    e = fg.placeholder("e", shape=(0,))
    y = fg.sin(x) * fg.sum(x)
    X = np.arange(6.0).reshape(3, 2) / 7
    outs = [fg.jacobian(y, w, mode=mode), fg.jacobian(fg.stop_gradient(y * w), w, mode=mode),
            fg.jacobian(y * w, w, mode=mode), fg.jacobian(y * fg.sum(e), e, mode=mode),
            fg.jacobian(y, e, mode=mode)]
    got = fg.compile(outs, backend=backend)({x: X, e: np.zeros(0)})
    got = [np.asarray(fg.backends.to_numpy(g)) for g in got]
    Y = np.sin(X) * X.sum()
    for g in got[:2]:
        np.testing.assert_array_equal(g, np.zeros((3, 2, 2)))
    np.testing.assert_allclose(got[2], np.einsum("ij,jk->ijk", Y, np.eye(2)), rtol=1e-12)
    for g in got[3:]:
        assert g.shape == (3, 2, 0)


def test_hessian_with_respect_to_a_batch_and_its_errors():
    x = fg.placeholder("x", shape=(None,))
    H = fg.hessian(fg.sum(fg.sin(x) * x), x)             # diagonal: 2 cos x − x sin x
    X = np.array([0.1, 0.7, -1.2])
    np.testing.assert_allclose(fg.run(H, {x: X}), np.diag(2 * np.cos(X) - X * np.sin(X)),
                               rtol=1e-12, atol=1e-15)
    fg.check_grads(fg.sum(fg.hessian(fg.sum(fg.tanh(x) ** 3), x)), x, feed={x: X}, order=1)
    with pytest.raises(fg.DifferentiationError, match="scalar"):
        fg.hessian(fg.exp(fg.placeholder("z", shape=(2,))), x)


def test_jvp_is_one_forward_sweep_and_never_forms_J(rng):
    W = rng.standard_normal((40, 50))
    x = fg.placeholder("x", shape=(50,))
    v = fg.placeholder("v", shape=(50,))
    y = fg.exp(fg.tanh(fg.constant(W) @ x) * 0.5) + fg.sum(x * x)
    graph = x.graph
    forward_ops = sum(1 for i in ancestors([y]) if graph.node(i).kind == "op")
    before = len(graph)
    jv = fg.jvp(y, x, v)
    assert len(graph) - before <= 3 * forward_ops          # a constant per forward op
    assert max(int(np.prod(graph.node(i).shape)) for i in ancestors([jv])
               if graph.node(i).kind == "op") <= 50                # no J-sized op node
    prog = fg.compile(jv)
    assert prog.n_steps <= 3 * fg.compile(y).n_steps
    xv, vv = rng.standard_normal(50) * 0.1, rng.standard_normal(50)
    t = np.tanh(W @ xv)
    J = (np.exp(0.5 * t) * 0.5 * (1 - t ** 2))[:, None] * W + 2 * xv
    np.testing.assert_allclose(prog(x=xv, v=vv), J @ vv, rtol=1e-10)


def test_an_input_listed_twice_moves_by_the_sum_of_its_tangents(rng):
    """fg.jvp(y, [x, x], [t1, t2]) kept only t2 (J t2, the first tangent dropped without
    a word), so hvp's two modes disagreed on such a list (fwd-rev H t2, rev-rev
    H (t1 + t2)) and check_grads called a right derivative wrong. The input moves by
    t1 + t2, the dual of vjp giving it its gradient twice; against the closed form of
    f = Σ w x³: ∇f = 3 w x², H = diag(6 w x)."""
    x = fg.placeholder("x", shape=(3,))
    w = rng.standard_normal(3)
    f = fg.sum(fg.constant(w) * x ** 3)
    xv, t1, t2 = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    jv = fg.run(fg.jvp(f, [x, x], [t1, t2]), {x: xv})
    np.testing.assert_allclose(jv, 3 * w * xv ** 2 @ (t1 + t2), rtol=1e-12)
    want = 6 * w * xv * (t1 + t2)
    for mode in ("fwd-rev", "rev-rev"):
        for block in fg.run(fg.hvp(f, [x, x], [t1, t2], mode=mode), {x: xv}):
            np.testing.assert_allclose(block, want, rtol=1e-12)
    fg.check_grads(f, [x, x], {x: xv})                  # a false alarm before
    with pytest.raises(fg.GradientCheckError):          # still catches a wrong one
        fg.check_grads(f + fg.sum(fg.stop_gradient(x) * x), [x, x], {x: xv}, order=1)
