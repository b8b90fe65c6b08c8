"""Linear algebra, indexing and shape ops beyond the op table: build-time shape errors,
run-time (None) lengths, index nodes, and that rules reuse outputs and factorizations."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.autodiff import ancestors
from flowgrad.engine.simplify import simplify
from opcheck import check_op

rng = np.random.default_rng(3)


def planned_ops(outputs):
    """Names of the ops a program for ``outputs`` runs, after CSE and folding."""
    graph = outputs[0].graph
    steps = simplify(graph, ancestors(outputs), [o.id for o in outputs]).steps
    return [op.name for _, op, _, _ in steps]


# -- shape errors name the op, the operands and their shapes -----------------------------

@pytest.mark.parametrize("build,message", [
    (lambda x, v: fg.det(x), r"det: the matrices are not square \(2×3\).*x \(2, 3\)"),
    (lambda x, v: fg.inv(v), r"inv: needs a \(batch of\) square matrices.*v \(3,\)"),
    (lambda x, v: fg.logdet(x), r"logdet: the matrices are not square"),
    (lambda x, v: fg.solve(fg.ones_like(fg.outer(v, v)), fg.ones_like(x)),
     r"solve: b has 2 rows, a is 3×3"),
    (lambda x, v: fg.eigvalsh(x), r"eigvalsh: the matrices are not square"),
    (lambda x, v: fg.trace(v), r"trace: needs an array of at least 2 dimensions.*v \(3,\)"),
    (lambda x, v: fg.concatenate([x, v]), r"concatenate: all operands must have the same "
                                          r"number of axes.*x \(2, 3\), v \(3,\)"),
    (lambda x, v: fg.concatenate([x, x.T]), r"concatenate: lengths differ along axis 1"),
    (lambda x, v: fg.stack([x, x.T]), r"stack: all operands must have the same shape"),
    (lambda x, v: x[2], r"getitem: index 2 is out of bounds for axis 0 with size 2.*x \(2, 3\)"),
    (lambda x, v: x[:, [0, 3]], r"getitem: index 3 is out of bounds for axis 1"),
    (lambda x, v: x[0, 0, 0], r"getitem: too many indices: 3 for a 2-d array"),
    (lambda x, v: x[..., 0, ...], r"getitem: an index can only have a single ellipsis"),
    (lambda x, v: fg.max(x, axis=2), r"max: axis 2 is out of range"),
    (lambda x, v: fg.norm(fg.reshape(x, (1, 2, 3)), 2), r"norm: ord=2 with axis=None needs"),
    (lambda x, v: fg.where(x, x, x), r"where: the condition must be bool"),
])
def test_shape_errors(build, message):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        v = fg.placeholder("v", shape=(3,))
        with pytest.raises(fg.ShapeError, match=message) as err:
            build(x, v)
        assert "test_ops_linalg.py" in str(err.value)      # the user's line


def test_unsupported_index_and_ord_are_clear_errors():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        with pytest.raises(TypeError, match="slice bounds must be ints"):
            x[0.5:]
        with pytest.raises(TypeError, match="index node must have an integer dtype"):
            x[fg.placeholder("f", shape=(2,))]
        with pytest.raises(NotImplementedError, match="matrix ord 'nuc'"):
            fg.norm(x, "nuc")
        with pytest.raises(NotImplementedError, match="vector ord 3"):
            fg.norm(x, 3, axis=0)


def test_inferred_shapes_match_numpy():
    a = np.zeros((4, 5, 6))
    with fg.Graph():
        x = fg.placeholder("x", shape=a.shape)
        for index in [(1,), (slice(1, None, 2),), (None, Ellipsis, 0),
                      ([0, 1], slice(None), [2, 3]), (slice(None), [0, 1], [2, 3]),
                      (0, slice(None), [1, 1, 1]),
                      (np.array([[0], [1]]), [0, 1, 2]), (Ellipsis, None),
                      (slice(-2, None), 3, slice(None, None, -2)), (np.ones((4, 5), bool),)]:
            assert x[index].shape == a[index].shape, index
        assert fg.dot(fg.placeholder("p", shape=(3, 2, 4)),
                      fg.placeholder("q", shape=(5, 4, 6))).shape == (3, 2, 5, 6)
        assert fg.trace(x, axis1=2, axis2=0).shape == (5,)
        assert fg.norm(x, 2, axis=(0, 2), keepdims=True).shape == (1, 5, 1)


# -- run-time lengths (None) ----------------------------------------------------------

def test_concatenate_and_getitem_with_run_time_lengths():
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        y = fg.placeholder("y", shape=(None, 3))
        c = fg.concatenate([x, y])
        assert c.shape == (None, 3)
        w = np.arange(18.0).reshape(6, 3)
        loss = fg.sum(c * w[: 1] + c * c)
        gx, gy = fg.grad(loss, [x, y])
        cv, gxv, gyv = fg.compile([c, gx, gy])(x=a, y=b)
        np.testing.assert_array_equal(cv, np.concatenate([a, b]))
        np.testing.assert_allclose(gxv, w[:1] + 2 * a)
        np.testing.assert_allclose(gyv, w[:1] + 2 * b)
        fg.check_grads(loss, [x, y], feed={x: a, y: b})
        assert x[1:].shape == (None, 3) and x[[0, 0]].shape == (2, 3)


def test_getitem_with_an_index_node_is_a_gather_and_scatter():
    table = rng.standard_normal((5, 2))
    idx = np.array([4, 0, 4])
    with fg.Graph():
        w = fg.placeholder("w", shape=(5, 2))
        i = fg.placeholder("i", shape=(None,), dtype="int64")
        rows = w[i]
        assert rows.shape == (None, 2)
        loss = fg.sum(rows * rows)
        g = fg.grad(loss, w)
        rv, gv = fg.compile([rows, g])(w=table, i=idx)
        np.testing.assert_array_equal(rv, table[idx])
        expected = np.zeros_like(table)
        expected[0] = 2 * table[0]
        expected[4] = 4 * table[4]        # row 4 picked twice: both adjoints add up
        np.testing.assert_allclose(gv, expected)
        fg.check_grads(loss, [w], feed={w: table, i: idx})


def test_trace_of_a_matrix_with_run_time_size():
    m = rng.standard_normal((4, 4))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, None))
        t = fg.trace(x)
        np.testing.assert_allclose(fg.run(fg.grad(t, x), {x: m}), np.eye(4))
        fg.check_grads(t * t, [x], feed={x: m})


# -- rules reuse outputs and factorizations ----------------------------------------------

def test_inv_gradient_inverts_nothing_more():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3))
        y = fg.sum(fg.inv(x) * np.arange(9.0).reshape(3, 3))
        ops = planned_ops([y, fg.grad(y, x), fg.jvp(y, x, np.ones((3, 3)))])
        assert ops.count("inv") == 1


def test_solve_gradients_take_one_transposed_solve():
    with fg.Graph():
        a = fg.placeholder("a", shape=(3, 3))
        b = fg.placeholder("b", shape=(3, 2))
        y = fg.sum(fg.solve(a, b) ** 2)
        ga, gb = fg.grad(y, [a, b])
        ops = planned_ops([y, ga, gb])
        assert ops.count("solve") == 2 and "inv" not in ops


def test_det_and_logdet_gradients_share_one_inverse():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3))
        y = fg.det(x) + fg.logdet(x)
        ops = planned_ops([y, fg.grad(y, x)])
        assert ops.count("inv") == 1 and ops.count("det") == 1 and ops.count("logdet") == 1


# -- derivatives beyond the op table -----------------------------------------------------

def test_norm_of_a_scalar_is_abs_with_gradient_sign():
    check_op(fg.norm, np.array(-1.5), reference=np.linalg.norm, order=1)


def test_eigenvector_rule_second_order_on_a_batch():
    x = np.diag([1.0, 2.5, 4.0]) + 0.2 * rng.standard_normal((2, 3, 3))

    def f(a):
        w, v = fg.eigh(a)
        return fg.sum(v ** 4) + fg.sum(w * w)       # v**4 is sign-invariant
    check_op(f, x, order=2)


def test_spectral_norm_hessian_against_finite_differences_of_the_gradient():
    x = rng.standard_normal((3, 2))
    with fg.Graph():
        p = fg.placeholder("p", shape=(3, 2))
        h = fg.run(fg.hessian(fg.norm(p, 2), p), {p: x})
        g = fg.grad(fg.norm(p, 2), p)
        eps = 1e-6
        fd = np.empty((3, 2, 3, 2))
        for k in np.ndindex(3, 2):
            d = np.zeros_like(x)
            d[k] = eps
            fd[(...,) + k] = (fg.run(g, {p: x + d}) - fg.run(g, {p: x - d})) / (2 * eps)
        np.testing.assert_allclose(h, fd, atol=1e-7)
        np.testing.assert_allclose(h, h.transpose(2, 3, 0, 1), atol=1e-12)   # symmetric


def test_top_eigenpair_rules_second_order_both_modes_on_a_batch_and_broadcast():
    """eigh_top (the spectral norm's op): its value against numpy's largest eigenvalue and
    eigenvector, and both rules to second order against finite differences, on a batch of
    symmetric matrices, with the vector part broadcast against a (3,) weight."""
    top = fg.ops.REGISTRY["eigh_top"]
    a = rng.standard_normal((2, 3, 3))
    s = a + a.transpose(0, 2, 1) + np.diag([0.0, 1.0, 4.0])
    weight = np.array([0.5, -1.0, 2.0])

    def f(m):
        v = fg.ops.base.apply(top, m, part="v")
        return fg.ops.base.apply(top, m, part="w") + fg.sum((v * weight) ** 2, -1)

    def reference(m):
        w, v = np.linalg.eigh(m)
        return w[..., -1] + np.sum((v[..., -1] * weight) ** 2, -1)
    check_op(lambda m: f((m + fg.transpose(m, (0, 2, 1))) / 2), s,
             reference=lambda m: reference((m + m.transpose(0, 2, 1)) / 2), order=2)


def test_shaped_like_is_the_identity_in_its_first_argument_to_second_order():
    """The seed op of jvp/vjp/hvp (flowgrad/seeds.py): value t, derivative 1 in t, none
    in the reference x, both rules and their own derivatives against finite differences."""
    op = fg.ops.REGISTRY["shaped_like"]
    t, x = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    check_op(lambda a, b: fg.sin(fg.ops.base.apply(op, a * a, b)) * 2.0, t, x,
             reference=lambda a, b: np.sin(a * a) * 2.0, order=2)


def test_float32_stays_float32():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 3), dtype="float32")
        for y in (fg.det(x), fg.inv(x), fg.norm(x, 2), fg.logsumexp(x), fg.max(x),
                  fg.maximum(x, 0.5), fg.relu(x), fg.eigvalsh(x), x[[0, 1]], fg.trace(x)):
            assert y.dtype == np.float32, y
            g = fg.grad(fg.sum(y), x)
            assert g.dtype == np.float32, y
            v = fg.run(g, {x: np.eye(3, dtype=np.float32) * 2})
            assert v.dtype == np.float32 and np.isfinite(v).all(), y


# -- the op table of API.md §1 is complete ------------------------------------------------

API_TABLE = """linear sigmoid mse l2 bce_with_logits softmax_cross_entropy relu softplus
add sub mul div neg pow exp log log1p sqrt abs tanh sin cos maximum minimum where
sum mean max logsumexp softmax
reshape transpose broadcast_to concatenate stack getitem expand_dims squeeze
matmul dot outer trace det logdet inv solve norm eigvalsh""".split()

PRIMITIVES = {  # op name -> number of arguments
    "log1p": 1, "sqrt": 1, "abs": 1, "maximum": 2, "minimum": 2, "where": 3, "relu": 1,
    "max": 1, "logsumexp": 1, "concatenate": 3, "getitem": 2, "scatter_add": 3,
    "concat_part": 2, "concat_unpart": 2, "trace": 1, "det": 1, "logdet": 1, "inv": 1, "solve": 2,
    "eigvalsh": 1, "eigh_vectors": 1, "norm2": 1, "pow": 2, "eigh_top": 1, "shaped_like": 2,
    "conj": 1, "real": 1, "imag": 1,   # checked against finite differences: test_complex_parts_fd
}


def test_every_op_of_the_api_table_is_public():
    import flowgrad.ops
    for name in API_TABLE:
        assert name in flowgrad.ops.__all__, name
        assert callable(getattr(fg, name)), name
    assert fg.trace is flowgrad.ops.trace      # not the flowgrad.trace module


def test_every_new_primitive_has_both_rules_for_every_argument():
    for name, nargs in PRIMITIVES.items():
        op = fg.ops.REGISTRY[name]
        for k in range(nargs):
            op.vjp_rule(k)          # raises DifferentiationError when missing
            op.jvp_rule(k)
        doc = op.__doc__ or ""
        # the rule's identity is in the docstring: ∂… or an adjoint/tangent x̄ = …
        assert "∂" in doc or " = " in doc, name
