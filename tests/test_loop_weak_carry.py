"""An initial loop carry given as a Python number is weakly typed, as every Python number
in flowgrad is (numpy 2's NEP 50, JAX's weak types): ``fg.scan(lambda c, x: (c + x, c),
0.0, xs)`` over float32 ``xs`` carries float32, as JAX's scan promotes a weakly typed
carry to the dtype its body returns and as the same loop written in numpy 2 stays
float32. These made the carry float64 (int64, complex128), so ``c + x`` ran in float64,
or, where the body cast it (``c * 0.5 + w`` of an int ``0``), refused the loop.

The reference is each loop written as a plain Python loop over numpy scalars, whose
dtype numpy 2 settles by the same rule; every executor, a graph file round trip and
ONNX (onnxruntime) must give its dtype and values."""
import numpy as np
import pytest

import flowgrad as fg

EXECUTORS = [{}, {"codegen": False}, {"verify": True}, {"check_numerics": True},
             {"backend": "dask"}]

XS32 = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
W32 = np.float32(1.5)
N = 5


def _numpy_reference():
    """The loops of ``_loops`` as plain numpy 2 loops (NEP 50 types the numbers)."""
    c, ys = 0.0, []
    for x in XS32:
        ys.append(c)
        c = c + x
    scan_c, scan_ys = c, np.array(ys, dtype=np.result_type(*ys))
    w = 0.0
    while w < 10:
        w = w + W32
    f = 1.0
    for _ in range(3):
        f = f * W32
    g = 1.0
    for _ in range(N):
        g = g * W32
    h = 0
    for _ in range(3):
        h = h * 0.5 + W32
    z = 0j
    for x in XS32:
        z = z + x
    k = 0
    for x in XS32.astype(np.int32) + np.int32(2):
        k = k + x
    d = 1.0
    for _ in range(3):
        d = d * 2.0
    return [scan_c, scan_ys, w, f, g, h, z, k, d]


def _loops():
    xs = fg.placeholder("xs", (None,), "float32")
    w = fg.placeholder("w", (), "float32")
    n = fg.placeholder("n", (), "int64")
    scan_c, scan_ys = fg.scan(lambda c, x: (c + x, c), 0.0, xs)
    return [scan_c, scan_ys,
            fg.while_loop(lambda c: c < 10, lambda c: c + w, 0.0),
            fg.fori_loop(0, 3, lambda i, c: c * w, 1.0),          # a scan
            fg.fori_loop(0, n, lambda i, c: c * w, 1.0),          # a while loop
            fg.fori_loop(0, 3, lambda i, c: c * 0.5 + w, 0),      # an int made float32
            fg.scan(lambda c, x: (c + x, None), 0j, xs)[0],        # complex64
            fg.scan(lambda c, x: (c + x, None), 0,
                    fg.astype(xs, "int32") + np.int32(2))[0],     # int32
            fg.fori_loop(0, 3, lambda i, c: c * 2.0, 1.0)]        # no dtype: float64


FEED = {"xs": XS32, "w": W32, "n": np.int64(N)}


def _check(got, want):
    for k, (g, v) in enumerate(zip(got, want)):
        g = g.compute() if hasattr(g, "compute") else g
        assert np.asarray(g).dtype == np.asarray(v).dtype, (k, np.asarray(g).dtype)
        np.testing.assert_allclose(g, v, rtol=1e-6, err_msg=str(k))


def test_the_numpy_reference_is_weakly_typed():
    # the independent reference itself: numpy 2 keeps these float32 / complex64 / int32
    want = _numpy_reference()
    assert [np.asarray(v).dtype.name for v in want] == [
        "float32", "float32", "float32", "float32", "float32", "float32", "complex64",
        "int32", "float64"]


@pytest.mark.parametrize("kw", EXECUTORS)
def test_a_number_carry_takes_the_dtype_its_body_gives_it(kw):
    with fg.Graph():
        outs = _loops()
        assert [o.dtype.name for o in outs] == [
            "float32", "float32", "float32", "float32", "float32", "float32", "complex64",
            "int32", "float64"]
        got = fg.compile(outs, **kw)(**FEED)
    _check(got, _numpy_reference())


def test_a_saved_and_loaded_loop_keeps_the_settled_dtype(tmp_path):
    with fg.Graph():
        outs = _loops()
        for k, o in enumerate(outs):
            o.named(f"out{k}")
        path = fg.save_graph(tmp_path / "weak.fg", outs)
    g = fg.load_graph(path)
    loaded = [g.by_name(f"out{k}") for k in range(len(outs))]
    for codegen in (True, False):
        _check(fg.compile(loaded, codegen=codegen)(**FEED), _numpy_reference())


def test_onnx_export_keeps_the_settled_dtype(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    with fg.Graph():
        outs = _loops()
        outs = [o for o in outs if o.dtype.kind != "c"]   # (ONNX refuses complex)
        fg.export_onnx(outs, tmp_path / "weak.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "weak.onnx")), full_check=True)
    sess = ort.InferenceSession(str(tmp_path / "weak.onnx"),
                                providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    got = sess.run(None, {k: np.asarray(v) for k, v in FEED.items() if k in names})
    _check(got, [v for v in _numpy_reference() if np.asarray(v).dtype.kind != "c"])


def test_the_gradient_through_a_number_carry_is_float32_and_exact():
    # c = w**3 from c0 = 1.0: dc/dw = 3 w**2, in w's float32
    with fg.Graph():
        w = fg.variable(W32, name="w")
        c = fg.fori_loop(0, 3, lambda i, c: c * w, 1.0)
        s, _ = fg.scan(lambda c, x: (c + x * w, None), 0.0,
                       fg.constant(XS32))
        gc, gs = fg.grad(c, w), fg.grad(s, w)
        got = fg.compile([c, gc, gs])()
    assert [np.asarray(v).dtype for v in got] == [np.float32] * 3
    np.testing.assert_allclose(got, [W32 ** 3, 3 * W32 ** 2, XS32.sum()], rtol=1e-6)


def test_a_layer_first_called_in_the_body_builds_once():
    # the body is called twice while traced (first on the number): both calls build
    # into the body's graph, so the layer's variables are made once and reused
    with fg.Graph():
        xs = fg.placeholder("xs", (3, 2, 4), "float32")
        dense = fg.nn.Dense(5, seed=0)
        c, _ = fg.scan(lambda c, x: (c + fg.sum(dense(x)), None), 0.0, xs)
        assert c.dtype == np.float32 and len(dense.variables) == 2
        X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 2, 4)
        got = fg.compile(c)(xs=X)
        W, b = (fg.compile(v)() for v in dense.variables)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, sum(float((x @ W + b).sum()) for x in X), rtol=1e-5)


def test_a_cond_operand_number_is_weakly_typed():
    with fg.Graph():
        p = fg.placeholder("p", (), "bool")
        x = fg.placeholder("x", (), "float32")
        y = fg.cond(p, lambda a: a + x, lambda a: a * x, 1.5)
        assert y.dtype == np.float32
        prog = fg.compile(y)
        for pv, want in ((True, 1.5 + np.float32(2)), (False, 1.5 * np.float32(2))):
            got = prog(p=np.bool_(pv), x=np.float32(2))
            assert got.dtype == np.float32 and got == want


def test_strong_numbers_and_unfitting_numbers_keep_their_dtype():
    with fg.Graph():
        xs = fg.placeholder("xs", (4,), "float32")
        u8 = fg.placeholder("u8", (4,), "uint8")
        # a numpy scalar is strongly typed, as in numpy: float64 + float32 is float64
        strong, _ = fg.scan(lambda c, x: (c + x, None), np.float64(0.0), xs)
        # uint8 cannot hold 300 (uint8 + 300 is refused): the carry stays int64
        wide, _ = fg.scan(lambda c, x: (c + x, None), 300, u8)
        # the first float float32 rounds to inf (its largest value plus half an ulp)
        # does not fit either: float64; the float just below it is float32's largest
        edge = float(2 ** 128 - 2 ** 103)
        below = float(np.nextafter(edge, 0))
        with np.errstate(over="ignore"):
            assert np.float32(edge) == np.inf
        assert np.float32(below) == np.finfo(np.float32).max
        over, _ = fg.scan(lambda c, x: (c + x, None), edge, xs)
        fits, _ = fg.scan(lambda c, x: (c + x, None), below, xs)
        got = fg.compile([strong, wide, over, fits])(
            xs=XS32, u8=np.array([250] * 4, np.uint8))
    assert [v.dtype for v in got] == [np.float64, np.int64, np.float64, np.float32]
    assert got[0] == sum(np.float64(x) for x in XS32) and got[1] == 300 + 1000
    assert got[2] == edge + sum(np.float64(x) for x in XS32)
    assert got[3] == np.finfo(np.float32).max
