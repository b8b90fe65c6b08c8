"""Batching rules of indexing with batched index nodes, embeddings, convolution and
pooling (flowgrad/batching_index.py, flowgrad/batching_conv.py; issue 21).

Each case: fg.vectorize on a batch == the per-example graph run on each example and
stacked (np.stack of a Python loop), to 1e-12 in float64; per-example gradients
(vectorize of grad) and forward tangents likewise; fg.jacobian with
method="vectorize" (which raises instead of falling back to the basis loop) against
method="map" (the basis loop) and, for a convolution, against PyTorch float64.
"""
import itertools

import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.batching import NOT_YET, RULES

B = 3
_CALLS = itertools.count()


def loop_check(fn, shapes, rng, none=False, dtypes=None, values=None):
    """vectorize(fn) over a batch == fn on each example, stacked. ``fn`` gets the
    per-example placeholders; returns the batched values."""
    dtypes, tag = dtypes or {}, next(_CALLS)     # fresh placeholder names per call
    per = [fg.placeholder(f"p{tag}_{k}", shape=s, dtype=dtypes.get(k, "float64"))
           for k, s in enumerate(shapes)]
    bat = [fg.placeholder(f"b{tag}_{k}", shape=(None if none else B,) + s,
                          dtype=dtypes.get(k, "float64")) for k, s in enumerate(shapes)]
    out = fn(*per)
    outs = out if isinstance(out, (list, tuple)) else [out]
    batched = fg.vectorize(list(outs), dict(zip(per, bat)))
    vals = values if values is not None else [rng.standard_normal((B,) + s) for s in shapes]
    got = fg.run(batched, dict(zip(bat, vals)))
    prog = fg.compile(list(outs))
    rows = [prog(dict(zip(per, [v[i] for v in vals]))) for i in range(B)]
    for k, (g, o) in enumerate(zip(got, outs)):
        want = np.stack([r[k] for r in rows])
        assert g.shape == want.shape and g.dtype == want.dtype
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    return got


def test_the_ops_of_this_file_have_rules():
    for name in ("embedding_index", "conv2d", "conv2d_grad_w", "conv2d_grad_x",
                 "max_pool2d", "max_pool2d_gather", "max_pool2d_scatter", "avg_pool2d",
                 "avg_pool2d_grad"):
        assert name in RULES and name not in NOT_YET


# -- indexing with batched index nodes ---------------------------------------------------------

def _index_values(rng):
    return [rng.standard_normal((B, 5, 3, 2)), rng.integers(0, 3, (B, 2)),
            rng.integers(0, 2, (B, 2))]


_INT = {1: "int64", 2: "int64"}


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_getitem_with_batched_index_nodes(none, rng):
    """Batched x or not, the block of advanced indices in front, after a slice, or
    split by a slice (numpy then puts it first), ints among them."""
    W = fg.variable(rng.standard_normal((5, 3, 2)), name="W")
    loop_check(lambda x, i, j: [x[i], x[:, i], x[i, :, j], x[:, i, j], x[1, i],
                                x[None, :, i], x[..., j], W[i], W[:, i], W[i, :, j],
                                W[:, i, j], W[None, 2:, i], fg.take(W, j, axis=2)],
               [(5, 3, 2), (2,), (2,)], rng, none=none, dtypes=_INT,
               values=_index_values(rng))


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_per_example_gradients_through_batched_indices(none, rng):
    """The gradient graphs hold scatter_adds with batched index nodes: per-example
    gradients of x and of an unbatched W (each example's own scatter)."""
    W = fg.variable(rng.standard_normal((5, 3, 2)), name="W")

    def f(x, i, j):
        y = fg.sum(fg.tanh(x[i, :, j]) ** 2) + fg.sum(W[:, i] * x[:, i]) + \
            fg.sum(x[[0, 1], :, [1, 0]] ** 3) + fg.sum(W[i, :, j] * x[1:3, :, 0])
        return fg.grad(y, [x, W])
    gx, gW = loop_check(f, [(5, 3, 2), (2,), (2,)], rng, none=none, dtypes=_INT,
                        values=_index_values(rng))
    assert gW.shape == (B, 5, 3, 2)


def test_advanced_indices_split_by_a_slice_batch_now(rng):
    """Once refused (numpy moves the block in front of the batch axis): now a batch
    index in front keeps the examples apart; against the per-example numpy result."""
    x = fg.placeholder("x", shape=(2, 3, 2))
    X = fg.placeholder("X", shape=(4, 2, 3, 2))
    Xv = rng.standard_normal((4, 2, 3, 2))
    got = fg.run(fg.vectorize(x[[0, 1], :, [1, 0]], {x: X}), {X: Xv})
    np.testing.assert_array_equal(got, np.stack([v[[0, 1], :, [1, 0]] for v in Xv]))


# -- embeddings -----------------------------------------------------------------------------------

def _embedding_loss(emb, tok, c):
    return fg.sum(fg.tanh(emb(tok)) * c)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_embedding_lookups_and_per_example_table_gradients(none, rng):
    """A batch of token sequences, an unbatched table: the lookups and each example's
    own table gradient (rows of its tokens only, repeated tokens added), against
    the closed form."""
    emb = fg.nn.Embedding(6, 4, seed=0)
    c = fg.constant(rng.standard_normal((5, 4)))
    tok = fg.placeholder("tok", shape=(5,), dtype="int64")
    loss = _embedding_loss(emb, tok, c)
    T = fg.placeholder("T", shape=(None if none else B, 5), dtype="int64")
    Tv = np.array([[0, 1, 1, 5, 2], [3, 3, 3, 3, 3], [5, 4, 0, 2, 1]])
    h = fg.vectorize(emb(tok), {tok: T})
    g = fg.vectorize(fg.grad(loss, emb.table), {tok: T})
    hv, gv = fg.run([h, g], {T: Tv})
    table = emb.table.value
    np.testing.assert_array_equal(hv, table[Tv])
    want = np.zeros((B, 6, 4))
    for b in range(B):
        for t in range(5):
            want[b, Tv[b, t]] += (1 - np.tanh(table[Tv[b, t]]) ** 2) * c.value[t]
    np.testing.assert_allclose(gv, want, rtol=1e-12, atol=1e-15)


def test_a_batched_index_out_of_range_stops_the_run():
    emb = fg.nn.Embedding(6, 2, seed=0)
    tok = fg.placeholder("tok", shape=(2,), dtype="int64")
    T = fg.placeholder("T", shape=(2, 2), dtype="int64")
    h = fg.vectorize(emb(tok), {tok: T})
    fg.run(h, {T: np.array([[0, 5], [5, 0]])})                   # the last valid row
    with pytest.raises((fg.RunError, IndexError), match="index 6"):
        fg.run(h, {T: np.array([[0, 5], [6, 0]])})               # the first bad value


def test_an_embedding_jacobian_takes_the_vectorized_path(rng):
    emb = fg.nn.Embedding(5, 3, seed=1)
    tok = fg.constant(np.array([0, 4, 4, 2]))
    w = fg.placeholder("w", shape=(3,))
    y = fg.tanh(emb(tok) @ w)
    J = fg.jacobian(y, w, method="vectorize")
    Jm = fg.jacobian(y, w, method="map")
    wv = rng.standard_normal(3)
    a, b = fg.run([J, Jm], {w: wv})
    rows = emb.table.value[[0, 4, 4, 2]]
    np.testing.assert_allclose(a, (1 - np.tanh(rows @ wv) ** 2)[:, None] * rows, rtol=1e-13)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- convolution and pooling -----------------------------------------------------------------------

CONV_SETTINGS = [(1, "valid"), (2, 1), ((2, 1), "same")]


def _kernel(rng):
    return fg.variable(rng.standard_normal((4, 2, 3, 3)), name="K")


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("stride, padding", CONV_SETTINGS)
def test_conv2d_with_a_batched_input_kernel_or_both(stride, padding, none, rng):
    K = _kernel(rng)
    X0 = fg.constant(rng.standard_normal((2, 2, 7, 6)))
    conv = lambda x, w: fg.conv2d(x, w, stride=stride, padding=padding)  # noqa: E731
    loop_check(lambda x: conv(x, K), [(2, 2, 7, 6)], rng, none=none)
    loop_check(lambda w: conv(X0, w), [(4, 2, 3, 3)], rng, none=none)
    loop_check(lambda x, w: conv(x, w), [(2, 2, 7, 6), (4, 2, 3, 3)], rng, none=none)


def _net(K, x, w, stride, padding):
    h = fg.tanh(fg.conv2d(x, K, stride=stride, padding=padding))
    y = fg.conv2d(h, w, padding=1)
    return fg.sum(fg.max_pool2d(y, 2) ** 2) + fg.sum(fg.avg_pool2d(y, (2, 1)) ** 3)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("stride, padding", CONV_SETTINGS)
def test_per_example_gradients_and_tangents_of_a_conv_net(stride, padding, none, rng):
    """Both kernels and the input per example: conv2d_grad_w and conv2d_grad_x with
    both operands batched, the pools' scatters and gathers; forward tangents too."""
    K = _kernel(rng)
    shapes = [(2, 2, 7, 6), (3, 4, 3, 3)]
    loop_check(lambda x, w: fg.grad(_net(K, x, w, stride, padding), [K, x, w]), shapes,
               rng, none=none)
    ones = [fg.constant(np.ones(s)) for s in [(4, 2, 3, 3)] + shapes]
    loop_check(lambda x, w: fg.jvp(_net(K, x, w, stride, padding), [K, x, w], ones),
               shapes, rng, none=none)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_per_example_kernel_gradients_and_their_second_derivatives(none, rng):
    """The classic per-example gradient (x batched, the kernel shared) and a
    per-example Hessian-vector product through it."""
    K = _kernel(rng)

    def g(x):
        return fg.grad(fg.sum(fg.tanh(fg.conv2d(x, K, stride=2, padding=1)) ** 2), K)
    loop_check(g, [(1, 2, 7, 6)], rng, none=none)
    loop_check(lambda x, v: fg.grad(fg.sum(g(x) * v), [K, x]),
               [(1, 2, 7, 6), (4, 2, 3, 3)], rng, none=none)


def test_per_example_kernel_gradients_against_torch(rng):
    torch = pytest.importorskip("torch")
    K = _kernel(rng)
    x = fg.placeholder("x", shape=(1, 2, 7, 6))
    X = fg.placeholder("X", shape=(None, 1, 2, 7, 6))
    loss = fg.sum(fg.tanh(fg.conv2d(x, K, stride=2, padding=1)) ** 2)
    Xv = rng.standard_normal((B, 1, 2, 7, 6))
    got = fg.run(fg.vectorize(fg.grad(loss, K), {x: X}), {X: Xv})
    for b in range(B):
        kt = torch.tensor(K.value, requires_grad=True)
        y = torch.nn.functional.conv2d(torch.tensor(Xv[b]), kt, stride=2, padding=1)
        torch.sum(torch.tanh(y) ** 2).backward()
        np.testing.assert_allclose(got[b], kt.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_single_batched_operand_paths_of_the_conv_gradients(rng):
    """conv2d_grad_w with only x or only the cotangent batched (B into channels),
    conv2d_grad_x with only the kernel batched: reached through nested derivatives."""
    x0 = fg.variable(rng.standard_normal((2, 2, 6, 5)), name="x0")
    C = fg.constant(rng.standard_normal((2, 4, 2, 2)))
    gw = lambda x, w: fg.grad(fg.sum(fg.conv2d(x, w, stride=2) * C), w)  # noqa: E731
    gx = lambda x, w: fg.grad(fg.sum(fg.conv2d(x, w, stride=2) * C), x)  # noqa: E731
    K = _kernel(rng)
    loop_check(lambda x: gw(x, K), [(2, 2, 6, 5)], rng, none=True)       # x only
    loop_check(lambda w: gx(x0, w), [(4, 2, 3, 3)], rng, none=True)      # w only
    loop_check(lambda c: fg.grad(fg.sum(fg.conv2d(x0, K, stride=2) * c), K),
               [(2, 4, 2, 2)], rng)                                       # cotangent only


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_conv_jacobians_take_the_vectorized_path(mode, rng):
    """method='vectorize' raises rather than loop: the vectorized Jacobians with
    respect to the input and the kernel equal the basis loop."""
    K = fg.placeholder("K", shape=(2, 2, 2, 2))
    x = fg.placeholder("x", shape=(1, 2, 4, 4))
    y = fg.max_pool2d(fg.tanh(fg.conv2d(x, K, padding=1)), 2) + \
        fg.avg_pool2d(fg.conv2d(x, K, stride=2, padding=1), 2, stride=1)
    feed = {K: rng.standard_normal((2, 2, 2, 2)), x: rng.standard_normal((1, 2, 4, 4))}
    for wrt in (K, x):
        J = fg.jacobian(y, wrt, mode=mode, method="vectorize")
        Jm = fg.jacobian(y, wrt, mode=mode, method="map")
        a, b = fg.run([J, Jm], feed)
        assert a.shape == y.shape + wrt.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    H = fg.hessian(fg.sum(fg.tanh(fg.conv2d(x, K)) ** 2), K, method="vectorize")
    Hm = fg.hessian(fg.sum(fg.tanh(fg.conv2d(x, K)) ** 2), K, method="map")
    a, b = fg.run([H, Hm], feed)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_both_operands_batched_with_a_run_time_height_is_refused_by_name(rng):
    """The per-offset form needs the output's height and width at build time; with
    only x batched, a run-time height merges fine."""
    from flowgrad.batching import BatchingError
    x = fg.placeholder("x", shape=(1, 2, None, 5))
    w = fg.placeholder("w", shape=(4, 2, 3, 3))
    X = fg.placeholder("X", shape=(B, 1, 2, None, 5))
    Wb = fg.placeholder("Wb", shape=(B, 4, 2, 3, 3))
    y = fg.conv2d(x, w)
    with pytest.raises(BatchingError, match=r"'conv2d' .* run time"):
        fg.vectorize(y, {x: X, w: Wb})
    Xv, wv = rng.standard_normal((B, 1, 2, 6, 5)), rng.standard_normal((4, 2, 3, 3))
    got = fg.run(fg.vectorize(y, {x: X}), {X: Xv, w: wv})
    prog = fg.compile(y)
    np.testing.assert_allclose(got, np.stack([prog({x: v, w: wv}) for v in Xv]),
                               rtol=1e-12, atol=1e-13)


# -- custom functions and remat blocks ---------------------------------------------------------

def _scaled_clip():
    """f(x) = x · Σx with a rule that is NOT its derivative (clipped, then scaled by
    Σx): a test would see the true derivative instead of the rule. The rule reduces
    over x, so on batched nodes it would mix examples."""
    @fg.custom_vjp
    def f(x):
        return x * fg.sum(x)

    @f.defvjp
    def f_vjp(g, ans, x):
        return (fg.clip(g, -0.5, 0.5) * fg.sum(x) + fg.sum(g * x),)
    return f


def _rule_value(g, x, clip=True):
    return (np.clip(g, -0.5, 0.5) if clip else g) * x.sum() + (g * x).sum()


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_per_example_gradients_through_a_custom_vjp_function_use_its_rule(none, rng):
    f = _scaled_clip()
    w = fg.variable(rng.standard_normal(3), name="w")
    c = rng.standard_normal(3)
    loop_check(lambda x: [f(x * w), fg.grad(fg.sum(f(x * w) * fg.constant(c)), w)],
               [(3,)], rng, none=none)


def test_the_rule_of_a_custom_function_in_a_per_example_gradient_is_the_users(rng):
    f = _scaled_clip()
    w = fg.variable(rng.standard_normal(3), name="w")
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(None, 3))
    c = np.array([3.0, -0.2, 0.1])                     # clipped: 3.0 → 0.5
    gw = fg.vectorize(fg.grad(fg.sum(f(x * w) * fg.constant(c)), w), {x: X})
    Xv = rng.standard_normal((4, 3))
    want = np.stack([_rule_value(c, xv * w.value) * xv for xv in Xv])
    np.testing.assert_allclose(fg.run(gw, {X: Xv}), want, rtol=1e-13)


def _scaled_clip_per_example(Xv, w, ẇ=None):
    """The gradient of Σ f(x_b · w) (g = 1, the rule clipping it to ½) and the tangent
    along ẇ (the rule's linearisation at 0, transposed), example by example in numpy."""
    grads, tangents = [], []
    for xv in Xv:
        u = xv * w
        grads.append(_rule_value(np.ones(3), u) * xv)
        if ẇ is not None:
            t = xv * ẇ                       # g ↦ g Σu + 1 (u·g), transposed
            tangents.append(t * u.sum() + u * t.sum())
    return np.sum(grads, axis=0), np.sum(tangents, axis=0) if tangents else None


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_a_vectorized_custom_call_is_differentiated_with_its_rule_per_example(none, rng):
    """Its rule, written for one example, reduces over x: applied to the batched nodes
    it would sum across examples. It is applied example by example (vectorized, as JAX
    vmaps a custom_vjp's rule), in both modes, as the loop over examples gives."""
    f = _scaled_clip()
    w = fg.variable(rng.standard_normal(3), name="w")
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(None if none else 4, 3))
    y = fg.vectorize(f(x * w), {x: X})
    Xv = rng.standard_normal((4, 3))
    ẇ = rng.standard_normal(3)
    np.testing.assert_allclose(fg.run(y, {X: Xv}),
                               np.stack([v * w.value * (v * w.value).sum() for v in Xv]),
                               rtol=1e-13)
    gw, jw = fg.run([fg.grad(fg.sum(y), w), fg.jvp(fg.sum(y), w, ẇ)], {X: Xv})
    want_g, want_j = _scaled_clip_per_example(Xv, w.value, ẇ)
    np.testing.assert_allclose(gw, want_g, rtol=1e-12)
    np.testing.assert_allclose(jw, want_j.sum(), rtol=1e-12)


def _renamed_batched_call(tmp_path, name):
    """A saved vectorized call of _scaled_clip whose function the file names ``name``
    instead (as an older or a hostile file would), loaded, with the built graph's out
    and X."""
    import zipfile
    f = _scaled_clip()
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(None, 3))
    out = fg.vectorize(f(x), {x: X}).named("out")
    path = fg.save_graph(tmp_path / "new.fg", [out])
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    text = members["graph.json"].decode()
    assert text.count("flowgrad.vectorized_call[1]:") == 1
    members["graph.json"] = re.sub(r"flowgrad\.vectorized_call\[1\]:[^\"]*",
                                   name.replace("\\", "\\\\"), text).encode()
    renamed = tmp_path / "renamed.fg"
    with zipfile.ZipFile(renamed, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return fg.load_graph(renamed), out, X


def test_a_batched_call_without_its_rule_is_refused_naming_the_call_and_the_line(tmp_path):
    """Where the batched call's function cannot hold the user's (a graph file written
    before batched calls kept it names the generic ``flowgrad.vectorized_call``), its
    derivative is a DifferentiationError naming the call and the line that asked."""
    g, out, X = _renamed_batched_call(tmp_path, "flowgrad.vectorized_call")
    Xv = np.ones((2, 3))
    np.testing.assert_array_equal(fg.run(g.by_name("out"), {"X": Xv}), fg.run(out, {X: Xv}))
    with pytest.raises(fg.DifferentiationError) as e:
        fg.grad(fg.sum(g.by_name("out")), g.by_name("X"))   # the line named below
    assert "call 'out'" in str(e.value) and "Differentiate first" in str(e.value)
    assert f"test_vectorize_rules.py:{e.tb.tb_lineno}" in str(e.value)


def test_a_file_naming_a_batched_function_for_other_inputs_is_refused(tmp_path):
    """A file whose call names a batched function of two inputs for a call of one."""
    name = "flowgrad.vectorized_call[11]:" + _scaled_clip().name
    g, _, _ = _renamed_batched_call(tmp_path, name)
    with pytest.raises(fg.DifferentiationError, match="has 1 inputs, but its function names 2"):
        fg.grad(fg.sum(g.by_name("out")), g.by_name("X"))


@pytest.mark.parametrize("extra, refused", [(0, False), (1, True)])
def test_a_batched_call_whose_name_a_graph_file_cannot_hold_is_refused(extra, refused):
    """The batched call's function is named ``flowgrad.vectorized_call[1]:`` + the
    user's name, which a graph file holds up to MAX_NAME characters: at 28 + 972 it is
    differentiated with the user's rule, one character more is refused by name."""
    from flowgrad.custom import MAX_NAME

    @fg.custom_vjp(name="n" * (MAX_NAME - 28 + extra))
    def f(x):
        return fg.sin(x)

    @f.defvjp
    def f_vjp(g, ans, x):
        return (g * fg.cos(x),)
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(2, 3))
    y = fg.sum(fg.vectorize(f(x), {x: X}))
    Xv = np.array([[0.1, 0.2, 0.3], [1.0, -1.0, 2.0]])
    if refused:
        with pytest.raises(fg.DifferentiationError, match="longer than 1000 characters"):
            fg.grad(y, X)
    else:
        np.testing.assert_allclose(fg.run(fg.grad(y, X), {X: Xv}), np.cos(Xv), rtol=1e-15)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_jacobians_and_hessians_of_custom_functions_take_the_vectorized_path(mode, rng):
    f = _scaled_clip()

    @fg.custom_jvp
    def log1pexp(x):
        return fg.log1p(fg.exp(x))

    @log1pexp.defjvp
    def log1pexp_jvp(tangents, ans, x):
        return tangents[0] * fg.sigmoid(x)

    x = fg.placeholder("x", shape=(4,))
    y = f(x) + log1pexp(x)
    J = fg.jacobian(y, x, mode=mode, method="vectorize")
    Jm = fg.jacobian(y, x, mode=mode, method="map")
    xv = np.array([0.3, -0.1, 0.05, 0.2])
    a, b = fg.run([J, Jm], {x: xv})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # the user's rules, row by row: reverse mode clips each unit cotangent to 0.5;
    # forward mode transposes the rule's linearisation at 0, where the clip is 1
    s = 1 / (1 + np.exp(-xv))
    want = np.stack([_rule_value(np.eye(4)[k], xv, mode == "rev") for k in range(4)]) + \
        np.diag(s)
    np.testing.assert_allclose(a, want, rtol=1e-12)
    H = fg.hessian(fg.sum(log1pexp(x) ** 2), x, method="vectorize")
    Hm = fg.hessian(fg.sum(log1pexp(x) ** 2), x, method="map")
    a, b = fg.run([H, Hm], {x: xv})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    sp = np.log1p(np.exp(xv))
    np.testing.assert_allclose(a, np.diag(2 * s * s + 2 * sp * s * (1 - s)), rtol=1e-12)


def _block(h, W):
    return fg.tanh(h @ W) * 2.0 + fg.sin(h)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_remat_blocks_batch_and_differentiate_before_or_after(none, rng):
    """A remat call keeps its rule (a replay of the block from the graph): per-example
    gradients, and the gradient of a vectorized loss, both equal the loop."""
    W = fg.variable(rng.standard_normal((3, 3)), name="W")
    V = fg.variable(rng.standard_normal(3), name="V")
    loss = lambda x: fg.sum(fg.remat(_block)(x * V, W) ** 2)          # noqa: E731
    loop_check(lambda x: [loss(x)] + fg.grad(loss(x), [W, V, x]), [(3,)], rng, none=none)
    x = fg.placeholder("xr", shape=(3,))
    X = fg.placeholder("XR", shape=(None if none else 4, 3))
    total = fg.sum(fg.vectorize(loss(x), {x: X}))
    assert "remat_after" in {n.op.name for n in W.graph.nodes if n.op is not None}
    gW, gV = fg.grad(total, [W, V])
    Xv = rng.standard_normal((4, 3))
    got = fg.run([gW, gV], {X: Xv})
    prog = fg.compile(fg.grad(loss(x), [W, V]))
    rows = [prog({x: v}) for v in Xv]
    for k in range(2):
        np.testing.assert_allclose(got[k], sum(r[k] for r in rows), rtol=1e-12)


def test_a_remat_jacobian_takes_the_vectorized_path(rng):
    W = fg.variable(rng.standard_normal((3, 3)), name="W")
    x = fg.placeholder("x", shape=(3,))
    y = fg.remat(_block)(x, W)
    J = fg.jacobian(y, x, mode="rev", method="vectorize")
    Jm = fg.jacobian(y, x, mode="rev", method="map")
    xv = rng.standard_normal(3)
    a, b = fg.run([J, Jm], {x: xv})
    t = np.tanh(xv @ W.value)
    np.testing.assert_allclose(a, 2 * (W.value * (1 - t * t)).T + np.diag(np.cos(xv)),
                               rtol=1e-12)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- loops ----------------------------------------------------------------------------------------

def _rnn(W, h0, xs, reverse=False):
    def step(h, x):
        h2 = fg.tanh(h @ W + x)
        return h2, fg.sum(h2 * h2)
    return fg.scan(step, h0, xs, reverse=reverse)


def _rnn_numpy(Wv, h, xs, reverse=False):
    ys = [None] * len(xs)
    for t in (range(len(xs))[::-1] if reverse else range(len(xs))):
        h = np.tanh(h @ Wv + xs[t])
        ys[t] = np.sum(h * h)
    return h, np.array(ys)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_batches_its_carry_its_xs_or_a_capture(reverse, none, rng):
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
    zero, ones = fg.constant(np.zeros(3)), fg.constant(np.ones((4, 3)))
    got = loop_check(lambda h0, xs: list(_rnn(W, h0, xs, reverse)), [(3,), (4, 3)], rng,
                     none=none)
    loop_check(lambda xs: list(_rnn(W, zero, xs, reverse)), [(4, 3)], rng, none=none)
    loop_check(lambda h0: list(_rnn(W, h0, ones, reverse)), [(3,)], rng, none=none)
    loop_check(lambda v: list(_rnn(W * v[0], zero, ones, reverse)), [(3,)], rng, none=none)
    assert got[1].shape == (B, 4)                    # ys: (B, T), the batch in front


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_per_example_gradients_and_tangents_through_a_scan(none, rng):
    """The derivative loops (a scan backwards over the body's vjp reading the forward's
    stacked carries, a scan carrying tangents) batch like any scan."""
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")

    def loss(h0, xs):
        h, ys = _rnn(W, h0, xs)
        return fg.sum(ys) + fg.sum(h * h)
    loop_check(lambda h0, xs: fg.grad(loss(h0, xs), [W, h0, xs]), [(3,), (4, 3)], rng,
               none=none)
    ts = [fg.constant(np.ones(s)) for s in [(3, 3), (3,), (4, 3)]]
    loop_check(lambda h0, xs: fg.jvp(loss(h0, xs), [W, h0, xs], ts), [(3,), (4, 3)], rng,
               none=none)


def test_per_example_rnn_gradients_against_torch(rng):
    torch = pytest.importorskip("torch")
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
    xs = fg.placeholder("xs", shape=(4, 3))
    XS = fg.placeholder("XS", shape=(None, 4, 3))
    loss = fg.sum(_rnn(W, fg.constant(np.zeros(3)), xs)[1])
    Xv = rng.standard_normal((B, 4, 3))
    got = fg.run(fg.vectorize(fg.grad(loss, W), {xs: XS}), {XS: Xv})
    for b in range(B):
        wt = torch.tensor(W.value, requires_grad=True)
        h, total = torch.zeros(3, dtype=torch.float64), 0
        for t in range(4):
            h = torch.tanh(h @ wt + torch.tensor(Xv[b, t]))
            total = total + torch.sum(h * h)
        total.backward()
        np.testing.assert_allclose(got[b], wt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_nested_scans_and_their_gradients(none, rng):
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")

    def nested(h0, xs):
        def outer(h, x):
            inner, _ = fg.scan(lambda c, t: (fg.tanh(c @ W + t), None), h,
                               fg.stack([x, x * 0.5]))
            return inner, fg.sum(inner)
        return list(fg.scan(outer, h0, xs))
    loop_check(nested, [(3,), (4, 3)], rng, none=none)
    loop_check(lambda h0, xs: fg.grad(fg.sum(nested(h0, xs)[1]), [W, h0, xs]),
               [(3,), (4, 3)], rng, none=none)


def test_sequences_of_run_time_length_and_a_scan_without_xs(rng):
    """Per-example sequences whose length is known at run time (the batch too), and a
    scan of length=3 over a batched carry alone."""
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
    xs = fg.placeholder("xs", shape=(None, 3))
    XS = fg.placeholder("XS", shape=(None, None, 3))
    h, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h)), fg.constant(np.zeros(3)),
                    xs)
    outs = [h, ys, fg.grad(fg.sum(ys) + fg.sum(h), W)]
    Xv = rng.standard_normal((B, 5, 3))
    got = fg.run(fg.vectorize(outs, {xs: XS}), {XS: Xv})
    prog = fg.compile(outs)
    for k, g in enumerate(got):
        np.testing.assert_allclose(g, np.stack([prog({xs: v})[k] for v in Xv]),
                                   rtol=1e-12, atol=1e-13)
    loop_check(lambda h0: fg.scan(lambda c, x: (fg.sin(c) @ W, None), h0, length=3)[0],
               [(3,)], rng, none=True)


def test_a_vectorized_scan_differentiates_again(rng):
    """The batched loop is an ordinary scan: the gradient of a batch-summed loss is the
    sum of the per-example gradients."""
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
    h0 = fg.placeholder("h0", shape=(3,))
    H0 = fg.placeholder("H0", shape=(None, 3))
    xs = fg.constant(rng.standard_normal((4, 3)))
    h, ys = _rnn(W, h0, xs)
    total = fg.sum(fg.vectorize(fg.sum(ys) + fg.sum(h), {h0: H0}))
    gW, gH = fg.grad(total, [W, H0])
    Hv = rng.standard_normal((B, 3))
    got_W, got_H = fg.run([gW, gH], {H0: Hv})
    prog = fg.compile(fg.grad(fg.sum(ys) + fg.sum(h), [W, h0]))
    rows = [prog({h0: v}) for v in Hv]
    np.testing.assert_allclose(got_W, sum(r[0] for r in rows), rtol=1e-12)
    np.testing.assert_allclose(got_H, np.stack([r[1] for r in rows]), rtol=1e-12)


def test_a_carry_no_example_changes_stays_unbatched(rng):
    """fori_loop's counter is a carry of the scan: it reads nothing batched, so it is
    not repeated per example (the fixed point over the body's graph)."""
    h0 = fg.placeholder("h0", shape=(3,))
    H0 = fg.placeholder("H0", shape=(B, 3))
    out = fg.fori_loop(0, 3, lambda i, h: fg.tanh(h) * fg.astype(i + 1, "float64"), h0)
    y = fg.vectorize(out, {h0: H0})
    loops = [n for n in y.graph.nodes if n.op is not None and n.op.name == "loop"]
    counter = loops[-1].inputs[0]
    assert counter.shape == () and counter.dtype == np.int64
    Hv = rng.standard_normal((B, 3))
    want = Hv
    for i in range(3):
        want = np.tanh(want) * (i + 1)
    np.testing.assert_allclose(fg.run(y, {H0: Hv}), want, rtol=1e-14)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_a_batched_carry_reset_to_a_constant_keeps_its_batch(none, rng):
    """The new value reads nothing batched, yet the carry entered batched: it is
    repeated per example (a carry keeps its shape)."""
    reset = fg.constant(np.ones(3))
    loop_check(lambda h0, xs: list(fg.scan(lambda c, x: (reset * 2.0, c * x), h0, xs)),
               [(3,), (4, 3)], rng, none=none)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_scan_jacobians_take_the_vectorized_path(mode, rng):
    W = fg.placeholder("W", shape=(3, 3))
    h0 = fg.placeholder("h0", shape=(3,))
    h, ys = _rnn(W, h0, fg.constant(rng.standard_normal((4, 3))))
    feed = {W: rng.standard_normal((3, 3)) * 0.5, h0: rng.standard_normal(3)}
    for y in (h, ys):
        for wrt in (W, h0):
            J = fg.jacobian(y, wrt, mode=mode, method="vectorize")
            Jm = fg.jacobian(y, wrt, mode=mode, method="map")
            a, b = fg.run([J, Jm], feed)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    H = fg.hessian(fg.sum(ys), h0, method="vectorize")
    Hm = fg.hessian(fg.sum(ys), h0, method="map")
    a, b = fg.run([H, Hm], feed)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_a_while_loop_whose_condition_no_example_changes(none, rng):
    """A counter against a bound (fori_loop with a node bound is such a loop): one trip
    count for every example; the values and per-example gradients equal the loop."""
    W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
    n = fg.variable(np.int64(3), name="n")

    def run(h0):
        _, h = fg.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, fg.tanh(c[1] @ W)),
                             (fg.constant(np.int64(0)), h0))
        return h
    loop_check(lambda h0: [run(h0), fg.fori_loop(0, n, lambda i, h: fg.sin(h) * 2.0, h0)],
               [(3,)], rng, none=none)
    loop_check(lambda h0: fg.grad(fg.sum(run(h0) ** 2), [W, h0]), [(3,)], rng, none=none)


@pytest.mark.parametrize("none", [False, True], ids=["static", "None"])
def test_a_cond_whose_predicate_no_example_changes(none, rng):
    """Both branches vectorized; an output batched in one branch only (the else branch
    returns a constant there) is repeated per example in the other."""
    W = fg.variable(rng.standard_normal((3, 3)), name="W")
    one = fg.constant(np.ones(3))
    for k, sv in enumerate((0.5, -0.5)):           # each branch taken
        s = fg.variable(sv, name=f"s{k}")
        loop_check(lambda a, c: list(fg.cond(s > 0.0, lambda u, v: (fg.tanh(u @ W) * v, u),
                                             lambda u, v: (one, u * 2.0), a, c)),
                   [(3,), ()], rng, none=none)
        loop_check(lambda a: fg.grad(fg.sum(fg.cond(s > 0.0, lambda u: fg.log(u * u),
                                                    lambda u: u * W[0], a)), [a, W]),
                   [(3,)], rng, none=none)


@pytest.mark.parametrize("dtype", ["float64", "int8"])
def test_loops_batch_over_an_empty_batch_of_static_length(dtype):
    """A batch of static length 0 has no entry 0 for the body's per-example stand-ins:
    every loop kind built as a ShapeError (getitem: index 0 is out of bounds). Now each
    gives the empty result a loop over no examples gives, in the examples' dtype."""
    x = fg.placeholder("x", shape=(2,), dtype=dtype)
    X = fg.placeholder("X", shape=(0, 2), dtype=dtype)
    one = np.ones((), dtype)
    scanned, _ = fg.scan(lambda h, t: (h * t + one, None), x, fg.constant(np.ones((3, 2), dtype)))
    counted, = fg.while_loop(lambda c: c[1] < 3, lambda c: (c[0] + one, c[1] + 1),
                             (x, fg.constant(np.int64(0))))[:1]
    branched = fg.cond(fg.constant(True), lambda v: v + one, lambda v: v * v, x)
    for y in (scanned, counted, branched):
        out = fg.vectorize(y, {x: X})
        assert out.shape == (0, 2)
        got = fg.run(out, {X: np.zeros((0, 2), dtype)})
        assert got.shape == (0, 2) and got.dtype == np.dtype(dtype)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_cond_jacobians_take_the_vectorized_path(mode, rng):
    """The derivative of a cond is a cond whose predicate is the forward's: the same
    for every basis vector."""
    x = fg.placeholder("x", shape=(3,))
    y = fg.cond(fg.sum(x) > 0.0, lambda u: fg.log(u * u) * fg.sum(u), lambda u: u ** 3, x)
    J = fg.jacobian(y, x, mode=mode, method="vectorize")
    Jm = fg.jacobian(y, x, mode=mode, method="map")
    for xv in (np.array([0.5, 1.0, -0.2]), np.array([-0.5, 1.0, -0.7])):
        a, b = fg.run([J, Jm], {x: xv})
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    xv = np.array([-0.5, 1.0, -0.7])
    np.testing.assert_allclose(fg.run(J, {x: xv}), np.diag(3 * xv ** 2), rtol=1e-13)


def test_while_loops_batched_predicates_and_drawing_bodies_are_refused_by_name(rng):
    from flowgrad.batching import BatchingError
    x = fg.placeholder("x", shape=(3,))
    X = fg.placeholder("X", shape=(B, 3))
    w = fg.while_loop(lambda c: fg.sum(c) < 10.0, lambda c: c * 2.0, x, max_iters=50)
    with pytest.raises(BatchingError, match="'loop' .*while_loop.*its own number"):
        fg.vectorize(w, {x: X})
    c = fg.cond(fg.sum(x) > 0.0, lambda a: a * 2.0, lambda a: a - 1.0, x)
    with pytest.raises(BatchingError, match="'loop' .*predicate of cond carries the batch"):
        fg.vectorize(c, {x: X})
    d, _ = fg.scan(lambda h, t: (h + fg.random.normal((3,), seed=1), None), x, length=2)
    with pytest.raises(BatchingError, match="draws random values"):
        fg.vectorize(d, {x: X})
    J = fg.jacobian(w, x)                        # falls back to the basis loop
    xv = np.array([0.5, 1.0, 1.5])               # 3.0 → 6 → 12: two doublings
    np.testing.assert_allclose(fg.run(J, {x: xv}), 4 * np.eye(3), rtol=1e-14)


def test_vectorized_custom_calls_remat_and_scans_round_trip_through_graph_files(tmp_path,
                                                                              rng):
    """The batched call's function is found by name (a loaded graph differentiates it
    with the user's rule, example by example); the batched scan and remat block load
    and run alike."""
    with fg.Graph():
        f = _scaled_clip()
        W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
        x = fg.placeholder("x", shape=(3,))
        X = fg.placeholder("X", shape=(None, 3))
        xs = fg.constant(rng.standard_normal((4, 3)))
        y = f(x) + fg.remat(_block)(x, W) + _rnn(W, x, xs)[0]
        out = fg.vectorize(y, {x: X}).named("out")
        Xv = rng.standard_normal((B, 3))
        want = fg.run(out, {X: Xv})
        path = fg.save_graph(tmp_path / "vec.fg", [out])
        grad = fg.run(fg.grad(fg.sum(out), X), {X: Xv})
    g = fg.load_graph(path)
    got = fg.compile(g.by_name("out"))({"X": Xv})
    np.testing.assert_array_equal(got, want)
    loaded = fg.run(fg.grad(fg.sum(g.by_name("out")), g.by_name("X")), {"X": Xv})
    np.testing.assert_array_equal(loaded, grad)


def test_a_convolution_attribute_the_rules_do_not_know_is_refused(rng, monkeypatch):
    """Should conv2d gain an attribute (a dilation, groups), the rules refuse it rather
    than batch as if it were absent."""
    from flowgrad import batching_conv
    from flowgrad.batching import BatchingError
    x = fg.placeholder("x", shape=(1, 2, 5, 5))
    X = fg.placeholder("X", shape=(B, 1, 2, 5, 5))
    y = fg.conv2d(x, fg.constant(rng.standard_normal((3, 2, 2, 2))))
    fg.vectorize(y, {x: X})
    monkeypatch.setattr(batching_conv, "_KNOWN", frozenset({"stride", "kernel"}))
    with pytest.raises(BatchingError, match=r"'conv2d' .*\['pads'\]"):
        fg.vectorize(y, {x: X})
