"""Run-time length rules of issue 21/22's ops (flowgrad/engine/lengths.py).

Each case builds a program whose ``None`` lengths must agree through one of the new ops,
runs it with agreeing lengths (checked against numpy), then feeds the first bad length
(one more than its partner): the program's length check must refuse it with a FeedError
naming both placeholders, on the generated path and the reference one alike — never a
numpy error from inside a kernel.
"""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops.base import REGISTRY, apply


@fg.custom_vjp
def _cube(x):
    return x * x * x


@_cube.defvjp
def _cube_vjp(g, ans, x):
    return (g * 3.0 * x * x,)


def _conv_grad_x(a, b):
    w = fg.constant(np.ones((2, 3, 3, 3)))
    return fg.grad(fg.sum(fg.conv2d(a, w, padding="same") * b), a)


def _conv_grad_w(a, b):
    w = fg.variable(np.ones((2, 3, 3, 3)), name="w")
    return fg.grad(fg.sum(fg.conv2d(a, w, padding=1) * b), w)


def _embed(a, b):
    layer = fg.nn.Embedding(5, 2, seed=0)
    return layer(a) * b


# name: (build(a, b), a's shape, b's shape, a's dtype, (a's fed shape, b's fed shape));
# the bad feed gives b's first entry of ``grow`` one more than a's
_CASES = {
    "clip": (lambda a, b: fg.clip(a, -0.5, 0.5) + b, (None,), (None,), (4,), (4,)),
    "clip_bounds": (lambda a, b: fg.clip(a, b, 1.0), (None,), (None,), (4,), (4,)),
    "leaky_relu": (lambda a, b: fg.leaky_relu(a, 0.1) + b, (None,), (None,), (4,), (4,)),
    "elu": (lambda a, b: fg.elu(a) + b, (None,), (None,), (4,), (4,)),
    "gelu": (lambda a, b: fg.gelu(a) + b, (None,), (None,), (4,), (4,)),
    "erf": (lambda a, b: fg.erf(a) + b, (None,), (None,), (4,), (4,)),
    "tan": (lambda a, b: fg.tan(a) + b, (None,), (None,), (4,), (4,)),
    "normal_cdf": (lambda a, b: apply(REGISTRY["normal_cdf"], a) + b,
                   (None,), (None,), (4,), (4,)),
    "var": (lambda a, b: fg.var(a, axis=1) + b, (None, 3), (None,), (4, 3), (4,)),
    "std": (lambda a, b: fg.std(a, axis=0) + b, (3, None), (None,), (3, 4), (4,)),
    "prod": (lambda a, b: fg.prod(a, axis=1) + b, (None, 3), (None,), (4, 3), (4,)),
    "cumsum": (lambda a, b: fg.cumsum(a, axis=0) + b, (None,), (None,), (4,), (4,)),
    "pad": (lambda a, b: fg.pad(a, ((0, 0), (1, 1))) + b, (None, 2), (None, 4), (4, 2),
            (4, 4)),
    "split": (lambda a, b: fg.split(a, 2, axis=1)[1] + b, (None, 4), (None, 2), (4, 4),
              (4, 2)),
    "getitem_reversed": (lambda a, b: a[::-1, 0] + b, (None, 2), (None,), (4, 2), (4,)),
    # the adjoint of a gather is a scatter_add shaped like a: b must have a's rows
    "scatter_add": (lambda a, b: fg.grad(fg.sum(a[np.array([0, 2, 2])] ** 2), a) + b,
                    (None, 2), (None, 2), (4, 2), (4, 2)),
    "reshape": (lambda a, b: fg.reshape(a, (-1, 2, 3)) + b, (None, 6), (None, 2, 3),
                (4, 6), (4, 2, 3)),
    "astype": (lambda a, b: fg.astype(a, "float32") + b, (None,), (None,), (4,), (4,)),
    "einsum": (lambda a, b: fg.einsum("ij,jk->ik", a, b), (2, None), (None, 3), (2, 4),
               (4, 3)),
    "einsum_out": (lambda a, b: fg.einsum("ij->j", a) + b, (2, None), (None,), (2, 4),
                   (4,)),
    "cholesky": (lambda a, b: fg.cholesky(a) + b, (None, 2, 2), (None, 1, 1), (4, 2, 2),
                 (4, 1, 1)),
    "qr": (lambda a, b: fg.qr(a)[1] + b, (None, 3, 2), (None, 1, 1), (4, 3, 2), (4, 1, 1)),
    "svd": (lambda a, b: fg.svd(a)[1] + b, (None, 3, 2), (None, 1), (4, 3, 2), (4, 1)),
    "conv2d_batch": (lambda a, b: fg.conv2d(a, fg.constant(np.ones((2, 3, 3, 3)))) + b,
                     (None, 3, 5, 5), (None, 2, 3, 3), (4, 3, 5, 5), (4, 2, 3, 3)),
    "conv2d_channels": (lambda a, b: fg.conv2d(a, b), (1, None, 5, 5), (2, None, 3, 3),
                        (1, 4, 5, 5), (2, 4, 3, 3)),
    "conv2d_same": (lambda a, b: fg.conv2d(a, fg.constant(np.ones((1, 1, 3, 3))),
                                           padding="same") + b,
                    (1, 1, None, 5), (1, 1, None, 5), (1, 1, 4, 5), (1, 1, 4, 5)),
    "conv2d_grad_x": (_conv_grad_x, (None, 3, 5, 5), (None, 2, 5, 5), (4, 3, 5, 5),
                      (4, 2, 5, 5)),
    "conv2d_grad_w": (_conv_grad_w, (None, 3, 5, 5), (None, 2, 5, 5), (4, 3, 5, 5),
                      (4, 2, 5, 5)),
    "max_pool2d": (lambda a, b: fg.max_pool2d(a, 2) + b, (None, 2, 4, 4), (None, 2, 2, 2),
                   (4, 2, 4, 4), (4, 2, 2, 2)),
    "avg_pool2d": (lambda a, b: fg.avg_pool2d(a, 2) + b, (2, None, 4, 4), (2, None, 2, 2),
                   (2, 4, 4, 4), (2, 4, 2, 2)),
    "max_pool2d_grad": (lambda a, b: fg.grad(fg.sum(fg.max_pool2d(a, 2) * b), a),
                        (None, 2, 4, 4), (None, 2, 2, 2), (4, 2, 4, 4), (4, 2, 2, 2)),
    "avg_pool2d_grad": (lambda a, b: fg.grad(fg.sum(fg.avg_pool2d(a, 2) * b), a),
                        (None, 2, 4, 4), (None, 2, 2, 2), (4, 2, 4, 4), (4, 2, 2, 2)),
    "stop_gradient": (lambda a, b: fg.stop_gradient(a) + b, (None,), (None,), (4,), (4,)),
    "custom_vjp": (lambda a, b: _cube(a) + b, (None,), (None,), (4,), (4,)),
    "remat": (lambda a, b: fg.remat(lambda u: fg.sin(u) * u)(a) + b, (None,), (None,),
              (4,), (4,)),
    "embedding": (_embed, (None,), (None, 1), (4,), (4, 1)),
}


def _program(name, codegen):
    build, sa, sb, fa, fb = _CASES[name]
    with fg.Graph():
        dtype = "int64" if name == "embedding" else "float64"
        a = fg.placeholder("a", shape=sa, dtype=dtype)
        b = fg.placeholder("b", shape=sb)
        prog = fg.compile(build(a, b), codegen=codegen)
    return prog, fa, fb


def _feeds(name, fa, fb, grow):
    rng = np.random.default_rng(0)
    if name == "embedding":
        a = np.arange(fa[0]) % 5
    elif name == "cholesky":   # symmetric positive definite blocks
        m = rng.standard_normal(fa)
        a = m @ np.swapaxes(m, -1, -2) + 2 * np.eye(fa[-1])
    else:
        a = rng.uniform(0.1, 0.9, fa)
    fb = list(fb)
    if grow:
        # the first length of b that a None axis of a must match, one more than a's
        axis = next(k for k, n in enumerate(_CASES[name][2]) if n is None)
        fb[axis] += 1
    return a, rng.uniform(-1.0, 1.0, fb)


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("name", sorted(_CASES))
def test_first_bad_length_is_a_feed_error_naming_the_placeholders(name, codegen):
    prog, fa, fb = _program(name, codegen)
    a, b = _feeds(name, fa, fb, grow=False)
    good = prog(a=a, b=b)
    assert np.all(np.isfinite(np.asarray(good)))
    a, b = _feeds(name, fa, fb, grow=True)
    with pytest.raises(fg.FeedError, match="run-time lengths disagree") as err:
        prog(a=a, b=b)
    assert "'a'" in str(err.value) and "'b'" in str(err.value)
    with pytest.raises(fg.FeedError, match="run-time lengths disagree"):
        prog({"a": a, "b": b})              # the dict binder: the same check


def test_agreeing_lengths_give_numpys_values():
    # the rules never reject a valid feed: a few values against numpy
    x, y = np.array([[0.2, 0.4, 0.5], [1.0, 2.0, 3.0]]), np.array([1.0, -1.0])
    for name, want in [("var", np.var(x, axis=1) + y), ("prod", np.prod(x, axis=1) + y)]:
        prog, _, _ = _program(name, True)
        np.testing.assert_allclose(prog(a=x, b=y), want, rtol=1e-14)
    prog, _, _ = _program("einsum", True)
    p, q = np.arange(6.0).reshape(2, 3), np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(prog(a=p, b=q), p @ q)
    prog, _, _ = _program("pad", False)
    np.testing.assert_array_equal(prog(a=x.T[:2], b=np.ones((2, 4))),
                                  np.pad(x.T[:2], ((0, 0), (1, 1))) + 1.0)


def test_unrelated_lengths_stay_free_through_the_new_ops():
    # a padded axis, a convolution's strided spatial axis and einsum's distinct letters
    # tie nothing: differing lengths there are valid feeds
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        b = fg.placeholder("b", shape=(None,))
        prog = fg.compile(fg.sum(fg.pad(a, 1)) + fg.einsum("i,j->", a, b))
        assert prog(a=np.ones(2), b=np.ones(5)) == 2.0 + 10.0
        x = fg.placeholder("x", shape=(1, 1, None, None))
        y = fg.placeholder("y", shape=(1, 1, None, None))
        out = fg.sum(fg.conv2d(x, fg.constant(np.ones((1, 1, 2, 2))), stride=2)) + fg.sum(y)
        assert fg.compile(out)(x=np.ones((1, 1, 4, 4)), y=np.ones((1, 1, 3, 3))) == 16 + 9


# -- reshape of run-time lengths: a shape no feed can fit is refused when built -------------

@pytest.mark.parametrize("shape, ok", [((1,), False), ((2,), False), ((3,), True),
                                       ((4,), False), ((6,), True), ((0,), True),
                                       ((2, 3), True), ((3, 1), True), ((5, 1), False)])
def test_reshape_of_a_run_time_length_into_a_fixed_shape(shape, ok):
    # (3, None) holds 3·n entries: a fixed shape of 1, 2 or 4 entries fits no n (it used
    # to fail only when run); 0, 3 and 6 entries fit n = 0, 1, 2
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, None))
        if not ok:
            with pytest.raises(fg.ShapeError, match=r"multiple of 3 .*, %d is not"
                               % int(np.prod(shape))):
                fg.reshape(x, shape)
            return
        y = fg.reshape(x, shape)
        n = int(np.prod(shape)) // 3
        value = np.arange(3.0 * n).reshape(3, n)
        np.testing.assert_array_equal(fg.run(y, {x: value}), value.reshape(shape))


def test_reshape_of_no_entries_and_a_minus_one_beside_a_zero():
    with fg.Graph():
        z = fg.placeholder("z", shape=(0, None))
        assert fg.run(fg.reshape(z, (0, 2)), {z: np.zeros((0, 7))}).shape == (0, 2)
        with pytest.raises(fg.ShapeError, match="no entries"):
            fg.reshape(z, (1,))
        x = fg.placeholder("x", shape=(3, None))
        with pytest.raises(fg.ShapeError, match="-1 beside a 0"):
            fg.reshape(x, (0, -1))     # numpy: "cannot reshape array of size 0 into (0, -1)"
        assert fg.reshape(x, (3, -1)).shape == (3, None)


# -- every op says what it ties -------------------------------------------------------------

#: ops whose output holds no run-time length of their inputs (0-d or fixed shapes), and
#: basis_map, whose body is a program of its own
TIES_NOTHING = {"l2", "reduced_size", "concat_offsets", "basis_map",
                "batch_norm_count"}   # a 0-d count of its input's (shape-only) lengths


def test_every_registered_op_has_a_length_rule():
    # a new op without a rule lets a mismatched feed through to numpy (issue 22's ops had
    # none): this fails until it has one, or is listed above with its reason
    from flowgrad.engine.lengths import RULES
    from flowgrad.ops.base import REGISTRY
    # only flowgrad's own ops: other tests register user ops (fg.custom_op …) in the same
    # process, and those take the user-op rule, not a table entry
    own = {name for name, op in REGISTRY.items()
           if getattr(op, "__module__", "").startswith("flowgrad.")}
    missing = sorted(own - set(RULES) - TIES_NOTHING)
    assert not missing, f"ops without a run-time length rule (flowgrad/engine/lengths.py): {missing}"


def test_reshape_ties_only_a_length_it_determines():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None, 6))
        b = fg.placeholder("b", shape=(None,))
        # (None, 6) -> (-1, 3): twice a's rows, not a's rows: b is free of a
        prog = fg.compile(fg.sum(fg.reshape(a, (-1, 3))) + fg.sum(b))
        assert prog(a=np.ones((2, 6)), b=np.ones(5)) == 12.0 + 5.0


# -- every rule against real shapes ----------------------------------------------------------

def _link_shapes(graph, vals, nid):
    """Each link of node ``nid``'s rule as (length, length) from the computed values."""
    from flowgrad.engine.lengths import RULES
    d = graph.nx.nodes[nid]
    ins = d["inputs"]
    rule = RULES.get(d["op"].name) if d["op"] is not None else None
    if rule is None or any(i not in vals for i in ins) or nid not in vals:
        return
    shape = lambda i: np.shape(vals[i])   # noqa: E731
    for link in rule(d["shape"], [graph.nx.nodes[i]["shape"] for i in ins], d["attrs"]):
        if link[0] == "in":
            (i, a), (j, b) = link[1], link[2]
            yield link, shape(ins[i])[a], shape(ins[j])[b]
        else:
            i, a, o = link
            yield link, shape(ins[i])[a], shape(nid)[o]


def _case_ids():
    from op_cases import CASES
    return [c[0] for c in CASES]


@pytest.mark.parametrize("case", _case_ids())
def test_every_rule_holds_on_the_values_of_the_op_cases(case):
    # each op case built on placeholders whose every length is None (where the op takes
    # that), with its gradients: every axis a rule ties has one length in the values
    from op_cases import CASES
    _, fn, arrays, _ = next(c for c in CASES if c[0] == case)
    for unknown in (True, False):
        with fg.Graph() as g:
            xs = [fg.placeholder(f"x{k}", shape=(None,) * a.ndim if unknown else a.shape)
                  for k, a in enumerate(arrays)]
            try:
                y = fn(*xs)
                outs = [y] + (fg.grad(fg.sum(y * y), xs) if y.dtype.kind == "f" else [])
            except (fg.FlowgradError, TypeError, ValueError):
                continue        # an op that needs lengths known when built
            prog = fg.Program(outs, keep_all=True)
            try:
                vals = prog.values(**{f"x{k}": a for k, a in enumerate(arrays)})
            except fg.FeedError:
                continue        # a broadcast 1 fed where the graph says None: refused
        for nid in sorted(vals):
            for link, m, n in _link_shapes(g, vals, nid):
                assert m == n, (case, g.nx.nodes[nid]["op"].name, link, m, n)
