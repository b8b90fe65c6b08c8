"""fg.vectorize: a per-example graph batched along a leading axis (issue 21).

Every op family: vectorize(f)(X) equals f run on each row and stacked (np.stack of
per-example runs), with a static and a run-time (None) batch length, captured
unbatched variables and 0-d per-example inputs. Gradient graphs (per-example
gradients of logistic regression against the closed form, of a 2-layer MLP against
PyTorch), second derivatives (vectorized Hessian-vector products), refusals at the
boundary, and fg.jacobian's vectorized path against its loop over basis vectors.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowgrad as fg
import random_graphs
from flowgrad.batching import RULES, BatchingError, covered

B = 4


def _values(rng, shapes, dtypes=None):
    out = []
    for k, s in enumerate(shapes):
        dt = (dtypes or {}).get(k)
        out.append(rng.integers(0, 3, (B,) + s) if dt == "int64" else
                   rng.standard_normal((B,) + s))
    return out


def check(fn, shapes, rng, none=False, dtypes=None, values=None):
    """vectorize(fn) on a batch == fn on each example, stacked; returns the batch."""
    dtypes = dtypes or {}
    per = [fg.placeholder(f"p{k}", shape=s, dtype=dtypes.get(k, "float64"))
           for k, s in enumerate(shapes)]
    bat = [fg.placeholder(f"b{k}", shape=(None if none else B,) + s,
                          dtype=dtypes.get(k, "float64")) for k, s in enumerate(shapes)]
    out = fn(*per)
    outs = out if isinstance(out, (list, tuple)) else [out]
    batched = fg.vectorize(list(outs), dict(zip(per, bat)))
    vals = values if values is not None else _values(rng, shapes, dtypes)
    got = fg.run(batched, dict(zip(bat, vals)))
    prog = fg.compile(list(outs))
    rows = [prog(dict(zip(per, [v[i] for v in vals]))) for i in range(B)]
    for k, (g, o) in enumerate(zip(got, outs)):
        want = np.stack([r[k] for r in rows])
        assert batched[k].shape[1:] == o.shape
        assert g.shape == want.shape and g.dtype == want.dtype
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    return got


def _w(rng, *shape):
    return fg.variable(rng.standard_normal(shape), name="w")


def _spd(a):
    nd = len(a.shape)
    at = fg.transpose(a, tuple(range(nd - 2)) + (nd - 1, nd - 2))
    return fg.matmul(a, at) + 3.0 * fg.constant(np.eye(a.shape[-1]))


CASES = {
    # elementwise, with per-example ranks that differ and broadcast
    "arith": (lambda a, b: fg.tanh(a) * b + fg.exp(-a) / (1 + b * b) - fg.sin(b) ** 2,
              [(3,), (3,)]),
    "broadcast ranks": (lambda a, b: a + b * fg.cos(a), [(3,), (2, 3)]),
    "higher-rank batched second": (lambda a, b: b - a, [(2, 3), (3,)]),
    "0-d example": (lambda s, a: s * a + fg.log1p(s * s), [(), (3,)]),
    "where and comparisons": (lambda a, b: fg.where(fg.greater(a, b), a ** 2,
                                                    fg.maximum(a, b)) +
                              fg.where(fg.less_equal(a, 0.1), fg.minimum(a, b), 1.0),
                              [(3,), (3,)]),
    "nn elementwise": (lambda a: fg.sigmoid(a) + fg.softplus(a) + fg.relu(a) +
                       fg.sqrt(fg.abs(a) + 1) + fg.sign(a) + fg.log(fg.abs(a) + 1), [(2, 3)]),
    # reductions
    "sum axis": (lambda a: [fg.sum(a, 0), fg.sum(a, 1, keepdims=True), fg.sum(a)], [(2, 3)]),
    "sum of a product": (lambda a, b: fg.sum(a * b) + fg.sum(a * a), [(2, 3), (2, 3)]),
    "mean max min": (lambda a: [fg.mean(a, 1), fg.max(a, 0), fg.min(a), fg.mean(a)],
                     [(2, 3)]),
    "logsumexp softmax": (lambda a: [fg.logsumexp(a, 1), fg.softmax(a), fg.log_softmax(a, 0)],
                          [(2, 3)]),
    "norms": (lambda a: [fg.norm(a), fg.norm(a, axis=1), fg.norm(a, ord=2)], [(3, 3)]),
    # shape ops
    "reshape": (lambda a: [fg.reshape(a, (3, 2)), fg.reshape(a, (-1,)), fg.reshape(a, (6, 1))],
                [(2, 3)]),
    "transpose expand squeeze": (lambda a: [fg.transpose(a), fg.expand_dims(a, (0, 2)),
                                            fg.squeeze(fg.expand_dims(a, 1), 1)], [(2, 3)]),
    "broadcast_to": (lambda a: fg.broadcast_to(a, (4, 2, 3)) * 2.0, [(1, 3)]),
    "concatenate stack": (lambda a, b: [fg.concatenate([a, b], 1), fg.stack([a, b], 0),
                                        fg.concatenate([a, b * 2], 0)], [(2, 3), (2, 3)]),
    "zeros ones like": (lambda a: [fg.zeros_like(a) + a, fg.ones_like(a)], [(3,)]),
    # indexing
    "getitem basic": (lambda a: [a[1], a[:, 1:], a[..., 0], a[None], a[::-1, 2]], [(2, 3)]),
    "getitem arrays": (lambda a: [a[[0, 1, 1]], a[:, [2, 0]], a[[0, 1], [2, 0]],
                                  fg.take(a, [2, 2, 0], axis=1)], [(2, 3)]),
    # linear algebra
    "dot outer trace": (lambda a, b: [fg.dot(a, b), fg.outer(a, b), fg.trace(fg.outer(a, b))],
                        [(3,), (3,)]),
    "inv det logdet": (lambda a: [fg.inv(_spd(a)), fg.det(_spd(a)), fg.logdet(_spd(a))],
                       [(3, 3)]),
    "solve vector": (lambda a, b: fg.solve(_spd(a), b), [(3, 3), (3,)]),
    "solve matrix": (lambda a, b: fg.solve(_spd(a), b), [(3, 3), (3, 2)]),
    "solve stacked": (lambda a, b: fg.solve(_spd(a), b), [(2, 3, 3), (3, 2)]),
    "eigh": (lambda a: [fg.eigvalsh(_spd(a)), fg.abs(fg.eigh(_spd(a))[1])], [(3, 3)]),
    "linear": (lambda a, b: fg.linear(a, fg.transpose(b), fg.sum(b, 1)), [(3,), (2, 3)]),
    # fused losses (batched through their decompositions)
    "losses": (lambda a, b: [fg.mse(a, b), fg.bce_with_logits(a, fg.sigmoid(b)), fg.l2(a),
                             fg.softmax_cross_entropy(a, fg.softmax(b))], [(2, 3), (2, 3)]),
}


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_op_family_matches_a_loop_over_examples(name, none, rng):
    fn, shapes = CASES[name]
    check(fn, shapes, rng, none=none)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_captured_unbatched_variables_of_any_rank(none, rng):
    W = fg.variable(rng.standard_normal((2, 3)), name="W")   # higher rank than the example
    v = fg.variable(rng.standard_normal(3), name="v")
    check(lambda s, a: [s * W, a * W + v, fg.linear(a, fg.transpose(W)),
                        fg.matmul(W, a), fg.matmul(a, fg.transpose(W)), fg.sum(a * v)],
          [(), (3,)], rng, none=none)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3,), (3,)), ((3,), (3, 5)), ((3,), (4, 3, 5)), ((2, 3), (3,)), ((4, 2, 3), (3,)),
    ((2, 3), (3, 5)), ((4, 2, 3), (3, 5)), ((2, 3), (4, 3, 5)), ((1, 2, 3), (4, 3, 5))])
@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_matmul_with_batched_vectors_matrices_and_stacks(a_shape, b_shape, which, rng):
    A = fg.variable(rng.standard_normal(a_shape), name="A")
    Bv = fg.variable(rng.standard_normal(b_shape), name="Bm")
    if which == "a":
        check(lambda a: fg.matmul(a, Bv), [a_shape], rng)
    elif which == "b":
        check(lambda b: fg.matmul(A, b), [b_shape], rng)
    else:
        check(lambda a, b: fg.matmul(a, b), [a_shape, b_shape], rng, none=True)


def test_solve_with_a_batched_right_hand_side_only(rng):
    M = fg.variable(rng.standard_normal((3, 3)) + 3 * np.eye(3), name="M")
    check(lambda b: [fg.solve(M, b), fg.solve(M, fg.expand_dims(b, 1))], [(3,)], rng)


def test_integer_inputs_one_hot_and_argmax(rng):
    z = fg.variable(rng.standard_normal(4), name="z")
    check(lambda lab, a: [fg.one_hot(lab, 4), fg.argmax(a, 0),
                          fg.softmax_cross_entropy(fg.expand_dims(z, 0) * a[:, :1], lab)],
          [(2,), (2, 3)], rng, dtypes={0: "int64"})


def test_unmapped_outputs_are_repeated_and_a_batch_of_one_works(rng):
    w = fg.variable(rng.standard_normal(3), name="w")
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(None, 3))
    out = fg.vectorize([fg.exp(w), x * w], {x: X})
    for n in (1, 3):
        Xv = rng.standard_normal((n, 3))
        e, xw = fg.run(out, {X: Xv})
        np.testing.assert_array_equal(e, np.broadcast_to(np.exp(w.value), (n, 3)))
        np.testing.assert_allclose(xw, Xv * w.value, rtol=1e-15)


# -- gradient graphs -------------------------------------------------------------------

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_per_example_gradients_of_logistic_regression(none, rng):
    n, d = 6, 5
    Xv, Tv = rng.standard_normal((n, d)), (rng.random(n) < 0.5).astype(float)
    w = fg.variable(rng.standard_normal(d), name="w")
    b = fg.variable(0.3, name="b")
    xi, ti = fg.placeholder("xi", shape=(d,)), fg.placeholder("ti", shape=())
    loss = fg.bce_with_logits(fg.dot(xi, w) + b, ti)
    X = fg.placeholder("X", shape=(None if none else n, d))
    T = fg.placeholder("T", shape=(None if none else n,))
    gw, gb = fg.vectorize(fg.grad(loss, [w, b]), {xi: X, ti: T})
    got_w, got_b = fg.run([gw, gb], {X: Xv, T: Tv})
    r = _sigmoid(Xv @ w.value + 0.3) - Tv                    # the closed form
    np.testing.assert_allclose(got_w, r[:, None] * Xv, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_b, r, rtol=1e-12, atol=1e-14)
    prog = fg.compile(fg.grad(loss, w))                       # and a loop over examples
    loop = np.stack([prog({xi: Xv[i], ti: Tv[i]}) for i in range(n)])
    np.testing.assert_allclose(got_w, loop, rtol=1e-12, atol=1e-14)


def test_per_example_gradients_of_a_two_layer_mlp_against_torch(rng):
    torch = pytest.importorskip("torch")
    n, d, h, k = 5, 4, 6, 3
    Xv, Tv = rng.standard_normal((n, d)), rng.standard_normal((n, k))
    W1v, b1v = rng.standard_normal((d, h)), rng.standard_normal(h)
    W2v, b2v = rng.standard_normal((h, k)), rng.standard_normal(k)
    params = [fg.variable(v, name=nm) for v, nm in
              ((W1v, "W1"), (b1v, "b1"), (W2v, "W2"), (b2v, "b2"))]
    W1, b1, W2, b2 = params
    xi, ti = fg.placeholder("xi", shape=(d,)), fg.placeholder("ti", shape=(k,))
    out = fg.linear(fg.tanh(fg.linear(xi, W1, b1)), W2, b2)
    loss = fg.mse(out, ti)
    X, T = fg.placeholder("X", shape=(None, d)), fg.placeholder("T", shape=(None, k))
    grads = fg.run(fg.vectorize(fg.grad(loss, params), {xi: X, ti: T}), {X: Xv, T: Tv})
    for i in range(n):
        tp = [torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for v in (W1v, b1v, W2v, b2v)]
        x, t = torch.tensor(Xv[i]), torch.tensor(Tv[i])
        o = torch.tanh(x @ tp[0] + tp[1]) @ tp[2] + tp[3]
        torch.mean((o - t) ** 2).backward()
        for g, p in zip(grads, tp):
            np.testing.assert_allclose(g[i], p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_vectorized_hessian_vector_products(rng):
    """Second derivatives: per-example H_i v for a batch of examples and of vectors,
    against the closed form σ'(x·w) (x·v) x."""
    n, d = 5, 4
    Xv, Vv = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    w = fg.variable(rng.standard_normal(d), name="w")
    xi, v = fg.placeholder("xi", shape=(d,)), fg.placeholder("v", shape=(d,))
    f = fg.softplus(fg.dot(xi, w))
    X, V = fg.placeholder("X", shape=(None, d)), fg.placeholder("V", shape=(None, d))
    for mode in ("fwd-rev", "rev-rev"):
        got = fg.run(fg.vectorize(fg.hvp(f, w, v, mode=mode), {xi: X, v: V}), {X: Xv, V: Vv})
        s = _sigmoid(Xv @ w.value)
        want = (s * (1 - s) * np.sum(Xv * Vv, 1))[:, None] * Xv
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_vectorized_graph_differentiates_again(rng):
    """grad of Σ over the batch of a vectorized loss = Σ of the per-example gradients."""
    n, d = 6, 3
    Xv = rng.standard_normal((n, d))
    w = fg.variable(rng.standard_normal(d), name="w")
    xi = fg.placeholder("xi", shape=(d,))
    loss = fg.sum(fg.tanh(xi * w) ** 2)
    X = fg.placeholder("X", shape=(None, d))
    total = fg.sum(fg.vectorize(loss, {xi: X}))
    got = fg.run(fg.grad(total, w), {X: Xv})
    t = np.tanh(Xv * w.value)
    np.testing.assert_allclose(got, np.sum(2 * t * (1 - t * t) * Xv, 0), rtol=1e-12)


# -- random draws -------------------------------------------------------------------------

def test_a_draw_outside_the_mapped_inputs_is_shared_by_every_example(rng):
    x = fg.placeholder("x", shape=(3,))
    noise = fg.random.normal((3,), seed=5)
    X = fg.placeholder("X", shape=(None, 3))
    Xv = rng.standard_normal((4, 3))
    got = fg.run(fg.vectorize(x + noise, {x: X}), {X: Xv})
    drawn = got - Xv
    np.testing.assert_allclose(drawn, np.broadcast_to(drawn[0], (4, 3)), rtol=0, atol=1e-15)


def test_a_draw_shaped_like_a_batched_node_is_refused():
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(4, 3))
    with pytest.raises(BatchingError, match="random_normal.*like="):
        fg.vectorize(x + fg.random.normal(None, like=x, seed=1), {x: X})


# -- refusals at the boundary ------------------------------------------------------------------

def test_batch_lengths_that_disagree_are_refused():
    x, t = fg.placeholder("x", shape=(3,)), fg.placeholder("t", shape=())
    X, T = fg.placeholder("X", shape=(4, 3)), fg.placeholder("T", shape=(5,))
    with pytest.raises(fg.ShapeError, match="disagree on the batch length"):
        fg.vectorize(x * t, {x: X, t: T})
    T4 = fg.placeholder("T4", shape=(4,))                    # one less: accepted
    assert fg.vectorize(x * t, {x: X, t: T4}).shape == (4, 3)


def test_a_key_outside_the_graph_is_refused():
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(4, 3))
    with fg.Graph():
        other = fg.placeholder("o", shape=(3,))
    with pytest.raises(fg.GraphError, match="'o' is not a node of the outputs' graph"):
        fg.vectorize(x * 2.0, {other: X})


def test_a_value_without_the_batch_axis_is_refused():
    x = fg.placeholder("x", shape=(3,))
    same = fg.placeholder("same", shape=(3,))
    with pytest.raises(fg.ShapeError, match="one leading batch axis"):
        fg.vectorize(x * 2.0, {x: same})
    wrong = fg.placeholder("wrong", shape=(4, 2))
    with pytest.raises(fg.ShapeError, match="one leading batch axis"):
        fg.vectorize(x * 2.0, {x: wrong})
    f32 = fg.placeholder("f32", shape=(4, 3), dtype="float32")
    with pytest.raises(fg.ShapeError, match="dtype float32"):
        fg.vectorize(x * 2.0, {x: f32})
    assert fg.vectorize(x * 2.0, {x: fg.placeholder("ok", shape=(4, 3))}).shape == (4, 3)


def test_an_op_without_a_batching_rule_is_named(rng):
    """A Jacobian built as a loop over basis vectors (basis_map) has no rule: the error
    names the op and says where a rule goes."""
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(2, 3))
    J = fg.jacobian(fg.tanh(x), x, method="map")
    with pytest.raises(BatchingError, match=r"op 'basis_map' .* flowgrad/batching\.py"):
        fg.vectorize(J, {x: X})
    assert issubclass(BatchingError, fg.UsageError)


def test_concatenation_with_run_time_lengths_and_its_gradient(rng):
    x = fg.placeholder("x", shape=(None,))
    X = fg.placeholder("X", shape=(None, None))
    y = fg.concatenate([x, x * x, fg.sin(x)])
    outs = [y, fg.grad(fg.sum(y * y), x), fg.jvp(fg.sum(y ** 3), x, fg.cos(x))]
    prog = fg.compile(outs)
    Xv = rng.standard_normal((4, 5))
    got = fg.run(fg.vectorize(outs, {x: X}), {X: Xv})
    rows = [prog({x: Xv[i]}) for i in range(4)]
    for k, g in enumerate(got):
        np.testing.assert_allclose(g, np.stack([r[k] for r in rows]), rtol=1e-12)


def test_advanced_indices_split_by_a_slice_batch():
    """numpy puts the block of advanced indices split by a slice first: a batch index
    in front of it keeps the examples apart (flowgrad/batching_index.py)."""
    x = fg.placeholder("x", shape=(2, 3, 2))
    X = fg.placeholder("X", shape=(4, 2, 3, 2))
    Xv = np.random.default_rng(0).standard_normal((4, 2, 3, 2))
    got = fg.run(fg.vectorize(x[[0, 1], :, [1, 0]], {x: X}), {X: Xv})
    np.testing.assert_array_equal(got, np.stack([v[[0, 1], :, [1, 0]] for v in Xv]))


def test_the_rule_table_covers_every_op_it_names():
    assert set(covered()) == {n for n in RULES if n in fg.ops.REGISTRY}
    assert "matmul" in covered() and "sum_to" in covered() and "broadcast_like" in covered()


# -- jacobian / hessian ------------------------------------------------------------------------

JACOBIANS = {
    "tanh*sum": (lambda x: fg.tanh(x) * fg.sum(x), (5,)),
    "matrix": (lambda x: fg.matmul(x, fg.transpose(x)) + fg.exp(x[:, 0]), (3, 2)),
    "softmax": (lambda x: fg.softmax(x), (4,)),
    "inverse": (lambda x: fg.inv(x + 3 * fg.constant(np.eye(3))), (3, 3)),
    "0-d input": (lambda x: fg.stack([fg.sin(x), x * x]), ()),
}


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_vectorized_jacobians_equal_the_basis_loop(name, mode, rng):
    fn, shape = JACOBIANS[name]
    x = fg.placeholder("x", shape=shape)
    y = fn(x)
    J = fg.jacobian(y, x, mode=mode)
    Jm = fg.jacobian(y, x, mode=mode, method="map")
    assert J.shape == Jm.shape == y.shape + x.shape
    xv = rng.standard_normal(shape)
    a, b = fg.run([J, Jm], {x: xv})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert "basis_map" not in {n.op.name for n in x.graph.nodes if n.op is not None
                               and n.id in _ancestor_ids(J)}


def _ancestor_ids(node):
    return set(node.graph.ancestors([node.id]))


def test_hessians_equal_the_closed_form_and_the_loop(rng):
    A = rng.standard_normal((4, 4))
    X0 = A @ A.T + 4 * np.eye(4)
    x = fg.placeholder("x", shape=(4, 4))
    H = fg.hessian(fg.logdet(x), x)
    Hm = fg.hessian(fg.logdet(x), x, method="map")
    a, b = fg.run([H, Hm], {x: X0})
    Xi = np.linalg.inv(X0)
    np.testing.assert_allclose(a, -np.einsum("li,jk->ijkl", Xi, Xi), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_jacobian_falls_back_to_the_loop_when_an_op_has_no_rule(rng):
    """The Jacobian of a Jacobian built as a basis loop (basis_map has no batching rule
    on purpose) is a basis loop too; method='vectorize' refuses it."""
    x = fg.placeholder("x", shape=(3,))
    y = fg.jacobian(fg.tanh(x), x, method="map")               # no batching rule for this
    J = fg.jacobian(y, x)
    assert J.op.name == "basis_map" or J.inputs[0].op.name == "basis_map"
    xv = rng.standard_normal(3)
    t = np.tanh(xv)
    want = np.zeros((3, 3, 3))
    want[range(3), range(3), range(3)] = -2 * t * (1 - t * t)
    np.testing.assert_allclose(fg.run(J, {x: xv}), want, rtol=1e-14, atol=1e-15)
    with pytest.raises(BatchingError):
        fg.jacobian(y, x, method="vectorize")
    with pytest.raises(ValueError, match="method"):
        fg.jacobian(y, x, method="loop")


def test_a_jacobian_whose_batch_would_be_too_large_loops_instead(rng, monkeypatch):
    from flowgrad import higher_order
    x = fg.placeholder("x", shape=(6,))
    A = fg.constant(rng.standard_normal((50, 6)))
    y = fg.tanh(A @ x)
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", 50 * 6 - 1)  # just below
    J = fg.jacobian(y, x, mode="fwd")               # batch 6 × (50,): 300 entries
    assert J.inputs[0].op.name == "basis_map"
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", 50 * 6)      # at the limit
    Jv = fg.jacobian(y, x, mode="fwd")
    assert "basis_map" not in {x.graph.node(i).op.name for i in _ancestor_ids(Jv)
                               if x.graph.node(i).op is not None}
    xv = rng.standard_normal(6)
    want = (1 - np.tanh(A.value @ xv) ** 2)[:, None] * A.value
    a, b = fg.run([J, Jv], {x: xv})
    np.testing.assert_allclose(a, want, rtol=1e-12)
    np.testing.assert_allclose(b, want, rtol=1e-12)


def _scalarized(fn, seed=7):
    """fn's outputs folded into one scalar with fixed random weights."""
    def f(*ps):
        out = fn(*ps)
        outs = out if isinstance(out, (list, tuple)) else [out]
        r = np.random.default_rng(seed)
        return sum(fg.sum(o * fg.constant(r.standard_normal(o.shape))) for o in outs)
    return f


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_per_example_gradients_of_each_op_family(name, none, rng):
    """The gradient graphs (sum_to, broadcast helpers, scatter-adds, concatenation
    blocks, the linalg rules) batch too: the reverse and the forward sweep."""
    fn, shapes = CASES[name]
    f = _scalarized(fn)
    with fg.Graph():
        check(lambda *ps: fg.grad(f(*ps), list(ps)), shapes, rng, none=none)

    def forward(*ps):
        r = np.random.default_rng(3)
        return fg.jvp(f(*ps), list(ps), [fg.constant(r.standard_normal(s)) for s in shapes])
    with fg.Graph():
        check(forward, shapes, rng, none=none)


def test_float32_examples_stay_float32(rng):
    w = fg.variable(rng.standard_normal(3).astype(np.float32), name="w")
    x = fg.placeholder("x", shape=(3,), dtype="float32")
    X = fg.placeholder("X", shape=(None, 3), dtype="float32")
    g = fg.vectorize(fg.grad(fg.sum(fg.tanh(x * w)), w), {x: X})
    Xv = rng.standard_normal((4, 3)).astype(np.float32)
    got = fg.run(g, {X: Xv})
    assert g.dtype == np.float32 and got.dtype == np.float32
    t = np.tanh(Xv * w.value)
    np.testing.assert_allclose(got, (1 - t * t) * Xv, rtol=1e-6)


def test_an_intermediate_node_may_be_the_key(rng):
    x = fg.placeholder("x", shape=(3,))
    h = fg.exp(x)                                           # replaced by a batch of its own
    out = fg.sum(h * h) + fg.sum(x)
    H = fg.placeholder("H", shape=(5, 3))
    X = fg.placeholder("X", shape=(5, 3))
    Hv, Xv = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    got = fg.run(fg.vectorize(out, {h: H, x: X}), {H: Hv, X: Xv})
    np.testing.assert_allclose(got, np.sum(Hv * Hv, 1) + np.sum(Xv, 1), rtol=1e-14)


def test_examples_with_run_time_lengths_of_their_own(rng):
    """A sequence per example (length known at run time, the same across the batch)."""
    s = fg.placeholder("s", shape=(None, 3))
    w = fg.variable(rng.standard_normal(3), name="w")
    outs = [fg.mean(fg.tanh(s @ w)), fg.sum(s, 0), s[1:] - s[:-1]]
    S = fg.placeholder("S", shape=(None, None, 3))
    Sv = rng.standard_normal((4, 6, 3))
    got = fg.run(fg.vectorize(outs, {s: S}), {S: Sv})
    flat = fg.reshape(s, (-1,))               # two run-time lengths behind one reshape:
    with pytest.raises(BatchingError, match="two run-time lengths"):
        fg.vectorize(flat, {s: S})
    S4 = fg.placeholder("S4", shape=(4, None, 3))           # a static batch length: fine
    np.testing.assert_array_equal(fg.run(fg.vectorize(flat, {s: S4}), {S4: Sv}),
                                  Sv.reshape(4, -1))
    prog = fg.compile(outs)
    rows = [prog({s: Sv[i]}) for i in range(4)]
    for k, g in enumerate(got):
        np.testing.assert_allclose(g, np.stack([r[k] for r in rows]), rtol=1e-12, atol=1e-14)
    grads = fg.vectorize(fg.grad(outs[0], [s, w]), {s: S})
    gs, gw = fg.run(grads, {S: Sv})
    t = np.tanh(Sv @ w.value)
    np.testing.assert_allclose(gw, np.einsum("bn,bnk->bk", (1 - t * t) / 6, Sv), rtol=1e-12)
    np.testing.assert_allclose(gs, ((1 - t * t) / 6)[..., None] * w.value, rtol=1e-12)


def test_run_time_batch_lengths_are_compared_when_the_program_runs(rng):
    """A batch of 1 must not broadcast silently against a batch of 5."""
    x, t = fg.placeholder("x", shape=(3,)), fg.placeholder("t", shape=())
    X, T = fg.placeholder("X", shape=(None, 3)), fg.placeholder("T", shape=(None,))
    out = fg.vectorize(x * t, {x: X, t: T})
    Xv = rng.standard_normal((5, 3))
    np.testing.assert_allclose(fg.run(out, {X: Xv, T: np.arange(5.0)}),
                               Xv * np.arange(5.0)[:, None], rtol=1e-15)
    for bad in (1, 4, 6):                                     # 1: numpy would broadcast it
        with pytest.raises((fg.FlowgradError, ValueError)):
            fg.run(out, {X: Xv, T: np.ones(bad)})
    # a reshape ties no lengths for the feed checks: only the vectorize check sees this
    out1 = fg.vectorize(x * fg.reshape(t, (1,)), {x: X, t: T})
    with pytest.raises((fg.FlowgradError, ValueError)):
        fg.run(out1, {X: Xv, T: np.ones(1)})
    S = fg.placeholder("S", shape=(5, 2, 0))                  # static against run-time,
    s = fg.placeholder("s", shape=(2, 0))                     # and an empty example
    out2 = fg.vectorize([x * t, fg.sum(s) + t], {x: X, t: T, s: S})
    a, b = fg.run(out2, {X: Xv, T: np.arange(5.0), S: np.zeros((5, 2, 0))})
    np.testing.assert_allclose(b, np.arange(5.0))
    with pytest.raises((fg.FlowgradError, ValueError)):
        fg.run(out2, {X: Xv[:1], T: np.arange(1.0), S: np.zeros((5, 2, 0))})


def test_a_vectorized_hessian_exports_to_onnx(tmp_path, rng):
    """J and H are ordinary nodes now, so they export (the basis loop had no ONNX
    counterpart); onnxruntime computes the closed form."""
    ort = pytest.importorskip("onnxruntime")
    Xv = rng.standard_normal((5, 3))
    w = fg.placeholder("w", shape=(3,))
    f = fg.mean(fg.softplus(fg.constant(Xv) @ w)) + 0.1 * fg.sum(w * w)
    H = fg.hessian(f, w).named("H")
    fg.export_onnx(H, tmp_path / "h.onnx")
    sess = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    wv = np.array([0.1, -0.2, 0.3])
    s = _sigmoid(Xv @ wv)
    want = (Xv.T * (s * (1 - s))) @ Xv / 5 + 0.2 * np.eye(3)
    np.testing.assert_allclose(sess.run(None, {"w": wv})[0], want, rtol=1e-12)


def test_hessian_over_data_with_a_run_time_row_count(rng):
    """The basis is static (w), the data rows are not: the gradient graph's run-time
    helpers (reduced_size, broadcast_like, sum_to) batch over the basis."""
    X = fg.placeholder("X", shape=(None, 3))
    T = fg.placeholder("T", shape=(None,))
    w = fg.variable(rng.standard_normal(3), name="w")
    loss = fg.mean(fg.bce_with_logits(X @ w, T, reduction="none") * fg.tanh(X @ w))
    H, Hm = fg.hessian(loss, w), fg.hessian(loss, w, method="map")
    T3 = fg.jacobian(H, w)                                     # a third derivative
    T3m = fg.jacobian(Hm, w, method="map")
    Xv, Tv = rng.standard_normal((7, 3)), (rng.random(7) < 0.5).astype(float)
    a, b, c, d = fg.run([H, Hm, T3, T3m], {X: Xv, T: Tv})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, d, rtol=1e-12, atol=1e-14)
    assert c.shape == (3, 3, 3)
    ops = {X.graph.node(i).op.name for i in _ancestor_ids(T3) if X.graph.node(i).op}
    assert "basis_map" not in ops                              # batched twice, no loop


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs.programs(), st.booleans())
def test_random_graphs_and_their_gradients_batch_like_a_loop(program, none):
    """Random graphs over the op table (rows of run-time length per example), a loss and
    its gradients: vectorized over a batch of 3 examples == the loop over them."""
    g, per, outs, arrays = random_graphs.build(program)
    rng = np.random.default_rng(len(program[1]))
    with g:
        batch = [fg.placeholder(f"batch{k}", shape=(None if none else 3, None, 2))
                 for k in range(len(per))]
        batched = fg.vectorize(outs, dict(zip(per, batch)))
    vals = [np.stack([a, a[::-1] * 0.5, rng.standard_normal(a.shape)]) for a in arrays]
    got = fg.run(batched, dict(zip(batch, vals)))
    prog = fg.compile(outs)
    rows = [prog(dict(zip(per, [v[i] for v in vals]))) for i in range(3)]
    for k, out in enumerate(got):
        want = np.stack([r[k] for r in rows])
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_every_op_of_flowgrad_has_a_batching_rule():
    """A new op needs one line in RULES (flowgrad/batching.py) unless it is declared
    elementwise; only the basis loop has none (it is what vectorize replaces)."""
    from flowgrad.batching import NOT_YET, WITHOUT_RULE
    missing = sorted(name for name, op in fg.ops.REGISTRY.items()
                     if name not in RULES and not op.elementwise
                     and getattr(op.forward, "__module__", "").startswith("flowgrad")
                     and name not in WITHOUT_RULE | NOT_YET)
    assert not missing, ("ops without a batching rule: add a line for each to RULES in "
                         f"flowgrad/batching.py (or, on purpose, to WITHOUT_RULE): {missing}")


def test_an_elementwise_op_without_a_line_batches_by_broadcasting(rng):
    from flowgrad.ops.base import Op, apply
    name = "test_vectorize_cube"
    op = fg.ops.REGISTRY.get(name) or Op(
        name, lambda xp, x, y: x ** 3 * y, lambda x, y: (fg.ops.base.broadcast_shapes(
            name, x, y), x.dtype), vjp=(lambda g, ans, x, y: g * 3 * x * x * y,
                                       lambda g, ans, x, y: g * x ** 3), elementwise=True)
    W = fg.variable(rng.standard_normal((2, 3)), name="W")
    check(lambda a: apply(op, a, W), [(3,)], rng, none=True)


def test_an_axis_of_none_is_refused_not_widened_to_the_batch(rng):
    """A shifted rule must never turn 'every per-example axis' into 'every axis'."""
    from flowgrad.batching import shifted
    from flowgrad.ops.base import Op, apply
    name = "test_vectorize_total"
    op = fg.ops.REGISTRY.get(name) or Op(
        name, lambda xp, x, axis: xp.sum(x, axis=axis), lambda x, axis: ((), x.dtype),
        vjp=(lambda g, ans, x, axis: g * fg.ones_like(x),))
    RULES[name] = shifted("axis")
    try:
        x = fg.placeholder("x", shape=(3,))
        with pytest.raises(BatchingError, match="axis=None would include the batch"):
            fg.vectorize(apply(op, x, axis=None), {x: fg.placeholder("X", shape=(2, 3))})
    finally:
        del RULES[name]


def _needs(*names):
    """Skip where an op of another branch (issue 22, custom derivatives) is not merged."""
    missing = [n for n in names if not hasattr(fg, n)]
    if missing:
        pytest.skip(f"not on this branch: {missing}")


LATER_CASES = {
    "statistics": (("var", "prod", "cumsum"),
                   lambda a: [fg.var(a, 1), fg.prod(a, 0), fg.cumsum(a, 1), fg.var(a)],
                   [(2, 3)]),
    "pad astype": (("pad", "astype"),
                   lambda a: [fg.pad(a, ((1, 0), (0, 2))), fg.astype(a, "float32")], [(2, 3)]),
    "stop_gradient": (("stop_gradient",), lambda a: fg.stop_gradient(a) * a, [(3,)]),
    "factorizations": (("cholesky", "qr", "svd"),
                       lambda a: [fg.cholesky(_spd(a)), fg.abs(fg.qr(a)[1]),
                                  fg.svd(a)[1]], [(3, 3)]),
    "activations": (("clip", "leaky_relu", "elu", "gelu", "erf", "tan"),
                    lambda a: [fg.clip(a, -0.5, 0.5), fg.leaky_relu(a), fg.elu(a), fg.gelu(a),
                               fg.erf(a), fg.tan(a * 0.3)], [(3,)]),
}


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("name", sorted(LATER_CASES))
def test_ops_of_other_branches_where_merged(name, none, rng):
    names, fn, shapes = LATER_CASES[name]
    _needs(*names)
    check(fn, shapes, rng, none=none)
    f = _scalarized(lambda *ps: [o for o in fn(*ps) if o.dtype == np.float64]
                    if isinstance(fn(*ps), list) else fn(*ps))
    with fg.Graph():
        check(lambda *ps: fg.grad(f(*ps), list(ps)), shapes, rng, none=none)


def test_einsum_batches_with_a_fresh_letter():
    rng = np.random.default_rng(3)
    A, B, C = rng.normal(size=(5, 3, 4)), rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
    with fg.Graph():
        a = fg.placeholder("a", (3, 4))
        c = fg.placeholder("c", (2,))
        bw = fg.constant(B)
        y = fg.einsum("ij,jk,k->i", a, bw, c)
        Ab, Cb = fg.placeholder("Ab", (None, 3, 4)), fg.placeholder("Cb", (None, 2))
        got = fg.run(fg.vectorize(y, {a: Ab, c: Cb}), {Ab: A, Cb: C})
        np.testing.assert_allclose(got, np.einsum("zij,jk,zk->zi", A, B, C), rtol=1e-13)
        # and the per-example gradient with respect to c, batched
        gb = fg.run(fg.vectorize(fg.grad(fg.sum(y), c), {a: Ab, c: Cb}), {Ab: A, Cb: C})
        np.testing.assert_allclose(gb, np.einsum("zij,jk->zk", A, B), rtol=1e-13)
