"""fg.cond, fg.fori_loop and fg.while_loop: values, both derivative modes to second order,
only the taken branch running, reverse mode through while loops, typed refusals."""
import numpy as np
import pytest

import flowgrad as fg


def _safe_log_model():
    x = fg.placeholder("x", ())
    y = fg.cond(x > 0.0, lambda v: fg.log(v) * v, lambda v: v * v, x)
    return x, y


def test_cond_untaken_log_does_not_poison_the_gradient():
    with fg.Graph():
        x, y = _safe_log_model()
        g = fg.grad(y, x)
        h = fg.grad(g, x)
        prog = fg.compile([y, g, h])
        with fg.detect_anomaly():
            assert prog(x=-2.0) == [4.0, -4.0, 2.0]
            assert prog(x=0.0) == [0.0, 0.0, 2.0]
        v, d, d2 = prog(x=2.0)
    assert v == pytest.approx(2 * np.log(2.0), rel=1e-15)
    assert d == pytest.approx(np.log(2.0) + 1, rel=1e-15)
    assert d2 == pytest.approx(0.5, rel=1e-15)
    # fg.where evaluates both branches: its gradient at x = -2 is NaN (what cond fixes)
    with fg.Graph():
        x = fg.placeholder("x", ())
        w = fg.where(x > 0.0, fg.log(x) * x, x * x)
        with np.errstate(all="ignore"):
            assert np.isnan(fg.run(fg.grad(w, x), x=-2.0))


def test_cond_check_grads_and_jvp_with_captures():
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        w = fg.placeholder("w", (3,))
        p = fg.placeholder("p", (), dtype="bool")
        out = fg.cond(p, lambda a: fg.sin(a * w), lambda a: fg.exp(a) + w * w, x)
        f = fg.sum(out * out)
        feed = {"x": np.array([0.1, -0.4, 0.7]), "w": np.array([1.5, 0.3, -0.8])}
        for pv in (True, False):
            fg.check_grads(f, [x, w], {**feed, "p": pv}, order=2)
        t = fg.jvp(out, [x, w], [np.ones(3), np.ones(3)])
        got = fg.compile(t)({**feed, "p": True})
    xv, wv = feed["x"], feed["w"]
    np.testing.assert_allclose(got, np.cos(xv * wv) * (wv + xv), rtol=1e-14)


def test_cond_refusals():
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        with pytest.raises(fg.ShapeError, match="0-d bool"):
            fg.cond(x > 0.0, lambda v: v, lambda v: v, x)
        with pytest.raises(fg.ShapeError, match="else branch"):
            fg.cond(fg.sum(x) > 0.0, lambda v: v, lambda v: fg.sum(v), x)
        with pytest.raises(fg.UsageError, match="structure"):
            fg.cond(fg.sum(x) > 0.0, lambda v: (v, v), lambda v: [v, v], x)


def test_fori_loop_static_and_node_bounds():
    with fg.Graph():
        a = fg.placeholder("a", ())
        c = fg.fori_loop(0, 5, lambda i, c: c * a + fg.astype(i, "float64"), fg.constant(1.0))
        n = fg.placeholder("n", (), dtype="int64")
        d = fg.fori_loop(0, n, lambda i, c: c * a + fg.astype(i, "float64"), fg.constant(1.0))
        ga, gd = fg.grad(c, a), fg.grad(d, a)
        out = fg.compile([c, d, ga, gd])(a=0.5, n=5)
    # c_5 = a^5 + sum_i i a^(4-i)
    want = 0.5 ** 5 + sum(i * 0.5 ** (4 - i) for i in range(5))
    dwant = 5 * 0.5 ** 4 + sum(i * (4 - i) * 0.5 ** (3 - i) for i in range(4))
    np.testing.assert_allclose(out, [want, want, dwant, dwant], rtol=1e-14)


def _newton(a):
    return fg.while_loop(lambda x: fg.abs(x * x - a) > 1e-12 * a,
                         lambda x: 0.5 * (x + a / x), a, max_iters=100)


def test_while_loop_newton_sqrt_and_its_gradient():
    with fg.Graph():
        a = fg.placeholder("a", ())
        r = _newton(a)
        g = fg.grad(r, a)
        out = fg.compile([r, g])(a=2.0)
    assert out[0] == pytest.approx(np.sqrt(2.0), rel=1e-15)
    # the derivative of the iteration (not of sqrt): within the iteration's own error
    assert out[1] == pytest.approx(1 / (2 * np.sqrt(2.0)), rel=1e-10)


def test_while_loop_exact_derivatives_against_unrolled_and_fd():
    # a loop whose trip count is fixed by an int counter: derivatives are exact
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        c0 = (fg.constant(np.int64(0)), x)
        k, y = fg.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + np.int64(1), fg.sin(c[1]) * x),
                             c0)
        f = fg.sum(y * y)
        grads = [fg.grad(f, x), fg.hvp(f, x, np.array([1.0, -2.0]))]
        got = fg.compile([k, f, *grads])(x=np.array([0.3, -0.9]))
        fg.check_grads(f, x, {"x": np.array([0.3, -0.9])}, order=2)
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        y = x
        for _ in range(3):
            y = fg.sin(y) * x
        f = fg.sum(y * y)
        want = fg.compile([f, fg.grad(f, x), fg.hvp(f, x, np.array([1.0, -2.0]))])(
            x=np.array([0.3, -0.9]))
    assert got[0] == 3
    for a, b in zip(got[1:], want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_while_loop_max_iters_is_a_typed_error_naming_the_loop():
    with fg.Graph():
        x = fg.placeholder("x", ())
        y = fg.while_loop(lambda v: v < 10.0, lambda v: v + 1.0, x, max_iters=5)
        prog = fg.compile(y)
        assert prog(x=5.0) == 10.0          # five iterations: exactly the bound
        with pytest.raises(fg.LoopLimitError, match=r"while_loop built at .*test_control_flow"):
            prog(x=4.0)
        with pytest.raises(fg.UsageError, match="max_iters"):
            fg.while_loop(lambda v: v < 1.0, lambda v: v, x, max_iters=-1)
        with pytest.raises(fg.ShapeError, match="0-d bool"):
            fg.while_loop(lambda v: v, lambda v: v, x)


def test_loops_run_with_codegen_off_and_checked():
    with fg.Graph():
        x, y = _safe_log_model()
        n = _newton(fg.placeholder("a", ()))
        outs = [y, fg.grad(y, x), n, fg.grad(n, n.graph.by_name("a"))]
        a = fg.compile(outs, codegen=False)(x=-3.0, a=9.0)
        b = fg.compile(outs, check_numerics=True)(x=-3.0, a=9.0)
        c = fg.compile(outs)(x=-3.0, a=9.0)
    for u, v, w in zip(a, b, c):
        assert u == v == w


def test_everywhere_else_a_node_goes():
    """Drawings (one box, "scan × T"; traces with backward=True) and the dask backend:
    each draws or runs (graph files: tests/test_control_graphfile.py; ONNX:
    tests/test_onnx_loops.py; every backend: tests/test_control_backends.py)."""
    with fg.Graph():
        W = fg.placeholder("W", (3, 3))
        xs = fg.placeholder("xs", (None, 3))
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h)),
                         fg.constant(np.zeros(3)), xs)
        loss = fg.sum(ys) + fg.sum(hT)
        src = fg.viz.draw(loss).source
        assert "<B>scan × T</B>" in src
        assert src.count("-> n4 ") == 1 and src.count("-> n5 ") == 1  # results hang off the box
        body = fg.viz.draw(loss, expand=["scan"]).source        # the body as a cluster
        assert "cluster_b3_0" in body and "captured W" in body and "x slice 0" in body
        assert "cluster" not in src
        tr = fg.compile([loss, fg.grad(loss, W)]).trace(W=np.eye(3), xs=np.ones((4, 3)))
        assert "scan × T" in fg.viz.draw(tr, backward=True).source
        on_dask = fg.compile(loss, backend="dask")(W=np.eye(3), xs=np.ones((4, 3)))
        assert on_dask == fg.compile(loss)(W=np.eye(3), xs=np.ones((4, 3)))
        # a walkthrough steps through each iteration; a precision audit sees one step
        walk = fg.viz.walkthrough(tr)
        assert len(walk.frames) > 4
        # a formula writes a scan's result as its recurrence (tests/test_control_viz.py)
        assert str(fg.viz.formula(hT)) == \
            "h_T   where h_0 = 0, h_t = tanh(h_{t−1} W + x_t), x_t = xs[t − 1]"
        fg.precision_audit(loss, {"W": np.eye(3), "xs": np.ones((4, 3))})


def test_float32_carry_reverse_scan_jvp_and_cond_without_operands():
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    with fg.Graph():
        w = fg.placeholder("w", (3,), dtype="float32")
        xs = fg.placeholder("xs", (None, 3), dtype="float32")
        h0 = fg.constant(np.zeros(3, np.float32))
        hT, ys = fg.scan(lambda h, x: (fg.sin(h * w + x), h * x), h0, xs, reverse=True)
        g = fg.grad(fg.sum(ys) + fg.sum(hT), w)
        t = fg.jvp(ys, w, np.ones(3, np.float32))
        got = fg.compile([hT, ys, g, t])(w=np.ones(3), xs=X)
        c = fg.cond(fg.sum(w) > 0.0, lambda: w * 2.0, lambda: w * 3.0)
        gc = fg.grad(fg.sum(c), w)
        assert fg.compile([c, gc])(w=-np.ones(3)) [1].tolist() == [3.0, 3.0, 3.0]
    assert all(v.dtype == np.float32 for v in got)
    with fg.Graph():   # the same reverse scan unrolled, in float64
        w = fg.placeholder("w", (3,))
        xs = fg.placeholder("xs", (4, 3))
        h, ys = fg.constant(np.zeros(3)), [None] * 4
        for k in range(3, -1, -1):
            ys[k] = h * xs[k]
            h = fg.sin(h * w + xs[k])
        ys = fg.stack(ys)
        want = fg.compile([h, ys, fg.grad(fg.sum(ys) + fg.sum(h), w),
                           fg.jvp(ys, w, np.ones(3))])(w=np.ones(3), xs=X)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)


def test_loops_of_python_numbers_stay_nodes():
    # apply folds an op whose inputs are all Python numbers at once: a loop must not be
    with fg.Graph():
        hT, ys = fg.scan(lambda h, _: (h * 2.0, h), 1.0, length=4)
        w = fg.while_loop(lambda v: v < 10.0, lambda v: v + 3.0, 1.0)
        c = fg.cond(True, lambda v: v + 1.0, lambda v: v - 1.0, 2.0)
        f = fg.fori_loop(0, 3, lambda i, v: v * 3.0, 1.0)
        for codegen in (True, False):
            got = fg.compile([hT, ys, w, c, f], codegen=codegen)()
            assert [np.asarray(v).tolist() for v in got] == [16.0, [1.0, 2.0, 4.0, 8.0],
                                                             10.0, 3.0, 27.0]


def test_the_howto_drawing_is_the_pages_own_block():
    import pathlib
    import re
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "howto-loops.md").read_text(encoding="utf-8")
    code = re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M)[1]
    space = {"__name__": "howto_loops"}
    exec(compile(code, "docs/howto-loops.md block 1", "exec"), space)
    svg = (docs / "loops-rnn.svg").read_text(encoding="utf-8")
    assert "(loops-rnn.svg)" in page and len(svg) < 40_000
    assert "scan × T" in svg and "body of scan × T" in svg
    assert "scan × T" in space["drawing"].source
