"""The model ops linear, mse, l2, bce_with_logits and softmax_cross_entropy: one node
each, values against closed forms written here in numpy/scipy, every derivative to
second order against finite differences, each ``decompose`` against the fused kernel,
the target-shape rules and masked logits (issue 10), on numpy and dask."""
import numpy as np
import pytest
from scipy.special import expit, log_softmax as sp_log_softmax, softmax as sp_softmax

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend

from opcheck import check_op

rng = np.random.default_rng(11)
TIGHT = dict(rtol=1e-7, atol=1e-9)   # central differences in float64, eps = 1e-6


def randn(*shape):
    return rng.standard_normal(shape)


def mean_or(reduction, loss):
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](loss)


def softplus(z):
    return np.logaddexp(0.0, z)


# -- closed forms, written without flowgrad ----------------------------------------------

def ref_mse(y, t, reduction="mean"):
    return mean_or(reduction, (np.asarray(y) - t) ** 2)


def ref_bce(z, t, reduction="mean"):
    # −t log σ(z) − (1 − t) log(1 − σ(z)), written with logaddexp to stay exact
    return mean_or(reduction, t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z))


def ref_sce(z, t, reduction="mean", axis=-1, labels=False):
    logp = sp_log_softmax(z, axis=axis)
    if labels:
        rows = -np.squeeze(np.take_along_axis(logp, np.expand_dims(t, axis), axis), axis)
    else:
        rows = -np.sum(t * np.where(t == 0, 0, logp), axis=axis)   # 0 log 0 = 0
    return mean_or(reduction, rows)


# -- one node each ---------------------------------------------------------------------

def test_each_model_op_is_one_node_named_after_it():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.zeros(3), name="w")
        b = fg.variable(0.0, name="b")
        z = fg.linear(x, w, b)
        losses = [fg.mse(fg.sigmoid(z), t), fg.bce_with_logits(z, t), fg.l2(w),
                  fg.softmax_cross_entropy(fg.reshape(z, (-1, 1)) * np.ones(4),
                                           fg.placeholder("k", shape=(None,), dtype="int64"))]
        assert z.op.name == "linear" and z.inputs == (x, w, b)
        assert [n.op.name for n in losses] == ["mse", "bce_with_logits", "l2",
                                               "softmax_cross_entropy"]
        ops = sorted(n.op.name for n in g.nodes if n.op is not None)
        # nothing but the model ops (and the reshape/mul feeding the cross-entropy)
        assert ops == ["bce_with_logits", "l2", "linear", "mse", "mul", "reshape", "sigmoid",
                       "softmax_cross_entropy"]
        assert fg.linear(x, w).inputs == (x, w)           # the bias is optional
        assert all(g.nx.has_edge(i.id, z.id) for i in z.inputs)


def test_the_issue_example_has_exactly_the_teaching_boxes():
    with fg.Graph() as g:
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w, b = fg.variable(0.8, name="w"), fg.variable(-0.3, name="b")
        lam = 0.1
        loss = fg.mse(fg.sigmoid(fg.linear(x, w, b)), t) + lam * fg.l2(w)
        ops = sorted(n.op.name for n in g.nodes if n.op is not None)
        assert ops == ["add", "l2", "linear", "mse", "mul", "sigmoid"]
        y0 = expit(0.8 * 1.5 - 0.3)
        assert fg.run(loss, {x: 1.5, t: 1.0}) == pytest.approx(
            (y0 - 1) ** 2 + lam * 0.5 * 0.8 ** 2, rel=1e-14)


def test_seed_example_built_from_model_ops_matches_the_hand_adjoints():
    """The lecture notes' L = ½(y − t)² is ½·mse for one example, R = ½w² is l2(w)."""
    hand = fg.worked_example.hand_adjoints()
    with fg.Graph():
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w, b = fg.variable(0.8, name="w"), fg.variable(-0.3, name="b")
        z = fg.linear(x, w, b)
        y = fg.sigmoid(z)
        loss = 0.5 * fg.mse(y, t) + 0.1 * fg.l2(w)
        tr = fg.compile(loss).trace(x=1.5, t=1.0)
        for node, sym in [(w, "w"), (b, "b"), (x, "x"), (y, "y"), (z, "z")]:
            assert tr.adjoint(node) == pytest.approx(hand[sym], rel=1e-13), sym


# -- values and derivatives ---------------------------------------------------------------

LINEAR = [
    ("2d@1d + 0-d bias", [randn(4, 3), randn(3), randn()], lambda x, w, b: x @ w + b),
    ("2d@2d + row bias", [randn(4, 3), randn(3, 2), randn(2)], lambda x, w, b: x @ w + b),
    ("2d@2d + (4,1) bias", [randn(4, 3), randn(3, 2), randn(4, 1)], lambda x, w, b: x @ w + b),
    ("1d@2d", [randn(3), randn(3, 2), randn(2)], lambda x, w, b: x @ w + b),
    ("1d@1d", [randn(3), randn(3), randn()], lambda x, w, b: x @ w + b),
    ("batched (2,4,3)@(3,2)", [randn(2, 4, 3), randn(3, 2), randn(2)],
     lambda x, w, b: x @ w + b),
    ("univariate 0-d", [randn(), randn(), randn()], lambda x, w, b: x * w + b),
    ("0-d w scales x", [randn(3), randn(), randn(3)], lambda x, w, b: x * w + b),
]


@pytest.mark.parametrize("arrays,ref", [c[1:] for c in LINEAR], ids=[c[0] for c in LINEAR])
def test_linear(arrays, ref):
    check_op(fg.linear, *arrays, reference=ref, **TIGHT)
    check_op(fg.linear, *arrays[:2], reference=lambda x, w: ref(x, w, 0.0), **TIGHT)


def test_linear_rejects_a_bias_that_enlarges_the_output():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        w = fg.placeholder("w", shape=(3,))
        with pytest.raises(fg.ShapeError, match=r"linear: the bias must broadcast.*\n  at "):
            fg.linear(x, w, np.zeros((2, 1)))
        with pytest.raises(fg.ShapeError, match="linear: inner dimensions differ"):
            fg.linear(x, fg.placeholder("v", shape=(4,)))


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (2, 3), ()], ids=str)
def test_mse(reduction, shape):
    y, t = randn(*shape), randn(*shape)
    check_op(lambda a, b: fg.mse(a, b, reduction=reduction), y, t,
             reference=lambda a, b: ref_mse(a, b, reduction), **TIGHT)
    # a number as target stands for every entry
    check_op(lambda a: fg.mse(a, 0.25, reduction=reduction), y,
             reference=lambda a: ref_mse(a, 0.25, reduction), **TIGHT)


@pytest.mark.parametrize("shape", [(3,), (2, 3), ()], ids=str)
def test_l2(shape):
    check_op(fg.l2, randn(*shape), reference=lambda w: 0.5 * np.sum(w ** 2), **TIGHT)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(reduction):
    z = np.array([[-30.0, -2.0, 0.0], [0.5, 3.0, 30.0]])      # edge values included
    t = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2]])
    check_op(lambda a, b: fg.bce_with_logits(a, b, reduction=reduction), z, t,
             reference=lambda a, b: ref_bce(a, b, reduction), **TIGHT)
    check_op(lambda a: fg.bce_with_logits(a, 1.0, reduction=reduction), z[1],
             reference=lambda a: ref_bce(a, 1.0, reduction), **TIGHT)
    check_op(lambda a, b: fg.bce_with_logits(a, b, reduction=reduction), randn(), 0.3,
             reference=lambda a, b: ref_bce(a, b, reduction), **TIGHT)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_cross_entropy_probability_rows(reduction, axis):
    z = randn(4, 3)
    t = sp_softmax(randn(4, 3), axis=axis)
    t[0, 0] = 0.0                                   # a zero target entry
    check_op(lambda a, b: fg.softmax_cross_entropy(a, b, reduction=reduction, axis=axis),
             z, t, reference=lambda a, b: ref_sce(a, b, reduction, axis), **TIGHT)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis", [((4, 3), -1), ((3, 4), 0), ((2, 3, 4), 1), ((3,), 0)],
                         ids=str)
def test_softmax_cross_entropy_class_indices(reduction, shape, axis):
    z = randn(*shape)
    rows = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    labels = rng.integers(0, shape[axis], size=rows)
    check_op(lambda a: fg.softmax_cross_entropy(a, labels, reduction=reduction, axis=axis),
             z, reference=lambda a: ref_sce(a, labels, reduction, axis, labels=True), **TIGHT)


def test_first_derivatives_against_closed_forms():
    X, w, b, t = randn(6, 3), randn(3), 0.4, rng.uniform(0, 1, 6)
    K = rng.integers(0, 3, size=6)
    Z3 = randn(6, 3)
    with fg.Graph():
        xs = [fg.placeholder(n, shape=a.shape) for n, a in [("X", X), ("w", w), ("Z", Z3)]]
        px, pw, pz = xs
        z = fg.linear(px, pw, b)
        outs = fg.grad(fg.bce_with_logits(z, t), [px, pw]) + \
            fg.grad(fg.mse(z, t), [pw]) + fg.grad(fg.l2(pw), [pw]) + \
            fg.grad(fg.softmax_cross_entropy(pz, K), [pz])
        gx, gw, gw_mse, gw_l2, gz = fg.run(outs, {px: X, pw: w, pz: Z3})
    r = (expit(X @ w + b) - t) / 6
    np.testing.assert_allclose(gx, np.outer(r, w), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gw, X.T @ r, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gw_mse, X.T @ (2 * (X @ w + b - t) / 6), rtol=1e-13)
    np.testing.assert_allclose(gw_l2, w, rtol=0, atol=0)
    np.testing.assert_allclose(gz, (sp_softmax(Z3, axis=1) - np.eye(3)[K]) / 6,
                               rtol=1e-13, atol=1e-15)


def test_third_order_through_the_fused_ops():
    """The rules are flowgrad ops, so any order works: third derivatives too."""
    check_op(lambda z, t: fg.softmax_cross_entropy(z, t) + fg.bce_with_logits(z, t) +
             fg.mse(z, t), randn(2, 3), sp_softmax(randn(2, 3), axis=1), order=3)
    check_op(lambda x, w, b: fg.l2(fg.linear(x, w, b)), randn(3, 2), randn(2, 2), randn(2),
             order=3)


# -- decompose -------------------------------------------------------------------------------

DECOMPOSE = [
    (lambda a, b, c: fg.linear(a, b, c), [randn(4, 3), randn(3, 2), randn(2)]),
    (lambda a, b: fg.linear(a, b), [randn(3), randn(3)]),
    (lambda a, b, c: fg.linear(a, b, c), [randn(), randn(), randn()]),
    (lambda a, b: fg.mse(a, b), [randn(5), randn(5)]),
    (lambda a, b: fg.mse(a, b, reduction="none"), [randn(2, 3), randn(2, 3)]),
    (lambda a: fg.mse(a, 2.0, reduction="sum"), [randn(3)]),
    (lambda a: fg.l2(a), [randn(2, 3)]),
    (lambda a, b: fg.bce_with_logits(a, b, reduction="sum"), [randn(4), rng.uniform(0, 1, 4)]),
    (lambda a, b: fg.softmax_cross_entropy(a, b, axis=0),
     [randn(3, 2), sp_softmax(randn(3, 2), axis=0)]),
    (lambda a: fg.softmax_cross_entropy(a, np.array([2, 0, 1]), reduction="none"),
     [randn(3, 4)]),
]


@pytest.mark.parametrize("fn,arrays", DECOMPOSE)
def test_decompose_builds_the_same_value_and_gradient(fn, arrays):
    with fg.Graph():
        nodes = [fg.placeholder(f"a{i}", shape=np.shape(a)) for i, a in enumerate(arrays)]
        fused = fn(*nodes)
        op = fused.op
        plain = op.decompose(*fused.inputs, **fused.attrs)
        ops_used = {n.op.name for n in fg.graph.Graph.nodes.fget(fused.graph)[fused.id + 1:]
                    if n.op is not None}
        assert op.name not in ops_used                     # really built of other ops
        feed = dict(zip(nodes, arrays))
        want = [fused] + ([fg.grad(fg.sum(fused), nodes[0])])
        got = [plain] + ([fg.grad(fg.sum(plain), nodes[0])])
        for a, b in zip(fg.run(got, feed), fg.run(want, feed)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_every_fused_model_op_has_a_decomposition():
    for name in ["linear", "mse", "l2", "bce_with_logits", "softmax_cross_entropy"]:
        assert callable(fg.ops.REGISTRY[name].decompose), name
    assert fg.ops.REGISTRY["sigmoid"].decompose is None        # a true primitive


# -- issue 10: targets of the wrong shape or kind are build-time errors ---------------------

def test_mse_never_broadcasts_a_column_target_against_a_vector():
    with fg.Graph():
        z = fg.placeholder("z", shape=(None,))
        t = fg.placeholder("t", shape=(None, 1))
        with pytest.raises(fg.ShapeError, match=r"mse: the target must have the prediction's "
                                                r"shape \(None,\), not \(None, 1\)"):
            fg.mse(z, t)
        with pytest.raises(fg.ShapeError, match="bce_with_logits: the target must have"):
            fg.bce_with_logits(z, t)
        with pytest.raises(fg.ShapeError, match=r"\(5,\), not \(4,\)"):
            fg.mse(fg.placeholder("a", shape=(5,)), fg.placeholder("b", shape=(4,)))
        with pytest.raises(fg.ShapeError, match="target must have"):
            fg.mse(fg.placeholder("c", shape=(3,)), np.ones(1))   # no length-1 broadcast
        ok = fg.mse(z, fg.placeholder("u", shape=(None,)))       # None matches None
        assert ok.shape == ()


def test_softmax_cross_entropy_float_labels_are_rejected_with_the_expected_form():
    """The issue's case: labels left at the default float dtype, batch = classes."""
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,))
        with pytest.raises(fg.ShapeError, match=r"look like class indices, which need an "
                                                r"integer dtype.*probability rows need the "
                                                r"logits' shape \(None, 3\)"):
            fg.softmax_cross_entropy(z, t)
        with pytest.raises(fg.ShapeError, match="look like class indices"):
            fg.softmax_cross_entropy(fg.placeholder("s", shape=(3, 3)), np.array([0.0, 1, 2]))
        with pytest.raises(fg.ShapeError, match="one-hot or probability rows need a float"):
            fg.softmax_cross_entropy(z, fg.placeholder("i", shape=(None, 3), dtype="int64"))
        with pytest.raises(fg.ShapeError, match=r"class indices and need the logits' shape "
                                                r"without the class axis, \(None,\)"):
            fg.softmax_cross_entropy(z, fg.placeholder("j", shape=(None, 2, 1), dtype="int32"))
        with pytest.raises(fg.ShapeError, match=r"probability rows need the logits' shape"):
            fg.softmax_cross_entropy(fg.placeholder("y", shape=(4, 3)), np.ones((1, 3)) / 3)
        with pytest.raises(fg.ShapeError, match="neither class indices"):
            fg.softmax_cross_entropy(z, fg.placeholder("m", shape=(None, 3), dtype=bool))
        with pytest.raises(fg.ShapeError, match="axis 2 is not an axis"):
            fg.softmax_cross_entropy(z, t, axis=2)
        with pytest.raises(ValueError, match="reduction must be"):
            fg.softmax_cross_entropy(z, t, reduction="avg")
        # the right forms pass and give the right number
        k = fg.placeholder("k", shape=(None,), dtype="int64")
        p = fg.placeholder("p", shape=(None, 3))
        Z, K = randn(3, 3), np.array([2, 0, 1])
        got = fg.run([fg.softmax_cross_entropy(z, k), fg.softmax_cross_entropy(z, p)],
                     {z: Z, k: K, p: np.eye(3)[K]})
        np.testing.assert_allclose(got, ref_sce(Z, K, labels=True), rtol=1e-14)
        # a Python list of ints is class indices too
        as_list = fg.softmax_cross_entropy(z, [2, 0, 1])
        np.testing.assert_allclose(fg.run(as_list, {z: Z}), ref_sce(Z, K, labels=True),
                                   rtol=1e-14)


@pytest.mark.parametrize("form", ["indices", "one-hot", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_logits_give_the_finite_loss_and_finite_gradients(form, reduction):
    Z = np.array([[2.0, -np.inf, 0.5, -1.0], [-np.inf, 0.3, -np.inf, 1.0]])
    K = np.array([0, 3])
    T = {"indices": K, "one-hot": np.eye(4)[K],
         "probabilities": np.array([[0.7, 0.0, 0.3, 0.0], [0.0, 0.5, 0.0, 0.5]])}[form]
    labels = form == "indices"
    with fg.Graph():
        z = fg.placeholder("z", shape=(2, 4))
        loss = fg.softmax_cross_entropy(z, T, reduction=reduction)
        scalar = fg.sum(loss)
        gz = fg.grad(scalar, z)
        hv = fg.hvp(scalar, z, np.ones((2, 4)))
        val, g, h = fg.run([loss, gz, hv], {z: Z})
    np.testing.assert_allclose(val, ref_sce(Z, T, reduction, labels=labels), rtol=1e-14)
    assert np.all(np.isfinite(val)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    P = sp_softmax(Z, axis=1)                                    # 0 at the masked entries
    onehot = np.eye(4)[K] if labels else T
    scale = 0.5 if reduction == "mean" else 1.0
    np.testing.assert_allclose(g, scale * (P * onehot.sum(1, keepdims=True) - onehot),
                               rtol=1e-14, atol=1e-16)
    assert np.all(g[np.isinf(Z)] == 0)
    # Hessian of a row's loss: diag(p) − p pᵀ (times Σt), applied to the ones vector
    H1 = np.stack([(np.diag(p) - np.outer(p, p)) @ np.ones(4) * s
                   for p, s in zip(P, onehot.sum(1))])
    np.testing.assert_allclose(h, scale * H1, atol=1e-15)


def test_masked_logits_on_main_were_nan_the_decomposition_stays_finite_too():
    Z = np.array([[1.0, -np.inf, 0.0]])
    with fg.Graph():
        z = fg.placeholder("z", shape=(1, 3))
        loss = fg.softmax_cross_entropy(z, np.array([0]))
        plain = loss.op.decompose(*loss.inputs, **loss.attrs)
        a, b = fg.run([loss, plain], {z: Z})
    assert a == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-15)
    assert b == pytest.approx(a, rel=1e-15)


def test_class_indices_out_of_range_are_an_error():
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 3))
        k = fg.placeholder("k", shape=(None,), dtype="int64")
        loss = fg.softmax_cross_entropy(z, k)
        for bad in ([0, 3], [-1, 0]):                     # -1 must not wrap to the last class
            with pytest.raises(Exception, match=r"class labels must lie in \[0, 3\)"):
                fg.run(loss, {z: randn(2, 3), k: np.array(bad)})


# -- dtypes and backends ----------------------------------------------------------------------

def _all_ops_graph(dtype):
    X = randn(130, 4).astype(dtype)
    T = rng.uniform(0, 1, 130).astype(dtype)
    K = rng.integers(0, 3, 130)
    x = fg.placeholder("x", shape=(None, 4), dtype=dtype)
    t = fg.placeholder("t", shape=(None,), dtype=dtype)
    k = fg.placeholder("k", shape=(None,), dtype="int64")
    W = fg.variable(randn(4, 3).astype(dtype), name="W")
    w = fg.variable(randn(4).astype(dtype), name="w")
    b = fg.variable(np.asarray(0.2, dtype), name="b")
    logits = fg.linear(x, W)
    z = fg.linear(x, w, b)
    P = fg.softmax(fg.linear(x, W * 0.5))
    losses = [fg.mse(fg.sigmoid(z), t), fg.bce_with_logits(z, t, reduction="sum"),
              fg.l2(W), fg.softmax_cross_entropy(logits, k),
              fg.softmax_cross_entropy(logits, P, reduction="sum"),
              fg.mse(z, t, reduction="none")]
    total = sum(fg.sum(loss) for loss in losses)
    return losses + fg.grad(total, [W, w, b]), {x: X, t: T, k: K}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernels_keep_the_inferred_dtype(dtype):
    with fg.Graph():
        outs, feed = _all_ops_graph(dtype)
        for node, value in zip(outs, fg.run(outs, feed)):
            assert value.dtype == node.dtype == np.dtype(dtype), node.op.name
            assert np.shape(value) == tuple(s if s is not None else 130 for s in node.shape)


@pytest.mark.parametrize("backend", [
    "dask", DaskBackend(chunks=32),
    pytest.param("cupy", marks=pytest.mark.gpu)], ids=["dask", "dask-chunked", "cupy"])
def test_on_other_backends(backend):
    if backend == "cupy":
        try:
            fg.backends.get_backend("cupy")
        except fg.BackendError:
            pytest.skip("no NVIDIA GPU / cupy not installed")
    with fg.Graph():
        outs, feed = _all_ops_graph("float64")
        want = fg.run(outs, feed)
        got = fg.to_numpy(fg.compile(outs, backend=backend)(feed))
        for g, w_ in zip(got, want):
            np.testing.assert_allclose(g, w_, rtol=1e-10, atol=1e-12)
