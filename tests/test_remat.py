"""Issue 21: fg.remat — the same values and derivatives (both modes, second order) as the
plain block, random draws replayed, the inner values not kept (tracemalloc), drawings
and graph files."""
import tracemalloc

import numpy as np
import pytest

import flowgrad as fg

RTOL = 1e-12


def stack(h, *Ws):
    for w in Ws:
        h = fg.tanh(h @ w)
    return h


def _network(layers, seg, batch, width, seed=0):
    rng = np.random.default_rng(seed)
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(batch, width))
        Ws = [fg.variable(rng.standard_normal((width, width)) / np.sqrt(width), name=f"W{k}")
              for k in range(layers)]
        h = x
        if seg:
            for k in range(0, layers, seg):
                h = fg.remat(stack)(h, *Ws[k:k + seg])
        else:
            h = stack(h, *Ws)
        loss = fg.sum(h * h)
    return g, x, Ws, loss


def test_remat_gives_the_plain_gradient_against_torch():
    torch = pytest.importorskip("torch")
    X = np.random.default_rng(1).standard_normal((5, 4))
    outs = []
    for seg in (0, 2, 3):
        g, x, Ws, loss = _network(6, seg, 5, 4)
        with g:
            outs.append(fg.run([loss, *fg.grad(loss, [x, *Ws])], {x: X}))
    xt = torch.tensor(X, requires_grad=True)
    Wt = [torch.tensor(w.value, requires_grad=True) for w in Ws]
    h = xt
    for w in Wt:
        h = torch.tanh(h @ w)
    (h * h).sum().backward()
    want = [(h * h).sum().item(), xt.grad.numpy()] + [w.grad.numpy() for w in Wt]
    for got in outs:
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=RTOL)


def test_remat_second_derivatives_both_modes_and_check_grads():
    g, x, Ws, loss = _network(4, 2, 2, 3)
    _, xp, Wp, lossp = _network(4, 0, 2, 3)
    X = np.random.default_rng(2).standard_normal((2, 3))
    V = np.random.default_rng(3).standard_normal((2, 3))
    with g:
        vals = fg.run([fg.hvp(loss, x, V), fg.hvp(loss, x, V, mode="rev-rev"),
                       fg.jvp(loss, x, V)], {x: X})
        fg.check_grads(loss, [x, Ws[1]], {x: X}, order=2, rtol=1e-8, atol=1e-9)
    with xp.graph:
        want = fg.run([fg.hvp(lossp, xp, V), fg.jvp(lossp, xp, V)], {xp: X})
    np.testing.assert_allclose(vals[0], want[0], rtol=1e-10)
    np.testing.assert_allclose(vals[1], want[0], rtol=1e-10)
    np.testing.assert_allclose(vals[2], want[1], rtol=1e-10)


def test_random_draws_inside_a_block_are_replayed_not_redrawn():
    def noisy(x):
        mask = fg.random.bernoulli(None, p=0.5, like=x, seed=4)
        return x * mask

    X = np.linspace(0.5, 2.0, 64)
    with fg.Graph():
        x = fg.placeholder("x", shape=(64,))
        y = fg.remat(noisy)(x)
        grad = fg.grad(fg.sum(y * y), x)        # 2 x m² = 2 y, with the forward's own m
        prog = fg.compile([y, grad])
        for _ in range(3):
            yv, gv = prog(x=X)
            assert 0 < np.count_nonzero(yv) < 64
            np.testing.assert_array_equal(gv, 2 * yv)


def test_remat_keeps_fewer_values_alive():
    X = np.random.default_rng(1).standard_normal((256, 16))
    peaks, results = [], []
    for seg in (0, 4):
        g, x, Ws, loss = _network(16, seg, 256, 16)
        with g:
            prog = fg.compile([loss, *fg.grad(loss, Ws)])
        for _ in range(3):       # the first runs make the generated code and its caches
            prog(x=X)
        tracemalloc.start()
        try:
            results.append(prog(x=X))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=RTOL)
    assert peaks[1] < 0.6 * peaks[0], peaks


def test_a_remat_block_draws_as_one_box_and_round_trips_a_file(tmp_path):
    g, x, Ws, loss = _network(4, 2, 3, 2)
    X = np.random.default_rng(5).standard_normal((3, 2))
    with g:
        src = fg.viz.draw(loss).source
        assert "g_stack" in src and "recomputed from its inputs" in src
        path = fg.save_graph(tmp_path / "remat.fg", loss)
        want = fg.run([loss, fg.grad(loss, x)], {x: X})
    g2 = fg.load_graph(path)
    l2, x2 = g2.by_name(loss.name), g2.by_name("x")
    got = fg.run([l2, fg.grad(l2, x2)], {x2: X})
    np.testing.assert_allclose(got[0], want[0], rtol=RTOL)
    np.testing.assert_allclose(got[1], want[1], rtol=RTOL)


def test_refusals():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        with pytest.raises(TypeError, match="positionally"):
            fg.remat(stack)(h=x)
        with pytest.raises(TypeError, match="function"):
            fg.remat(3)


def test_weights_a_block_closes_over_get_their_gradients():
    """A block may read nodes it does not take (a layer's weights, made before or inside
    it): they become the call's inputs, so the replayed gradient reaches them."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 3))
    results = []
    for use_remat in (False, True):
        with fg.Graph():
            x = fg.placeholder("x", shape=(4, 3))
            w = fg.variable(rng.standard_normal(3) if not results else results[0][0], name="w")
            made = []

            def block(h):
                v = fg.variable(np.linspace(0.5, 1.5, 3), name="v")    # made inside
                made.append(v)
                return fg.tanh(h * w) * v

            y = fg.remat(block)(x) if use_remat else block(x)
            loss = fg.sum(fg.sin(y))
            grads = fg.grad(loss, [x, w, made[0]])
            results.append([w.value] + fg.run([loss, *grads], {x: X}))
            if use_remat:
                fg.check_grads(loss, [x, w, made[0]], {x: X}, order=2, rtol=1e-8, atol=1e-9)
    for a, b in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(b, a, rtol=RTOL)
    W, V = results[0][0], np.linspace(0.5, 1.5, 3)
    t = np.tanh(X * W)
    gy = np.cos(t * V)
    np.testing.assert_allclose(results[1][3], np.sum(gy * V * (1 - t * t) * X, axis=0),
                               rtol=RTOL)


def test_a_remat_gradient_program_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g, x, Ws, loss = _network(4, 2, 3, 2)
    X = np.random.default_rng(6).standard_normal((3, 2))
    with g:
        outs = [loss, fg.grad(loss, x)]
        want = fg.run(outs, {x: X})
        path = fg.export_onnx(outs, tmp_path / "remat.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": X})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_third_derivatives_through_remat_inside_a_hessian():
    """A remat block under hessian (a basis_map of the replayed gradient), and the
    Hessian's own derivative (third order) checked by finite differences."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        s = fg.sum(fg.remat(lambda a: fg.sin(a) * a)(x) ** 2)
        H = fg.hessian(s, x)
        X = np.array([0.4, -1.1])
        h = fg.run(H, {x: X})
        fg.check_grads(fg.sum(H * np.array([[1.0, 2.0], [3.0, 4.0]])), x, {x: X}, order=1,
                       rtol=1e-8, atol=1e-9)
    f = np.sin(X) * X
    df = np.cos(X) * X + np.sin(X)
    d2f = -np.sin(X) * X + 2 * np.cos(X)
    np.testing.assert_allclose(h, np.diag(2 * (df * df + f * d2f)), rtol=1e-12, atol=1e-15)


def test_a_block_with_lifted_weights_round_trips_a_file(tmp_path):
    X = np.random.default_rng(8).standard_normal((4, 3))
    with fg.Graph():
        x = fg.placeholder("x", shape=(4, 3))
        w = fg.variable(np.array([0.3, -0.7, 1.1]), name="w")
        loss = fg.sum(fg.remat(lambda h: fg.tanh(h * w) ** 2)(x))
        want = fg.run([loss, *fg.grad(loss, [x, w])], {x: X})
        path = fg.save_graph(tmp_path / "lifted.fg", loss)
    g2 = fg.load_graph(path)
    l2, x2, w2 = g2.by_name(loss.name), g2.by_name("x"), g2.by_name("w")
    got = fg.run([l2, *fg.grad(l2, [x2, w2])], {x2: X})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL)
    t = np.tanh(X * w.value)
    np.testing.assert_allclose(want[2], np.sum(2 * t * (1 - t * t) * X, axis=0), rtol=RTOL)


def test_a_users_stop_gradient_of_an_input_inside_a_block_stays_stopped():
    """The block ignores its argument and stops the very same node itself: the replay must
    tell its own input stand-ins from the user's stop_gradient (both read x)."""
    X, Wv = np.array([0.5, -1.0]), np.array([0.3, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        w = fg.placeholder("w", shape=(2,))
        y = fg.remat(lambda h, v: fg.stop_gradient(x) * fg.sin(v))(x, w)
        gx, gw = fg.run(fg.grad(fg.sum(y), [x, w]), {x: X, w: Wv})
    np.testing.assert_array_equal(gx, [0.0, 0.0])
    np.testing.assert_allclose(gw, X * np.cos(Wv), rtol=RTOL)
