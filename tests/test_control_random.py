"""Random draws inside loop bodies: each iteration draws fresh values, and every
derivative (vjp, jvp, second order) uses exactly the draws the forward made. Checked
against the same model unrolled in Python with the forward's masks fed as constants
(to 1e-12), and against closed forms where the draws are reproduced from the seed."""
import numpy as np
import pytest

import flowgrad as fg

RNG = np.random.default_rng(20)
T, KEEP = 6, 0.7


@pytest.fixture
def feeds():
    return {"W": RNG.normal(size=(4, 4)) * 0.5, "U": RNG.normal(size=(3, 4)),
            "h0": RNG.normal(size=(2, 4)), "xs": RNG.normal(size=(T, 2, 3))}


def _leaves():
    return (fg.placeholder("W", (4, 4)), fg.placeholder("U", (3, 4)),
            fg.placeholder("h0", (2, 4)), fg.placeholder("xs", (None, 2, 3)))


def _loss(hT, energy):
    return fg.sum(hT * hT) + fg.sum(energy * fg.constant(np.arange(1.0, T + 1.0)))


def _scan_model(reverse=False, nn_dropout=False):
    """An RNN whose step drops units: returns (loss, leaves, the stacked masks)."""
    W, U, h0, xs = leaves = _leaves()

    def step(h, x):
        pre = fg.tanh(h @ W + x @ U)
        if nn_dropout:
            new = fg.nn.dropout(pre, 1.0 - KEEP)
            mask = fg.where(fg.not_equal(new, 0.0), 1.0, 0.0)   # what dropout kept
        else:
            mask = fg.random.bernoulli((2, 4), p=KEEP)
            new = pre * mask * (1.0 / KEEP)
        return new, (mask, fg.sum(h * h))

    hT, (masks, energy) = fg.scan(step, h0, xs, reverse=reverse)
    return _loss(hT, energy), list(leaves), masks


def _unrolled_model(reverse=False):
    """The same RNN unrolled in Python, its masks a placeholder fed by the test."""
    W, U, h0, xs = leaves = _leaves()
    M = fg.placeholder("M", (T, 2, 4))
    h, energy = h0, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        energy[t] = fg.sum(h * h)
        h = fg.tanh(h @ W + xs[t] @ U) * M[t] * (1.0 / KEEP)
    return _loss(h, fg.stack(energy)), list(leaves)


def _derivatives(loss, leaves, V):
    """Values of: gradients, Hessian-vector product in W, jvp in W, grad of |∇W|²."""
    W = leaves[0]
    gs = fg.grad(loss, leaves)
    second = fg.grad(fg.sum(gs[0] * gs[0]), W)
    return [loss, *gs, fg.hvp(loss, W, V), fg.jvp(loss, W, V), second]


def _reference(masks, feeds, V, reverse=False):
    with fg.Graph():
        loss, leaves = _unrolled_model(reverse)
        return fg.compile(_derivatives(loss, leaves, V))(M=masks, **feeds)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nn_dropout", [False, True])
def test_rnn_with_dropout_derivatives_use_the_forwards_masks(feeds, reverse, nn_dropout):
    V = RNG.normal(size=(4, 4))
    with fg.Graph():
        loss, leaves, masks = _scan_model(reverse, nn_dropout)
        got_masks, *got = fg.compile([masks] + _derivatives(loss, leaves, V))(**feeds)
    assert got_masks.shape == (T, 2, 4) and set(np.unique(got_masks)) == {0.0, 1.0}
    assert len({m.tobytes() for m in got_masks}) > 1       # a fresh mask per step
    want = _reference(got_masks, feeds, V, reverse)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_each_run_draws_other_masks_and_differentiates_its_own(feeds):
    V = np.eye(4)
    with fg.Graph():
        loss, leaves, masks = _scan_model()
        prog = fg.compile([masks] + _derivatives(loss, leaves, V), codegen=False)
        runs = [prog(**feeds) for _ in range(2)]
    assert not np.array_equal(runs[0][0], runs[1][0])
    for got_masks, *got in runs:
        for g, w in zip(got, _reference(got_masks, feeds, V)):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def _draws(seed, n):
    """The first n 0-d uniform draws of a stream seeded ``seed`` (fg.random's rule)."""
    gen = np.random.default_rng(seed)
    return np.array([gen.random(()) for _ in range(n)])


def test_while_loop_with_a_draw_matches_the_closed_form_of_its_own_draws():
    # x ← x·w·(1 + u) while x < 50: xT = x0·Π w(1 + u_i) over the n trips, so
    # ∂xT/∂w = n·xT/w, ∂²xT/∂w² = n(n−1)·xT/w², ∂xT/∂x0 = xT/x0, whatever u drew
    with fg.Graph():
        w, x0 = fg.placeholder("w", ()), fg.placeholder("x0", ())
        xT, n = fg.while_loop(
            lambda c: c[0] < 50.0,
            lambda c: (c[0] * w * (1.0 + fg.random.uniform((), seed=11)), c[1] + 1),
            (x0, fg.constant(np.int64(0))))
        gw, gx = fg.grad(xT, [w, x0])
        outs = [xT, n, gw, gx, fg.grad(gw, w), fg.jvp(xT, w, 1.0)]
        got = fg.compile(outs)(w=1.5, x0=1.0)
    x, trips = got[0], int(got[1])
    assert trips > 3
    np.testing.assert_allclose(x, np.prod(1.5 * (1.0 + _draws(11, trips))), rtol=1e-13)
    np.testing.assert_allclose(got[2:], [trips * x / 1.5, x, trips * (trips - 1) * x / 2.25,
                                         trips * x / 1.5], rtol=1e-12)


def test_fori_loop_with_a_draw_reads_the_forwards_draws():
    # a Python-bounded fori_loop is a scan: c ← c·(w + z), ∂cT/∂w = cT·Σ 1/(w + z_i)
    with fg.Graph():
        w = fg.placeholder("w", ())
        cT = fg.fori_loop(0, 5, lambda i, c: c * (w + fg.random.normal((), seed=3)),
                          fg.constant(1.0))
        got = fg.compile([cT, fg.grad(cT, w), fg.jvp(cT, w, 1.0)])(w=4.0)
    z = np.random.default_rng(3).standard_normal(5)   # one () draw per iteration
    np.testing.assert_allclose(got[0], np.prod(4.0 + z), rtol=1e-13)
    np.testing.assert_allclose(got[1:], [got[0] * np.sum(1 / (4.0 + z))] * 2, rtol=1e-12)


def test_cond_with_draws_in_both_branches():
    with fg.Graph():
        p, x, w = fg.placeholder("p", (), "bool"), fg.placeholder("x", ()), \
            fg.placeholder("w", ())

        def then(v):
            z = fg.random.normal(())
            return v * w * z, z

        def other(v):
            u = fg.random.uniform((3,))
            return v + w * fg.sum(u), fg.sum(u)

        y, z = fg.cond(p, then, other, x)
        gw, gx = fg.grad(y, [w, x])
        prog = fg.compile([z, gw, gx, fg.jvp(y, w, 1.0)])
        for pred in (True, False, True):
            zv, *got = prog(p=pred, x=2.0, w=3.0)
            want = [2.0 * zv, 3.0 * zv, 2.0 * zv] if pred else [zv, 1.0, zv]
            np.testing.assert_allclose(got, want, rtol=1e-12)


def _nested_model(inner_kind):
    """c ← c·(w + z) over 3 × 2 draws z, the inner loop a scan or a while loop (which
    stops after 2 trips): returns (cT, w, the draws (3, 2))."""
    w = fg.placeholder("w", ())

    def inner_step(c, _):
        z = fg.random.normal(())
        return c * (w + z), z

    def outer(c, _):
        if inner_kind == "scan":
            c, zs = fg.scan(inner_step, c, length=2)
        else:   # the draws ride in the carry: a while loop has no ys
            def body(k):
                i, c, zs = k
                c, z = inner_step(c, None)
                return i + 1, c, fg.where(fg.equal(slots, i), z, zs)

            slots = fg.constant(np.arange(2, dtype=np.int64))
            _, c, zs = fg.while_loop(lambda k: k[0] < 2, body,
                                     (fg.constant(np.int64(0)), c,
                                      fg.constant(np.zeros(2))))
        return c, zs

    cT, zs = fg.scan(outer, fg.constant(1.0), length=3)
    return cT, w, zs


@pytest.mark.parametrize("inner_kind", ["scan", "while"])
def test_a_drawing_loop_inside_a_body_reads_its_own_records(inner_kind):
    # ∂cT/∂w = cT·Σ 1/(w + z), ∂²cT/∂w² = cT·((Σ 1/(w+z))² − Σ 1/(w+z)²)
    with fg.Graph():
        cT, w, zs = _nested_model(inner_kind)
        g = fg.grad(cT, w)
        prog = fg.compile([cT, zs, g, fg.jvp(cT, w, 1.0), fg.grad(g, w)])
        for _ in range(2):
            c, z, *got = prog(w=3.0)
            assert z.shape == (3, 2) and len(set(z.ravel())) == 6
            np.testing.assert_allclose(c, np.prod(3.0 + z), rtol=1e-13)
            s1, s2 = np.sum(1 / (3.0 + z)), np.sum(1 / (3.0 + z) ** 2)
            np.testing.assert_allclose(got, [c * s1, c * s1, c * (s1 * s1 - s2)],
                                       rtol=1e-12)


def test_a_loop_inside_a_body_whose_condition_alone_draws_is_refused():
    with fg.Graph():
        w = fg.placeholder("w", ())

        def outer(h, _):
            inner = fg.while_loop(lambda c: fg.random.uniform(()) < 0.5,
                                  lambda c: c * w, h, max_iters=100)
            return inner, None

        hT, _ = fg.scan(outer, fg.constant(1.0), length=3)
        assert np.isfinite(fg.run(hT, w=1.0))     # the forward runs
        with pytest.raises(fg.DifferentiationError, match="condition of while_loop"):
            fg.grad(hT, w)


def test_a_drawing_cond_inside_a_scan_body():
    # c ← c·(w + z) where x > 0, else c·w + u·w: dc/dw follows the same recursion
    X = np.array([1.0, -1.0, -1.0, 1.0, -1.0])
    with fg.Graph():
        w = fg.placeholder("w", ())

        def outer(c, x):
            def then(v):
                z = fg.random.normal(())
                return v * (w + z), z

            def other(v):
                u = fg.random.uniform(())
                return v * w + u * w, u
            return fg.cond(x > 0.0, then, other, c)

        cT, draws = fg.scan(outer, fg.constant(1.0), fg.constant(X))
        c, d, *got = fg.compile([cT, draws, fg.grad(cT, w), fg.jvp(cT, w, 1.0)])(w=2.0)
    cv, dc = 1.0, 0.0
    for x, r in zip(X, d):
        cv, dc = (cv * (2.0 + r), dc * (2.0 + r) + cv) if x > 0 else \
            (cv * 2.0 + r * 2.0, dc * 2.0 + cv + r)
    np.testing.assert_allclose([c, *got], [cv, dc, dc], rtol=1e-12)


@pytest.mark.parametrize("nested", [False, True])
def test_a_saved_gradient_program_still_reads_its_own_draws(feeds, tmp_path, nested):
    V = np.eye(4)
    with fg.Graph():
        if nested:    # the inner loop's draw records are nodes of the outer body
            cT, w, zs = _nested_model("while")
            g = fg.grad(cT, w)
            outs = [zs, cT, g, fg.grad(g, w)]
        else:
            loss, leaves, masks = _scan_model()
            outs = [masks] + _derivatives(loss, leaves, V)
        names = [f"out{k}" for k in range(len(outs))]
        path = fg.save_graph(tmp_path / "dropout.fg", [o.named(n) for o, n in
                                                       zip(outs, names)])
    g = fg.load_graph(path)
    if nested:
        z, c, *got = fg.compile([g.by_name(n) for n in names])(w=3.0)
        s1, s2 = np.sum(1 / (3.0 + z)), np.sum(1 / (3.0 + z) ** 2)
        np.testing.assert_allclose(got, [c * s1, c * (s1 * s1 - s2)], rtol=1e-12)
        return
    got_masks, *got = fg.compile([g.by_name(n) for n in names])(**feeds)
    for a, b in zip(got, _reference(got_masks, feeds, V)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_memory_the_forward_records_draws_only_when_differentiated():
    import gc
    import tracemalloc
    n, mask_bytes = 400, 32 * 64 * 8
    X = RNG.normal(size=(n, 32, 64)) * 0.1
    with fg.Graph():
        W = fg.placeholder("W", (64, 64))
        xs = fg.placeholder("xs", (None, 32, 64))
        hT, _ = fg.scan(lambda h, x: (fg.tanh(h @ W + x) * fg.random.bernoulli(
            (32, 64), p=0.9), None), fg.zeros_like(xs[0]), xs)
        loss = fg.sum(hT)
        peaks = []
        for build_grad in (False, True):
            prog = fg.compile([loss, fg.grad(loss, W)] if build_grad else loss)
            for _ in range(3):
                prog(W=np.eye(64) * 0.5, xs=X)
            gc.collect()
            tracemalloc.start()
            prog(W=np.eye(64) * 0.5, xs=X)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    assert peaks[0] < 0.1 * n * mask_bytes             # no derivative: nothing recorded
    # with a gradient: the n carries and the n masks (same size), once each
    assert 2 * n * mask_bytes < peaks[1] < 2.4 * n * mask_bytes


def test_bool_masks_of_a_run_time_shape_to_second_order_and_no_iteration():
    Wv, H0 = RNG.normal(size=(4, 4)), RNG.normal(size=(3, 4))
    with fg.Graph():
        W, h0 = fg.placeholder("W", (4, 4)), fg.placeholder("h0", (None, 4))
        xs = fg.placeholder("xs", (None, 3))

        def step(h, x):
            m = fg.random.bernoulli(None, p=0.5, like=h, dtype=bool)   # (None, 4)
            return fg.where(m, fg.tanh(h @ W), 0.0 * h) + fg.sum(x), m

        hT, ms = fg.scan(step, h0, xs)
        g = fg.grad(fg.sum(hT * hT), W)
        got = fg.compile([ms, g, fg.grad(fg.sum(g * g), W)])(W=Wv, h0=H0, xs=np.ones((4, 3)))
        # no iteration: an empty record of the draws (a loop without ys, which could
        # not stack a (None, 4) y of no iteration)
        hT, _ = fg.scan(lambda h, x: (step(h, x)[0], None), h0, xs)
        empty = fg.compile(fg.grad(fg.sum(hT * hT), W))(W=Wv, h0=H0, xs=np.ones((0, 3)))
    assert got[0].dtype == np.bool_ and got[0].shape == (4, 3, 4)
    np.testing.assert_array_equal(empty, np.zeros((4, 4)))
    with fg.Graph():
        W = fg.placeholder("W", (4, 4))
        h = fg.constant(H0)
        for m in got[0]:
            h = fg.where(fg.constant(m), fg.tanh(h @ W), 0.0 * h) + 3.0
        g = fg.grad(fg.sum(h * h), W)
        want = fg.compile([g, fg.grad(fg.sum(g * g), W)])(W=Wv)
    np.testing.assert_allclose(got[1:], want, rtol=1e-12, atol=1e-12)


def test_a_remat_block_holding_a_drawing_loop_differentiates_the_forwards_draws():
    # hT = w·Σ z_t: ∂hT/∂w = hT/w only if remat's replay reads the forward's draws
    with fg.Graph():
        w = fg.placeholder("w", ())

        def block(v):
            hT, _ = fg.scan(lambda h, _: (h + v * fg.random.normal(()), None),
                            fg.constant(0.0), length=20)
            return hT * 1.0

        hT = fg.remat(block)(w)
        prog = fg.compile([hT, fg.grad(hT, w), fg.jvp(hT, w, 1.0)])
        for _ in range(2):
            got = prog(w=2.0)
            np.testing.assert_allclose(got[1:], [got[0] / 2.0] * 2, rtol=1e-13)
