"""fg.scan: forward values, derivatives of both modes to second order, against the same
model unrolled in flowgrad (to 1e-12), closed forms and central finite differences."""
import numpy as np
import pytest

import flowgrad as fg

RNG = np.random.default_rng(0)


def _rnn_scan(W, U, h0, xs, reverse=False):
    return fg.scan(lambda h, x: (fg.tanh(h @ W + x @ U), fg.sum(h * h)), h0, xs,
                   reverse=reverse)


def _rnn_unrolled(W, U, h0, xs, T, reverse=False):
    h, ys = h0, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        ys[t] = fg.sum(h * h)
        h = fg.tanh(h @ W + xs[t] @ U)
    return h, fg.stack(ys)


@pytest.fixture
def feeds():
    return {"W": RNG.normal(size=(4, 4)) * 0.5, "U": RNG.normal(size=(3, 4)),
            "h0": RNG.normal(size=(2, 4)), "xs": RNG.normal(size=(5, 2, 3))}


def _model(reverse=False, unrolled=False, T=5):
    W = fg.placeholder("W", (4, 4))
    U = fg.placeholder("U", (3, 4))
    h0 = fg.placeholder("h0", (2, 4))
    xs = fg.placeholder("xs", (None if not unrolled else T, 2, 3))
    if unrolled:
        hT, ys = _rnn_unrolled(W, U, h0, xs, T, reverse)
    else:
        hT, ys = _rnn_scan(W, U, h0, xs, reverse)
    loss = fg.sum(hT * hT) + fg.sum(ys * fg.constant(np.arange(1.0, T + 1.0)))
    return loss, [W, U, h0, xs], hT, ys


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("codegen", [True, False])
def test_scan_matches_unrolled_to_second_order(feeds, reverse, codegen):
    results = []
    for unrolled in (False, True):
        with fg.Graph():
            loss, wrt, hT, ys = _model(reverse, unrolled)
            grads = fg.grad(loss, wrt)
            v = [fg.constant(np.ones(s)) for s in [(4, 4), (3, 4), (2, 4), (5, 2, 3)]]
            hv = fg.hvp(loss, wrt[:3], v[:3])
            prog = fg.compile([loss, hT, ys, *grads, *hv], codegen=codegen)
            results.append(prog(feeds))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_scan_jvp_matches_unrolled(feeds):
    results = []
    for unrolled in (False, True):
        with fg.Graph():
            loss, wrt, hT, ys = _model(False, unrolled)
            tans = [np.ones((4, 4)), np.ones((3, 4)), np.ones((2, 4)), np.ones((5, 2, 3))]
            t_h = fg.jvp(hT, wrt, tans)
            t_y = fg.jvp(ys, wrt, tans)
            results.append(fg.compile([t_h, t_y])(feeds))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_linear_recurrence_closed_form():
    # h_{t+1} = a h_t + x_t: h_T = a^T h0 + sum_t a^(T-1-t) x_t
    T, a_val, h0v = 6, 0.7, 1.3
    X = RNG.normal(size=T)
    with fg.Graph():
        a = fg.placeholder("a", ())
        h0 = fg.placeholder("h0", ())
        xs = fg.placeholder("xs", (None,))
        hT, _ = fg.scan(lambda h, x: (a * h + x, None), h0, xs)
        da, dh0, dxs = fg.grad(hT, [a, h0, xs])
        d2a = fg.grad(da, a)
        got = fg.compile([hT, da, dh0, dxs, d2a])(a=a_val, h0=h0v, xs=X)
    p = np.arange(T - 1, -1, -1)
    want_h = a_val ** T * h0v + np.sum(a_val ** p * X)
    want_da = T * a_val ** (T - 1) * h0v + np.sum(np.where(p > 0, p * a_val ** (p - 1.0), 0) * X)
    want_d2a = T * (T - 1) * a_val ** (T - 2) * h0v + np.sum(
        np.where(p > 1, p * (p - 1) * a_val ** (p - 2.0), 0) * X)
    np.testing.assert_allclose(got[0], want_h, rtol=1e-13)
    np.testing.assert_allclose(got[1], want_da, rtol=1e-13)
    np.testing.assert_allclose(got[2], a_val ** T, rtol=1e-13)
    np.testing.assert_allclose(got[3], a_val ** p, rtol=1e-13)
    np.testing.assert_allclose(got[4], want_d2a, rtol=1e-12)


def test_check_grads_second_order_both_modes(feeds):
    with fg.Graph():
        loss, wrt, _, _ = _model(False, False)
        fg.check_grads(loss, wrt, feeds, modes=("rev", "fwd"), order=2, rtol=1e-6)


def test_run_time_lengths_share_one_program():
    with fg.Graph():
        xs = fg.placeholder("xs", (None,))
        hT, ys = fg.scan(lambda h, x: (h + x, h * x), fg.constant(0.0), xs)
        g = fg.grad(fg.sum(ys), xs)
        prog = fg.compile([hT, ys, g])
        for T in (0, 1, 7):
            X = np.arange(1.0, T + 1)
            h, y, gx = prog(xs=X)
            prefix = np.concatenate([[0.0], np.cumsum(X)[:-1]]) if T else np.zeros(0)
            assert h == pytest.approx(X.sum())
            np.testing.assert_allclose(y, prefix * X)
            # d/dx_t sum_s prefix_s x_s = prefix_t + sum_{s>t} x_s
            np.testing.assert_allclose(gx, prefix + (X.sum() - np.cumsum(X)))


def test_pytree_carry_and_dict_xs():
    with fg.Graph():
        a = fg.placeholder("a", ())
        xs = {"u": fg.placeholder("u", (3,)), "v": fg.placeholder("v", (3, 2))}

        def step(c, x):
            s, (p, q) = c
            return (s + x["u"], [p * a, q + x["v"]]), {"w": s * x["u"]}

        (s, (p, q)), ys = fg.scan(step, (0.0, [1.0, np.zeros(2)]), xs)
        assert set(ys) == {"w"} and isinstance(s, fg.Node)
        loss = s + p + fg.sum(q) + fg.sum(ys["w"])
        ga = fg.grad(loss, a)
        out = fg.compile([s, p, q, ys["w"], ga])(
            a=2.0, u=np.array([1.0, 2.0, 3.0]), v=np.ones((3, 2)))
    assert out[0] == 6.0 and out[1] == 8.0
    np.testing.assert_allclose(out[2], [3.0, 3.0])
    np.testing.assert_allclose(out[3], [0.0, 2.0, 9.0])
    assert out[4] == pytest.approx(3 * 2.0 ** 2)


def test_length_without_xs_and_captured_variable():
    with fg.Graph():
        w = fg.variable(np.array([0.5, 2.0]), name="w")
        hT, ys = fg.scan(lambda h, _: (h * w, fg.sum(h)), fg.constant(np.ones(2)),
                         length=3)
        gw = fg.grad(fg.sum(hT), w)
        h, y, g = fg.compile([hT, ys, gw])({})
    np.testing.assert_allclose(h, [0.125, 8.0])
    np.testing.assert_allclose(y, [2.0, 2.5, 4.25])
    np.testing.assert_allclose(g, [3 * 0.25, 3 * 4.0])


def test_graph_does_not_grow_with_length():
    sizes = []
    for T in (10, 1000):
        with fg.Graph() as g:
            xs = fg.placeholder("xs", (T, 4))
            W = fg.placeholder("W", (4, 4))
            hT, _ = fg.scan(lambda h, x: (fg.tanh(h @ W + x), None), fg.constant(np.zeros(4)), xs)
            fg.grad(fg.sum(hT), W)
            sizes.append(len(g))
    assert sizes[0] == sizes[1]


def test_carry_shape_change_is_a_shape_error_naming_entry_and_line():
    with fg.Graph():
        xs = fg.placeholder("xs", (4, 3))
        with pytest.raises(fg.ShapeError, match=r"carry entry 1.*\n  at .*test_control_scan.py"):
            fg.scan(lambda c, x: ((c[0], fg.sum(c[1] * x)), None),
                    (fg.constant(1.0), fg.constant(np.ones(3))), xs)
        # (a float64 carry: a Python number 1.0 would take the float32 its body gives it,
        # as JAX's scan promotes a weakly typed carry; tests/test_loop_weak_carry.py)
        with pytest.raises(fg.ShapeError, match="dtype float32"):
            fg.scan(lambda c, x: (fg.astype(c, "float32"), None),
                    fg.constant(np.float64(1.0)), xs)


def test_refusals():
    with fg.Graph():
        xs = fg.placeholder("xs", (4, 3))
        with pytest.raises(fg.UsageError, match="length="):
            fg.scan(lambda c, x: (c, None), 0.0)
        with pytest.raises(fg.ShapeError, match="disagree"):
            fg.scan(lambda c, x: (c, None), 0.0, xs, length=5)
        with pytest.raises(fg.UsageError, match="pair"):
            fg.scan(lambda c, x: c, 0.0, xs)
        with pytest.raises(fg.UsageError, match="structure"):
            fg.scan(lambda c, x: ((c, c), None), 0.0, xs)
        a = fg.placeholder("a", (None,))
        b = fg.placeholder("b", (None,))
        _, ys = fg.scan(lambda c, x: (c, x[0] + x[1]), 0.0, (a, b))
        # the xs' shared length is a run-time length rule: refused before the loop runs
        with pytest.raises(fg.FeedError, match="'b' has length 4 on axis 0, but placeholder 'a'"):
            fg.compile(ys)(a=np.ones(3), b=np.ones(4))


def test_nested_scan_captures_through_two_levels():
    with fg.Graph():
        w = fg.placeholder("w", ())
        xs = fg.placeholder("xs", (3, 2))

        def outer(c, row):
            inner, _ = fg.scan(lambda d, x: (d * w + x, None), c, row)
            return inner, None

        hT, _ = fg.scan(outer, fg.constant(0.0), xs)
        g = fg.grad(hT, w)
        X = np.arange(6.0).reshape(3, 2)
        got = fg.compile([hT, g])(w=0.5, xs=X)
    with fg.Graph():
        w = fg.placeholder("w", ())
        xs = fg.placeholder("xs", (3, 2))
        h = fg.constant(0.0)
        for i in range(3):
            for j in range(2):
                h = h * w + xs[i, j]
        want = fg.compile([h, fg.grad(h, w)])(w=0.5, xs=X)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_detect_anomaly_names_the_iteration():
    with fg.Graph():
        xs = fg.placeholder("xs", (None,))
        hT, _ = fg.scan(lambda h, x: (fg.log(x) + h, None), fg.constant(0.0), xs)
        prog = fg.compile(hT)
        with fg.detect_anomaly():
            with pytest.raises(fg.NumericsError, match="iteration 2"):
                prog(xs=np.array([1.0, 2.0, -1.0, 3.0]))
        with pytest.raises(fg.NumericsError):
            fg.compile(hT, check_numerics=True)(xs=np.array([1.0, -1.0]))


def test_memory_the_forward_keeps_T_carries_only_when_differentiated():
    import gc
    import tracemalloc
    T, carry_bytes = 500, 32 * 64 * 8
    X = RNG.normal(size=(T, 32, 64)) * 0.1
    with fg.Graph():
        W = fg.placeholder("W", (64, 64))
        xs = fg.placeholder("xs", (None, 32, 64))
        hT, _ = fg.scan(lambda h, x: (fg.tanh(h @ W + x), None), fg.zeros_like(xs[0]), xs)
        loss = fg.sum(hT)
        peaks = []
        for build_grad in (False, True):
            prog = fg.compile([loss, fg.grad(loss, W)] if build_grad else loss)
            for _ in range(3):   # warm: a later call may compile a fused region (numba)
                prog(W=np.eye(64) * 0.5, xs=X)
            gc.collect()
            tracemalloc.start()
            prog(W=np.eye(64) * 0.5, xs=X)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    assert peaks[0] < 0.1 * T * carry_bytes               # nothing stacked: no derivative
    assert T * carry_bytes < peaks[1] < 1.2 * T * carry_bytes   # the T carries, once


def test_random_draws_in_a_body_run_fresh_and_derivatives_read_the_same_draws():
    # hT = w·Σ z_t: its derivatives in w are Σ z_t = hT / w only if they read the
    # forward's draws (tests/test_control_random.py checks models against unrolled ones)
    with fg.Graph():
        w = fg.placeholder("w", ())
        hT, ys = fg.scan(lambda h, _: (h + w * fg.random.normal(()), h), fg.constant(0.0),
                         length=50)
        ys_val = fg.run(ys, w=1.0)
        assert len(set(np.round(np.diff(ys_val), 12))) > 40      # a fresh draw per step
        got = fg.compile([hT, fg.grad(hT, w), fg.jvp(hT, w, 1.0)])(w=2.0)
        np.testing.assert_allclose(got[1:], [got[0] / 2.0] * 2, rtol=1e-13)


def test_no_iteration_never_hands_out_the_callers_array():
    h0 = np.ones(3)
    with fg.Graph():
        h = fg.placeholder("h", (3,))
        xs = fg.placeholder("xs", (None, 3))
        hT, ys = fg.scan(lambda c, x: (c + x, c), h, xs)
        w = fg.while_loop(lambda c: fg.sum(c) < 0.0, lambda c: c * 2.0, h)
        for codegen in (True, False):
            prog = fg.compile([hT, ys, w], codegen=codegen)
            got_h, got_y, got_w = prog(h=h0, xs=np.zeros((0, 3)))
            assert got_y.shape == (0, 3)
            got_h[0] = got_w[1] = 7.0
            assert h0.tolist() == [1.0, 1.0, 1.0]


def test_hessian_jacobian_and_rev_rev_hvp_through_a_scan():
    A = np.array([0.3, -0.2, 0.5])
    got, want = [], []
    for unrolled in (False, True):
        with fg.Graph():
            a = fg.placeholder("a", (3,))
            xs = fg.placeholder("xs", (4, 3))
            if unrolled:
                h = fg.constant(np.ones(3))
                for t in range(4):
                    h = fg.sin(h * a) + xs[t]
            else:
                h, _ = fg.scan(lambda c, x: (fg.sin(c * a) + x, None), fg.constant(np.ones(3)),
                               xs)
            f = fg.sum(h * h)
            v = np.array([1.0, 2.0, -1.0])
            outs = [fg.hessian(f, a), fg.jacobian(h, a), fg.hvp(f, a, v, mode="rev-rev")]
            (want if unrolled else got).append(
                fg.compile(outs)(a=A, xs=np.linspace(0, 1, 12).reshape(4, 3)))
    for g, w in zip(got[0], want[0]):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_run_time_lengths_tie_through_a_loop():
    # lengths.py's loop rules: a scan's xs share T, its ys have T in front, a final carry
    # keeps its initial carry's lengths; a mismatched feed is a FeedError before running
    with fg.Graph():
        h0 = fg.placeholder("h0", (None,))
        xs = fg.placeholder("xs", (None, 2))
        zs = fg.placeholder("zs", (None,))
        other = fg.placeholder("other", (None,))
        hT, ys = fg.scan(lambda h, xz: (h + fg.sum(xz[0]) * xz[1], fg.sum(h)), h0, (xs, zs))
        prog = fg.compile([hT + other, ys + zs])
        out, ys_val = prog(h0=np.ones(3), xs=np.ones((4, 2)), zs=np.arange(4.0), other=np.zeros(3))
        np.testing.assert_array_equal(ys_val[:2], [3.0, 4.0])
        with pytest.raises(fg.FeedError):
            prog(h0=np.ones(3), xs=np.ones((4, 2)), zs=np.arange(5.0), other=np.zeros(3))
        with pytest.raises(fg.FeedError):
            prog(h0=np.ones(3), xs=np.ones((4, 2)), zs=np.arange(4.0), other=np.zeros(2))
