"""Loops and branches through ONNX (issue 20): ``export_onnx`` writes scans, while loops,
fori loops and conds as ``Scan``/``Loop``/``If`` — gradient programs included, whose
derivative loops are loops too — and onnxruntime's values match flowgrad's (1e-12 in
float64, 1e-5 in float32); ``import_onnx`` reads them back (flowgrad's files and models
written with onnx.helper), with typed refusals for what flowgrad cannot hold."""
import numpy as np
import pytest

import flowgrad as fg

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")

TOL = {"float64": 1e-12, "float32": 1e-5}


def run_onnx(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: np.asarray(v) for k, v in feed.items() if k in names})


def op_types(path):
    """Every node's op type, subgraphs' included (walked with a stack)."""
    found, stack = [], [onnx.load(str(path)).graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            found.append(n.op_type)
            for a in n.attribute:
                stack.extend([a.g] if a.HasField("g") else [])
    return found


def check(outs, feeds, path, dtype="float64"):
    """Export ``outs``, run the file in onnxruntime on each feed of ``feeds`` and compare
    with flowgrad's own values (and dtypes); returns the path."""
    fg.export_onnx(outs, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    tol = TOL[dtype]
    for feed in feeds:
        want = fg.run(outs, feed)
        got = run_onnx(path, {k.name: v for k, v in feed.items()})
        for o, w, g in zip(outs, want, got):
            assert g.dtype == np.asarray(w).dtype == o.dtype, o.name
            assert g.shape == np.shape(w), o.name
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=o.name)
    return path


def _rnn(dtype, reverse=False):
    rng = np.random.default_rng(3)
    W = fg.variable((rng.standard_normal((3, 3)) * 0.5).astype(dtype), name="W")
    xs = fg.placeholder("xs", (None, 3), dtype=dtype)
    h0 = fg.placeholder("h0", (3,), dtype=dtype)
    hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h * x)), h0, xs,
                     reverse=reverse)
    loss = fg.sum(ys) + fg.sum(hT * hT)
    return W, xs, h0, hT, ys, loss


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_rnn_scan_and_its_gradient_program(dtype, reverse, tmp_path):
    rng = np.random.default_rng(0)
    with fg.Graph():
        W, xs, h0, hT, ys, loss = _rnn(dtype, reverse)
        outs = [hT, ys, loss, *fg.grad(loss, [W, xs, h0])]
        feeds = [{xs: rng.standard_normal((T, 3)).astype(dtype),
                  h0: rng.standard_normal(3).astype(dtype)} for T in (5, 1, 0, 12)]
        path = check(outs, feeds, tmp_path / "rnn.onnx", dtype)
    kinds = op_types(path)
    assert kinds.count("Scan") == 3     # the forward and a backward scan per result read
    # each behind an If on an empty sequence (onnxruntime fails on a Scan of none)
    assert kinds.count("If") == 3 and "Loop" not in kinds


def test_a_scan_of_a_static_length_is_a_bare_scan(tmp_path):
    rng = np.random.default_rng(2)
    with fg.Graph():
        W = fg.placeholder("W", (3, 3))
        xs = fg.placeholder("xs", (4, 3))
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), h * 2.0), fg.constant(np.ones(3)),
                         xs)
        loss = fg.sum(ys * ys) + fg.sum(hT)
        outs = [hT, ys, loss, *fg.grad(loss, [W, xs])]
        feeds = [{W: rng.standard_normal((3, 3)), xs: rng.standard_normal((4, 3))}]
        path = check(outs, feeds, tmp_path / "static.onnx")
    kinds = op_types(path)
    assert kinds.count("Scan") == 3 and "If" not in kinds


def test_an_empty_scan_of_a_y_of_unknown_shape_fails_by_name(tmp_path):
    """flowgrad cannot stack a y of unknown shape over no iteration (ShapeError); the
    file fails by name there too, and runs for one slice or more."""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 2))
        c = fg.placeholder("c", (None,))
        _, ys = fg.scan(lambda h, x: (h, h * fg.sum(x)), c, xs)
        path = tmp_path / "unknown.onnx"
        fg.export_onnx(ys, path)
        with pytest.raises(fg.ShapeError):
            fg.run(ys, {xs: np.zeros((0, 2)), c: np.ones(3)})
    got = run_onnx(path, {"xs": np.ones((2, 2)), "c": np.ones(3)})[0]
    np.testing.assert_array_equal(got, np.full((2, 3), 2.0))
    with pytest.raises(Exception, match="no_iteration_for_y0_of_unknown_shape"):
        run_onnx(path, {"xs": np.zeros((0, 2)), "c": np.ones(3)})


def test_the_gradient_of_an_rnn_matches_the_unrolled_closed_form(tmp_path):
    """An independent reference: BPTT written by hand in numpy."""
    rng = np.random.default_rng(1)
    Wv, X, h0v = rng.standard_normal((3, 3)) * 0.5, rng.standard_normal((6, 3)), np.zeros(3)
    with fg.Graph():
        W = fg.placeholder("W", (3, 3))
        xs = fg.placeholder("xs", (None, 3))
        hT, _ = fg.scan(lambda h, x: (fg.tanh(h @ W + x), None), fg.constant(h0v), xs)
        loss = fg.sum(hT * hT)
        path = tmp_path / "bptt.onnx"
        fg.export_onnx([loss, fg.grad(loss, W)], path)
    hs = [h0v]
    for x in X:
        hs.append(np.tanh(hs[-1] @ Wv + x))
    g, gW = 2 * hs[-1], np.zeros((3, 3))
    for t in range(len(X), 0, -1):
        dz = g * (1 - hs[t] ** 2)
        gW += np.outer(hs[t - 1], dz)
        g = dz @ Wv.T
    value, grad_W = run_onnx(path, {"W": Wv, "xs": X})
    np.testing.assert_allclose(value, np.sum(hs[-1] ** 2), rtol=1e-13)
    np.testing.assert_allclose(grad_W, gW, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_of_a_length_alone_is_a_loop(reverse, tmp_path):
    with fg.Graph():
        a = fg.placeholder("a", (2,))
        cT, ys = fg.scan(lambda c, _: (fg.sin(c) * a + 1.0, c * c), a * 0.5, length=4,
                         reverse=reverse)
        loss = fg.sum(ys * np.array([1.0, 2.0])) + fg.sum(cT)
        outs = [cT, ys, loss, fg.grad(loss, a)]
        path = check(outs, [{a: np.array([0.3, -1.2])}], tmp_path / "len.onnx")
    assert "Loop" in op_types(path) and "Scan" in op_types(path)   # backward: over stacks
    with fg.Graph():      # the ys in the order of iterations: reverse flips them
        ys = fg.scan(lambda c, _: (c + 1.0, c), fg.constant(0.0), length=3,
                     reverse=reverse)[1]
        fg.export_onnx(ys, tmp_path / "order.onnx")
    want = [2.0, 1.0, 0.0] if reverse else [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(run_onnx(tmp_path / "order.onnx", {})[0], want)


def test_fori_loops_with_int_and_node_bounds(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        n = fg.placeholder("n", (), dtype="int64")
        body = lambda i, c: c * 0.9 + fg.sin(c) * fg.astype(i, "float64")   # noqa: E731
        static = fg.fori_loop(1, 4, body, x)
        dynamic = fg.fori_loop(0, n, body, x)
        loss = fg.sum(static * static) + fg.sum(dynamic)
        outs = [static, dynamic, loss, fg.grad(loss, x)]
        feeds = [{x: np.array([0.5, -0.2, 1.0]), n: np.int64(k)} for k in (0, 1, 5)]
        path = check(outs, feeds, tmp_path / "fori.onnx")
    assert op_types(path).count("Loop") == 2


def _newton(a, c0, max_iters=50):
    return fg.while_loop(lambda c: fg.abs(c * c - a) > 1e-12, lambda c: 0.5 * (c + a / c),
                         c0, max_iters=max_iters)


def test_a_while_loop_and_its_gradient_against_the_closed_form(tmp_path):
    with fg.Graph():
        a = fg.placeholder("a", ())
        r = _newton(a, a * 0.5 + 0.5)
        g, = fg.grad(r, [a])
        h, = fg.grad(g, [a])
        feeds = [{a: np.float64(v)} for v in (2.0, 9.0, 1.0)]   # 1.0: no iteration at all
        path = check([r, g, h], feeds, tmp_path / "newton.onnx")
    for v in (2.0, 9.0, 0.25):
        r_, g_, h_ = run_onnx(path, {"a": np.float64(v)})
        np.testing.assert_allclose([r_, g_, h_], [v ** 0.5, 0.5 * v ** -0.5, -0.25 * v ** -1.5],
                                   rtol=1e-10)
    assert "Loop" in op_types(path)


def test_reaching_max_iters_fails_by_name_in_onnxruntime(tmp_path):
    """flowgrad raises LoopLimitError; ONNX cannot raise, so the file fails by name at
    the same trip: never a silent stop. One fewer iteration runs fine."""
    with fg.Graph():
        k = fg.placeholder("k", (), dtype="int64")
        c = fg.while_loop(lambda c: c < k, lambda c: c + 1, fg.constant(np.int64(0)),
                          max_iters=3)
        path = tmp_path / "limit.onnx"
        fg.export_onnx(c, path)
        with pytest.raises(fg.LoopLimitError):
            fg.run(c, {k: np.int64(4)})
    assert run_onnx(path, {"k": np.int64(3)})[0] == 3
    with pytest.raises(Exception, match="max_iters_reached"):
        run_onnx(path, {"k": np.int64(4)})


def test_cond_takes_one_branch_forward_and_backward(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        w = fg.placeholder("w", ())
        p = fg.placeholder("p", (), dtype="bool")
        y = fg.cond(p, lambda v: fg.log(v) * w, lambda v: v * v - w, x)
        loss = fg.sum(y)
        outs = [y, loss, *fg.grad(loss, [x, w])]
        feeds = [{x: np.array([2.0, 0.5]), w: np.float64(1.5), p: np.bool_(True)},
                 {x: np.array([-2.0, 0.0]), w: np.float64(1.5), p: np.bool_(False)}]
        path = check(outs, feeds, tmp_path / "cond.onnx")
    got = run_onnx(path, {"x": np.array([-2.0, 0.0]), "w": np.float64(1.5),
                          "p": np.bool_(False)})
    assert all(np.all(np.isfinite(v)) for v in got)   # the untaken log never ran
    assert op_types(path).count("If") == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nested_loops_and_second_order(dtype, tmp_path):
    """A scan whose step holds a fori_loop and a cond; the loss's gradient and a
    Hessian-vector product (loops of loops of derivative loops)."""
    rng = np.random.default_rng(5)
    with fg.Graph():
        W = fg.placeholder("W", (2, 2), dtype=dtype)
        xs = fg.placeholder("xs", (None, 2), dtype=dtype)
        v = fg.placeholder("v", (2, 2), dtype=dtype)

        def step(h, x):
            inner = fg.fori_loop(0, 2, lambda i, c: fg.tanh(c @ W + x), h)
            out = fg.cond(fg.sum(x) > 0, lambda a: a * 2.0, lambda a: fg.sin(a), inner)
            return out, fg.sum(out * x)

        hT, ys = fg.scan(step, fg.constant(np.zeros(2, dtype)), xs)
        loss = fg.sum(ys) + fg.sum(hT * hT)
        gW = fg.grad(loss, W)
        outs = [hT, ys, loss, gW, fg.hvp(loss, [W], [v])[0]]
        feeds = [{W: (rng.standard_normal((2, 2)) * 0.5).astype(dtype),
                  xs: rng.standard_normal((4, 2)).astype(dtype),
                  v: rng.standard_normal((2, 2)).astype(dtype)}]
        path = check(outs, feeds, tmp_path / "nested.onnx", dtype)
    kinds = op_types(path)
    assert {"Scan", "Loop", "If"} <= set(kinds)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_recurrent_layers_and_their_gradients(layer, dtype, tmp_path):
    """fg.nn's LSTM and GRU are one scan each: the weights' gradients too."""
    rng = np.random.default_rng(4)
    with fg.Graph():
        x = fg.placeholder("x", (None, None, 3), dtype=dtype)
        hs = getattr(fg.nn, layer)(4, return_sequences=True, seed=1, dtype=dtype)(x)
        loss = fg.sum(hs * hs)
        weights = [n for n in hs.graph.nodes if n.kind == "variable"]
        outs = [hs, loss, *fg.grad(loss, weights + [x])]
        feeds = [{x: rng.standard_normal((2, T, 3)).astype(dtype)} for T in (5, 1)]
        check(outs, feeds, tmp_path / "layer.onnx", dtype)


def test_tree_carries_an_int_carry_number_outputs_and_forward_mode(tmp_path):
    rng = np.random.default_rng(6)
    with fg.Graph():
        a = fg.placeholder("a", (2,))
        t = fg.placeholder("t", (2,))
        xs = fg.placeholder("xs", (None, 2))

        def step(c, x):
            h, n = c
            return (fg.sin(h) * a + x, n + 1), {"y": h * 2.0, "one": 1.0}

        (hT, nT), ys = fg.scan(step, (a, fg.constant(np.int64(0))), xs)
        loss = fg.sum(hT) + fg.sum(ys["y"]) + fg.sum(ys["one"])
        outs = [hT, nT, ys["y"], ys["one"], loss, fg.jvp(loss, [a], [t]), fg.grad(loss, a)]
        feeds = [{a: np.array([0.3, 0.4]), t: np.array([1.0, -2.0]),
                  xs: rng.standard_normal((T, 2))} for T in (3, 0)]
        check(outs, feeds, tmp_path / "tree.onnx")


def test_a_pinned_predicate_and_a_cond_without_operands(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        flag = fg.placeholder("flag", (), dtype="bool")
        y = fg.cond(flag, lambda: fg.sum(x * x), lambda: fg.sum(fg.exp(x)))
        outs = [y, fg.grad(y, x)]
        X = np.array([1.0, 2.0, -1.0])
        check(outs, [{x: X, flag: np.bool_(v)} for v in (True, False)], tmp_path / "c.onnx")
        fg.export_onnx(outs, tmp_path / "pinned.onnx", feed={flag: True})
    got = run_onnx(tmp_path / "pinned.onnx", {"x": X})
    np.testing.assert_allclose(got[0], 6.0, rtol=1e-15)
    np.testing.assert_allclose(got[1], 2 * X, rtol=1e-15)
