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
    assert kinds.count("Scan") == 2     # the forward and ONE backward scan (ys and hT read)
    # each behind an If on an empty sequence (onnxruntime fails on a Scan of none)
    assert kinds.count("If") == 2 and "Loop" not in kinds


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
    assert kinds.count("Scan") == 2 and "If" not in kinds


def test_an_empty_scan_of_a_y_of_unknown_shape_fails_by_name(tmp_path):
    """flowgrad stacks a y of a run-time length over no iteration as (0, *its shape),
    the shape inferred from the inputs' by replaying the body's shape inference; an
    ONNX file cannot replay it without running the body, so it fails by name there
    (never a silently wrong shape), and runs for one slice or more."""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 2))
        c = fg.placeholder("c", (None,))
        _, ys = fg.scan(lambda h, x: (h, h * fg.sum(x)), c, xs)
        path = tmp_path / "unknown.onnx"
        fg.export_onnx(ys, path)
        got = fg.run(ys, {xs: np.zeros((0, 2)), c: np.ones(3)})
        assert got.shape == (0, 3) and got.dtype == np.float64
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


def test_run_time_lengths_that_disagree_fail_in_onnxruntime_too(tmp_path):
    """flowgrad's kernel refuses xs whose lengths disagree (with each other or with
    ``length=``): so does the exported file, by name, never running fewer steps."""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 2))
        zs = fg.placeholder("zs", (None,))
        step = lambda h, x: (h + x[0] * x[1], h * 2.0)   # noqa: E731
        fixed = fg.scan(step, fg.constant(np.zeros(2)), (xs, zs), length=3)[0]
        free = fg.scan(step, fg.constant(np.zeros(2)), (xs, zs))[0]
        for out, name in ((fixed, "fixed"), (free, "free")):
            fg.export_onnx(out, tmp_path / f"{name}.onnx")
        cases = ((np.ones((3, 2)), np.ones(3), True), (np.ones((2, 2)), np.ones(2), False),
                 (np.ones((3, 2)), np.ones(2), False), (np.ones((0, 2)), np.ones(0), False))
        for X, Z, ok in cases:
            if ok:
                assert run_onnx(tmp_path / "fixed.onnx", {"xs": X, "zs": Z})[0].tolist() == [3, 3]
                continue
            with pytest.raises((fg.RunError, fg.FeedError)):   # FeedError: the length rule
                fg.run(fixed, {xs: X, zs: Z})
            with pytest.raises(Exception, match="xs_length_is_not_3|inconsistent"):
                run_onnx(tmp_path / "fixed.onnx", {"xs": X, "zs": Z})
        for X, Z in ((np.ones((3, 2)), np.ones(2)), (np.ones((0, 2)), np.ones(2))):
            with pytest.raises((fg.RunError, fg.FeedError)):   # FeedError: the length rule
                fg.run(free, {xs: X, zs: Z})
            with pytest.raises(Exception, match="inconsistent sequence lengths"):
                run_onnx(tmp_path / "free.onnx", {"xs": X, "zs": Z})


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


# -- import_onnx ---------------------------------------------------------------------------------

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from flowgrad.io.onnx_import import OnnxImportError  # noqa: E402
from flowgrad.io import onnx_import_loops  # noqa: E402

D = TensorProto.DOUBLE


def read_back(path, outs, feed):
    """import_onnx(path); the nodes named as ``outs`` and their values on ``feed``."""
    g = fg.import_onnx(path)
    nodes = [g.by_name(o.name) for o in outs]
    return g, nodes, fg.run(nodes, {g.by_name(k.name): v for k, v in feed.items()})


def test_flowgrad_loops_read_back_with_their_values_and_gradients(tmp_path):
    rng = np.random.default_rng(7)
    Wv = rng.standard_normal((3, 3)) * 0.5
    X = rng.standard_normal((4, 3))
    with fg.Graph():
        W = fg.variable(Wv, name="W")
        xs = fg.placeholder("xs", (4, 3))
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h * x)),
                         fg.constant(np.ones(3)), xs, reverse=True)
        a = fg.placeholder("a", ())
        r = _newton(a, a * 0.5 + 0.5)
        p = fg.placeholder("p", (), dtype="bool")
        c = fg.cond(p, lambda v: fg.log(v), lambda v: v * v, hT + 2.0)
        k = fg.placeholder("k", (), dtype="int64")
        f1 = fg.fori_loop(1, 4, lambda i, v: v * 0.9 + fg.astype(i, "float64"), hT)
        f2 = fg.fori_loop(0, k, lambda i, v: v * 0.9 + fg.astype(i, "float64"), hT)
        cT, zs = fg.scan(lambda v, _: (v + 1.0, v * v), hT, length=3, reverse=True)
        outs = [hT, ys, r, c, f1, f2, cT, zs]
        path = tmp_path / "all.onnx"
        fg.export_onnx(outs, path)
        for pv, kv in ((True, 4), (False, 0)):
            feed = {xs: X, a: np.float64(2.0), p: np.bool_(pv), k: np.int64(kv)}
            want = fg.run(outs, feed)
            g, nodes, got = read_back(path, outs, feed)
            for o, w, v in zip(outs, want, got):
                np.testing.assert_array_equal(v, w, err_msg=o.name)
        loss = fg.sum(ys) + fg.sum(c) + fg.sum(f2) + fg.sum(zs)
        want = fg.run(fg.grad(loss, [W, a]), feed)
    with g:      # the read-back graph differentiates: W is a variable again
        loss = fg.sum(nodes[1]) + fg.sum(nodes[3]) + fg.sum(nodes[5]) + fg.sum(nodes[7])
        got = fg.run(fg.grad(loss, [g.by_name("W")]), {g.by_name(n): v for n, v in
                     (("xs", X), ("p", False), ("k", np.int64(0)))})
        np.testing.assert_allclose(got[0], want[0], rtol=1e-13, atol=1e-15)
        da = fg.grad(nodes[2], g.by_name("a"))
        np.testing.assert_allclose(fg.run(da, {g.by_name("a"): 2.0}), 0.5 / np.sqrt(2),
                                   rtol=1e-10)


def test_a_flowgrad_while_loop_read_back_still_fails_at_max_iters(tmp_path):
    with fg.Graph():
        k = fg.placeholder("k", (), dtype="int64")
        c = fg.while_loop(lambda c: c < k, lambda c: c + 1, fg.constant(np.int64(0)),
                          max_iters=3)
        fg.export_onnx(c, tmp_path / "limit.onnx")
    g = fg.import_onnx(tmp_path / "limit.onnx")
    c2 = g.by_name(c.name)
    assert fg.run(c2, {g.by_name("k"): np.int64(3)}) == 3
    with pytest.raises(fg.RunError, match="max_iters_reached"):
        fg.run(c2, {g.by_name("k"): np.int64(4)})


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=18, path=None):
    graph = helper.make_graph(nodes, "hand", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def _same_as_onnxruntime(path, feed, tol=1e-12):
    g = fg.import_onnx(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = sess.run(None, {k: np.asarray(v) for k, v in feed.items()})
    got = fg.run([g.by_name(n) for n in names], {g.by_name(k): v for k, v in feed.items()})
    for n, w, v in zip(names, want, got):
        assert np.asarray(v).shape == w.shape, n
        np.testing.assert_allclose(v, w, rtol=tol, atol=tol, err_msg=n)
    return g


def _scan_model(tmp_path):
    """An onnx.helper Scan: time on axis 1 of x, read backwards; one output stacked on
    axis 1 in trip order, one forwards on axis 0. A weight U read from the outer scope."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "U"], ["hu"]),
         helper.make_node("Add", ["hu", "x_t"], ["z"]),
         helper.make_node("Tanh", ["z"], ["h_out"]),
         helper.make_node("Mul", ["h_out", "x_t"], ["y1"]),
         helper.make_node("ReduceSum", ["h_out"], ["y2"], keepdims=0)],
        "step", [_vi("h_in", D, [3]), _vi("x_t", D, [3])],
        [_vi("h_out", D, [3]), _vi("y1", D, [3]), _vi("y2", D, [])])
    node = helper.make_node("Scan", ["h0", "x"], ["hT", "ys1", "ys2"], name="rnn", body=body,
                            num_scan_inputs=1, scan_input_axes=[1],
                            scan_input_directions=[1], scan_output_axes=[1, 0],
                            scan_output_directions=[0, 1])
    return _model([node], [_vi("h0", D, [3]), _vi("x", D, [3, "T"])],
                  [_vi("hT", D, [3]), _vi("ys1", D, [3, "T"]), _vi("ys2", D, ["T"])],
                  {"U": np.random.default_rng(8).standard_normal((3, 3)) * 0.5},
                  path=tmp_path / "scan.onnx")


def test_a_hand_made_scan_matches_onnxruntime_and_differentiates(tmp_path):
    path = _scan_model(tmp_path)
    rng = np.random.default_rng(9)
    feed = {"h0": rng.standard_normal(3), "x": rng.standard_normal((3, 5))}
    g = _same_as_onnxruntime(path, feed)
    _same_as_onnxruntime(path, {"h0": feed["h0"], "x": feed["x"][:, :1]})
    with g:
        U = g.by_name("U")
        loss = fg.sum(g.by_name("ys1") * g.by_name("ys1")) + fg.sum(g.by_name("hT"))
        dU = fg.run(fg.grad(loss, U), {g.by_name(k): v for k, v in feed.items()})
        base, eps = U.value.copy(), 1e-6
        fd = np.zeros((3, 3))
        for i in np.ndindex(3, 3):      # central differences on the weight
            vals = []
            for s in (eps, -eps):
                u = base.copy()
                u[i] += s
                U.value = u
                vals.append(fg.run(loss, {g.by_name(k): v for k, v in feed.items()}))
            fd[i] = (vals[0] - vals[1]) / (2 * eps)
        U.value = base
    np.testing.assert_allclose(dU, fd, rtol=1e-7, atol=1e-9)


def _count_loop(tmp_path, trips, scan_out=True):
    """A Loop that adds iter_num·s to a carry while its largest entry stays below a
    limit (``trips``: M, a constant or a graph input); its scan output: the carry as
    each trip began, passed through."""
    body_nodes = [
        helper.make_node("Cast", ["i"], ["fi"], to=D),
        helper.make_node("Mul", ["fi", "s"], ["step"]),
        helper.make_node("Add", ["v_in", "step"], ["v_out"]),
        helper.make_node("ReduceMax", ["v_out"], ["vmax"], keepdims=0),
        helper.make_node("Less", ["vmax", "limit"], ["go"]),
        helper.make_node("Identity", ["v_in"], ["seen"])]
    outs = [_vi("go", TensorProto.BOOL, []), _vi("v_out", D, [2])]
    outs += [_vi("seen", D, [2])] if scan_out else []
    body = helper.make_graph(body_nodes, "body",
                             [_vi("i", TensorProto.INT64, []),
                              _vi("c", TensorProto.BOOL, []), _vi("v_in", D, [2])], outs)
    inputs = [_vi("v0", D, [2]), _vi("s", D, []), _vi("limit", D, [])]
    inits = {}
    if isinstance(trips, int):
        inits["M"] = np.array(trips, np.int64)
    else:
        inputs.append(_vi("M", TensorProto.INT64, []))
    node = helper.make_node("Loop", ["M", "", "v0"],
                            ["vT"] + (["seen_all"] if scan_out else []), body=body)
    outputs = [_vi("vT", D, [2])] + ([_vi("seen_all", D, ["N", 2])] if scan_out else [])
    return _model([node], inputs, outputs, inits, path=tmp_path / "loop.onnx")


@pytest.mark.parametrize("trips", [6, "input"])
def test_hand_made_loops_with_a_condition_match_onnxruntime(trips, tmp_path):
    path = _count_loop(tmp_path, trips)
    for s, limit in ((0.5, 7.0), (0.5, 1e9), (0.5, -1.0)):
        feed = {"v0": np.array([0.25, 1.0]), "s": np.float64(s), "limit": np.float64(limit)}
        if trips == "input":
            feed["M"] = np.int64(5)
        _same_as_onnxruntime(path, feed)
    g = fg.import_onnx(path)
    assert any(n.op is not None and n.op.name == "loop" and
               n.attrs["spec"].kind == "while" for n in g.nodes)


def test_a_hand_made_loop_of_a_fixed_count_is_a_scan(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=D),
         helper.make_node("Mul", ["v_in", "fi"], ["y"]),
         helper.make_node("Add", ["v_in", "w"], ["v_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])],
        "body", [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []),
                 _vi("v_in", D, [2])],
        [_vi("c_out", TensorProto.BOOL, []), _vi("v_out", D, [2]), _vi("y", D, [2])])
    node = helper.make_node("Loop", ["M", "", "v0"], ["vT", "ys"], body=body)
    path = _model([node], [_vi("v0", D, [2]), _vi("w", D, [2])],
                  [_vi("vT", D, [2]), _vi("ys", D, [4, 2])], {"M": np.array(4, np.int64)},
                  path=tmp_path / "count.onnx")
    g = _same_as_onnxruntime(path, {"v0": np.array([1.0, -2.0]), "w": np.array([0.5, 3.0])})
    kinds = [n.attrs["spec"].kind for n in g.nodes if n.op is not None and n.op.name == "loop"]
    assert kinds == ["scan"] and g.by_name("ys").shape == (4, 2)


def _if_model(tmp_path, else_shape=(2,), depth=1):
    """If p: log(x)·w else x·x (w read from the outer scope), nested ``depth`` deep."""
    then_g = helper.make_graph([helper.make_node("Log", ["x"], ["lx"]),
                                helper.make_node("Mul", ["lx", "w"], ["t_out"])],
                               "then", [], [_vi("t_out", D, [2])])
    for level in range(depth - 1):     # If p: (the If inside) else w·x
        other = helper.make_graph([helper.make_node("Mul", ["x", "w"], [f"other{level}"])],
                                  f"other{level}", [], [_vi(f"other{level}", D, [2])])
        inner = helper.make_node("If", ["p"], [f"nest{level}"], then_branch=then_g,
                                 else_branch=other)
        then_g = helper.make_graph([inner], f"nest{level}", [], [_vi(f"nest{level}", D, [2])])
    else_nodes = [helper.make_node("Mul", ["x", "x"], ["e_out"])]
    if else_shape != (2,):
        else_nodes.append(helper.make_node("ReduceSum", ["e_out"], ["e_sum"], keepdims=0))
    else_g = helper.make_graph(else_nodes, "else", [],
                               [_vi("e_out" if else_shape == (2,) else "e_sum", D,
                                    list(else_shape))])
    node = helper.make_node("If", ["p"], ["y"], name="branch", then_branch=then_g,
                            else_branch=else_g)
    return _model([node], [_vi("x", D, [2]), _vi("w", D, []), _vi("p", TensorProto.BOOL, [])],
                  [_vi("y", D, [2])], path=tmp_path / "if.onnx")


def test_a_hand_made_if_runs_one_branch(tmp_path):
    path = _if_model(tmp_path, depth=2)
    for p, x in ((True, [2.0, 0.5]), (False, [-2.0, 0.0])):
        feed = {"x": np.array(x), "w": np.float64(1.5), "p": np.bool_(p)}
        g = _same_as_onnxruntime(path, feed)
        with g:
            gx = fg.run(fg.grad(fg.sum(g.by_name("y")), g.by_name("x")),
                        {g.by_name(k): v for k, v in feed.items()})
        want = 1.5 / np.array(x) if p else 2 * np.array(x)
        np.testing.assert_allclose(gx, want, rtol=1e-15)   # finite: log never ran


def test_nesting_is_bounded_at_max_depth(tmp_path):
    fg.import_onnx(_if_model(tmp_path, depth=onnx_import_loops.MAX_DEPTH))
    with pytest.raises(OnnxImportError, match="nest more than 16 deep"):
        fg.import_onnx(_if_model(tmp_path, depth=onnx_import_loops.MAX_DEPTH + 1))


def test_branches_that_disagree_are_refused(tmp_path):
    with pytest.raises(OnnxImportError, match="branch"):
        fg.import_onnx(_if_model(tmp_path, else_shape=()))


def test_scan_outputs_computed_in_a_while_loop_are_refused(tmp_path):
    path = _count_loop(tmp_path, 6)
    model = onnx.load(str(path))
    body = model.graph.node[0].attribute[0].g
    body.node[-1].op_type = "Neg"       # "seen" is no longer the carry passed through
    onnx.save(model, str(path))
    with pytest.raises(OnnxImportError, match="seen.*flowgrad stacks only"):
        fg.import_onnx(path)


def test_a_loop_without_a_bound_stops_at_loop_max_iters_by_an_error(tmp_path, monkeypatch):
    path = _count_loop(tmp_path, 6, scan_out=False)
    model = onnx.load(str(path))
    model.graph.node[0].input[0] = ""          # no trip count: until the condition fails
    del model.graph.initializer[:]
    onnx.save(model, str(path))
    monkeypatch.setattr(onnx_import_loops, "LOOP_MAX_ITERS", 3)
    g = fg.import_onnx(path)
    feed = {g.by_name("v0"): np.zeros(2), g.by_name("s"): 1.0}
    # trips add 0, 1, 2, 3: below 2.5 the third trip stops it, below 3.5 it takes a fourth
    np.testing.assert_array_equal(fg.run(g.by_name("vT"), {**feed, g.by_name("limit"): 2.5}),
                                  [3.0, 3.0])
    with pytest.raises(fg.LoopLimitError):
        fg.run(g.by_name("vT"), {**feed, g.by_name("limit"): 3.5})


@pytest.mark.parametrize("case", ["opset8", "dtype", "shape", "redefine", "bomb"])
def test_malformed_loops_are_typed_errors(case, tmp_path):
    path = _scan_model(tmp_path)
    model = onnx.load(str(path))
    scan = model.graph.node[0]
    body = scan.attribute[0].g
    match = {"opset8": "opset 9|Scan has no attribute", "dtype": "declared float32", "shape": "declared of shape",
             "redefine": "already produced", "bomb": "budget"}[case]
    if case == "opset8":
        model.opset_import[0].version = 8
    elif case == "dtype":
        body.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    elif case == "shape":
        body.input[1].type.tensor_type.shape.dim[0].dim_value = 4
    elif case == "redefine":
        body.node[0].output[0] = "h0"           # an outer tensor assigned again
        body.node[1].input[0] = "h0"
    else:
        body.node.insert(0, helper.make_node(
            "ConstantOfShape", ["bomb_shape"], ["bomb"],
            value=numpy_helper.from_array(np.zeros(1))))
        body.initializer.append(numpy_helper.from_array(np.array([1 << 14, 1 << 14],
                                                                 np.int64), "bomb_shape"))
    onnx.save(model, str(path))
    with pytest.raises(OnnxImportError, match=match):
        fg.import_onnx(path)


def test_outputs_keep_what_a_body_reads_from_outside(tmp_path):
    """``outputs=`` prunes to what they need, and a body's reads by name count: U is
    read only inside the Scan's body."""
    path = _scan_model(tmp_path)
    g = fg.import_onnx(path, outputs=["hT"])
    assert g.by_name("U").kind == "variable"
    feed = {"h0": np.ones(3), "x": np.ones((3, 2))}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["hT"], feed)[0]
    np.testing.assert_allclose(fg.run(g.by_name("hT"), {g.by_name(k): v for k, v in
                                                        feed.items()}), want, rtol=1e-14)


def test_read_back_loops_export_again(tmp_path):
    """Hand-made Scan, Loop and If, read back and written again by flowgrad, give
    onnxruntime's values of the original (the while loop's condition is a bool where)."""
    cases = [(_scan_model, {"h0": np.ones(3), "x": np.linspace(0, 1, 12).reshape(3, 4)}),
             (lambda p: _count_loop(p, 6), {"v0": np.array([0.25, 1.0]), "s": np.array(0.5),
                                            "limit": np.array(7.0)}),
             (lambda p: _if_model(p, depth=3), {"x": np.array([2.0, 0.5]), "w": np.array(1.5),
                                                "p": np.array(True)})]
    for make, feed in cases:
        path = make(tmp_path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        want = sess.run(None, feed)
        g = fg.import_onnx(path)
        fg.export_onnx([g.by_name(n) for n in names], tmp_path / "again.onnx")
        for n, w, v in zip(names, want, run_onnx(tmp_path / "again.onnx", feed)):
            np.testing.assert_allclose(v, w, rtol=1e-14, err_msg=n)


def test_a_bool_where_exports(tmp_path):
    """onnxruntime has no Where of bools: it is written with And, Or and Not."""
    with fg.Graph():
        c = fg.placeholder("c", (2, 1), dtype="bool")
        a = fg.placeholder("a", (3,), dtype="bool")
        y = fg.where(c, a, False)
        fg.export_onnx(y, tmp_path / "w.onnx")
        C, A = np.array([[True], [False]]), np.array([True, False, True])
        got = run_onnx(tmp_path / "w.onnx", {"c": C, "a": A})[0]
        np.testing.assert_array_equal(got, fg.run(y, {c: C, a: A}))
        assert got.dtype == np.bool_ and got.tolist() == [[True, False, True], [False] * 3]


def test_a_run_time_length_rnn_reads_back_and_differentiates(tmp_path):
    """The If that guards an empty Scan reads back as a cond (its Shape, a run-time
    length, and its constants of no iteration), the Scan inside its else branch."""
    rng = np.random.default_rng(12)
    with fg.Graph():
        W = fg.variable(rng.standard_normal((3, 3)) * 0.5, name="W")
        xs = fg.placeholder("xs", (None, 3))
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h * x)),
                         fg.constant(np.ones(3)), xs)
        loss = fg.sum(ys) + fg.sum(hT * hT)
        fg.export_onnx([hT, ys, loss], tmp_path / "rnn.onnx")
        outs = [hT, ys, loss, fg.grad(loss, W)]
        g = fg.import_onnx(tmp_path / "rnn.onnx")
        with g:
            back = [g.by_name(o.name) for o in outs[:3]]
            back.append(fg.grad(back[2], g.by_name("W")))
        for T in (5, 1, 0):
            X = rng.standard_normal((T, 3))
            want = fg.run(outs, {xs: X})
            got = fg.run(back, {g.by_name("xs"): X})
            for o, w, v in zip(outs, want, got):
                assert np.shape(v) == np.shape(w), o.name
                np.testing.assert_allclose(v, w, rtol=1e-13, atol=1e-15, err_msg=o.name)
    assert g.by_name(ys.name).shape == (None,)


def test_cond_joins_a_known_and_a_run_time_length():
    """A branch's empty constant against the other's run-time length: the result has the
    run-time length (lengths that both branches know and that differ are refused)."""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 2))
        p = fg.placeholder("p", (), dtype="bool")
        y = fg.cond(p, lambda: fg.constant(np.zeros((0, 2))), lambda: xs * 2.0)
        assert y.shape == (None, 2)
        X = np.ones((3, 2))
        assert fg.run(y, {p: True, xs: X}).shape == (0, 2)
        np.testing.assert_array_equal(fg.run(y, {p: False, xs: X}), 2 * X)
        gx = fg.grad(fg.sum(y * y), xs)
        np.testing.assert_array_equal(fg.run(gx, {p: False, xs: X}), 8 * X)
        np.testing.assert_array_equal(fg.run(gx, {p: True, xs: X}), 0 * X)
        with pytest.raises(fg.ShapeError, match="else branch"):
            fg.cond(p, lambda: fg.constant(np.zeros((1, 2))),
                    lambda: fg.constant(np.zeros((2, 2))))
        with pytest.raises(fg.ShapeError, match="else branch"):
            fg.cond(p, lambda: fg.constant(np.zeros((0,))), lambda: xs)


def test_a_float32_scan_reads_back_in_float32(tmp_path):
    rng = np.random.default_rng(13)
    with fg.Graph():
        W = fg.variable((rng.standard_normal((3, 3)) * 0.5).astype("float32"), name="W")
        xs = fg.placeholder("xs", (None, 3), dtype="float32")
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h * x)),
                         fg.constant(np.ones(3, np.float32)), xs)
        loss = fg.sum(ys) + fg.sum(hT * hT)
        fg.export_onnx(loss, tmp_path / "f32.onnx")
        want = fg.run([loss, fg.grad(loss, W)], {xs: np.ones((4, 3), np.float32)})
    g = fg.import_onnx(tmp_path / "f32.onnx")
    with g:
        back = g.by_name(loss.name)
        got = fg.run([back, fg.grad(back, g.by_name("W"))],
                     {g.by_name("xs"): np.ones((4, 3), np.float32)})
    assert back.dtype == np.float32 and got[1].dtype == np.float32
    for w, v in zip(want, got):
        np.testing.assert_allclose(v, w, rtol=1e-6, atol=1e-6)
