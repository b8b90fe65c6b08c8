"""fg.import_onnx reads back flowgrad's own exports that write Range, GatherND, EyeLike
and ConstantOfShape of a run-time shape (each used to be refused).

1. Round trips: export → import → run agrees with the original flowgrad graph bit for
   bit, and with onnxruntime on the file (bit for bit where the ops are exact).
2. The operators as ONNX writes them (onnx helper API), against onnxruntime.
3. Refusals, each at its boundary: the last value imported beside the first refused.
"""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.io.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _round_trip(tmp_path, name, shape, fn, feeds_x, dtype="float64", extra=None):
    """(original values, imported values, onnxruntime values, op types in the file)."""
    with fg.Graph():
        x = fg.placeholder("x", shape=shape, dtype=dtype)
        ins = {x: feeds_x}
        args = [x]
        if extra is not None:
            t = fg.placeholder("t", shape=extra[0], dtype=extra[1].dtype)
            ins[t] = extra[1]
            args.append(t)
        outs = fn(*args)
        want = fg.run(outs, ins)
        path = fg.export_onnx(outs, tmp_path / f"{name}.onnx")
    model = onnx.load(path)
    names = [o.name for o in model.graph.output]
    g = fg.import_onnx(path)
    feeds = {g.by_name("x"): feeds_x}
    ort_feeds = {"x": feeds_x}
    if extra is not None:
        feeds[g.by_name("t")] = extra[1]
        ort_feeds["t"] = extra[1]
    got = fg.run([g.by_name(k) for k in names], feeds)
    ops = {n.op_type for n in model.graph.node}
    return want, got, _ort(path, ort_feeds), ops


def _lstm(x):
    out = fg.nn.LSTM(3, 4)(x)
    return [(out[0] if isinstance(out, tuple) else out).named("y")]


@pytest.mark.parametrize("batch", [3, 1, 0])
def test_lstm_on_a_run_time_batch_reads_back(tmp_path, batch):
    """Its zeros_like of the run-time batch is a ConstantOfShape of a Shape."""
    X = np.random.default_rng(batch).standard_normal((batch, 5, 3))
    want, got, ref, ops = _round_trip(tmp_path, "lstm", (None, 5, 3), _lstm, X)
    assert "ConstantOfShape" in ops
    for w, a, r in zip(want, got, ref):
        assert a.shape == w.shape == r.shape and a.dtype == w.dtype
        np.testing.assert_array_equal(a, w)
        np.testing.assert_allclose(a, r, rtol=1e-13, atol=1e-15)   # (tanh, sigmoid, matmul)


@pytest.mark.parametrize("shape,rows", [((4, 4), 4), ((None, 4), 3), ((None, 4), 0)])
def test_trace_reads_back_its_eye_like(tmp_path, shape, rows):
    """On run-time rows, its mask is a ConstantOfShape of a Shape's lengths and its
    broadcast an Expand to a Shape."""
    X = np.random.default_rng(1).standard_normal((rows, 4))

    def fn(x):
        y = fg.trace(x) * x
        return [y.named("y"), fg.grad(fg.sum(y * y), [x])[0].named("gx")]
    want, got, ref, ops = _round_trip(tmp_path, "trace", shape, fn, X)
    assert {"EyeLike", "ConstantOfShape"} <= ops
    for w, a, r in zip(want, got, ref):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_allclose(a, r, rtol=1e-14)
    tr = np.trace(X)
    np.testing.assert_array_equal(got[0], tr * X)


@pytest.mark.parametrize("shape,rows", [((5, 4), 5), ((None, 4), 3)])
def test_advanced_indexing_reads_back_its_gather_nd(tmp_path, shape, rows):
    X = np.random.default_rng(2).standard_normal((rows, 4))
    want, got, ref, ops = _round_trip(tmp_path, "adv", shape,
                                      lambda x: [x[[0, -1, 1], [1, 3, 0]].named("y")], X)
    assert "GatherND" in ops
    np.testing.assert_array_equal(got[0], X[[0, -1, 1], [1, 3, 0]])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0], ref[0])


def test_cross_entropy_with_labels_reads_back_its_range(tmp_path):
    rng = np.random.default_rng(3)
    X, T = rng.standard_normal((3, 4)), np.array([1, 0, 3], np.int64)

    def fn(x, t):
        y = fg.softmax_cross_entropy(x, t, reduction="none")
        return [y.named("y"), fg.grad(fg.sum(y), [x])[0].named("gx")]
    want, got, ref, ops = _round_trip(tmp_path, "sce", (None, 4), fn, X,
                                      extra=((None,), T))
    assert "Range" in ops
    for w, a, r in zip(want, got, ref):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_allclose(a, r, rtol=1e-14)
    z = X - X.max(1, keepdims=True)
    np.testing.assert_allclose(got[0], -(z - np.log(np.exp(z).sum(1, keepdims=True)))
                               [np.arange(3), T], rtol=1e-14)


# -- 2. the operators as written by hand -----------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _int(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def _x_in(rank=2):
    return [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None] * rank)]


def _out(elem=TensorProto.DOUBLE):
    return [helper.make_tensor_value_info("y", elem, None)]


def _check_against_ort(tmp_path, model, feeds_list):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    g = fg.import_onnx(path)
    for X in feeds_list:
        got = fg.run(g.by_name("y"), {g.by_name("x"): X})
        want, = _ort(path, {"x": X})
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    return g


def _run_time_length_nodes(axis=0):
    return [helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "ax"], ["n1"], name="pick", axis=0),
            helper.make_node("Squeeze", ["n1", "zero"], ["n"], name="squeeze")]


def test_constant_of_shape_of_run_time_lengths(tmp_path):
    nodes = _run_time_length_nodes() + [
        helper.make_node("Concat", ["two", "n1", "s"], ["shape"], name="cat", axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                         value=helper.make_tensor("v", TensorProto.INT32, [1], [-7]))]
    model = _model(nodes, _x_in(), _out(TensorProto.INT32),
                   [_int("ax", [1]), _int("zero", [0]), _int("two", [2])])
    _check_against_ort(tmp_path, model, [np.ones((3, 4)), np.ones((0, 2)), np.ones((2, 0))])


@pytest.mark.parametrize("axis", [0, 1])
def test_range_of_a_run_time_length(tmp_path, axis):
    """x is (None, 4) for axis 1's known length 4, (None, None) for axis 0's."""
    nodes = _run_time_length_nodes() + [
        helper.make_node("Range", ["start", "n", "delta"], ["y"], name="range")]
    x_in = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 4 if axis else None])]
    model = _model(nodes, x_in, _out(TensorProto.INT64),
                   [_int("ax", [axis]), _int("zero", [0]), _int("start", 0),
                    _int("delta", 1)])
    feeds = [np.ones((3, 4)), np.ones((0, 4))] + ([np.ones((5, 0))] if not axis else [])
    _check_against_ort(tmp_path, model, feeds)


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (2, 11, 3, np.int64), (11, 2, -3, np.int32), (5, 5, 1, np.int64), (5, 2, 1, np.int64),
    (0.0, 1.0, 0.25, np.float64), (-1.5, 2.0, 0.5, np.float32)])
def test_range_of_constants(tmp_path, start, limit, delta, dtype):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = _operands(start, limit, delta, dtype) + [
             helper.make_node("Range", ["a", "b", "c"], ["r"], name="range"),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),       # (an input to feed)
             helper.make_node("Identity", ["r"], ["y"], name="id")]
    model = _model(nodes, _x_in(), _out(elem))
    _check_against_ort(tmp_path, model, [np.ones((1, 1))])


@pytest.mark.parametrize("k", [0, 1, -2, 5, 2 ** 63 - 1])
def test_eye_like_of_a_run_time_shape(tmp_path, k):
    nodes = [helper.make_node("EyeLike", ["x"], ["y"], name="eye", k=k,
                              dtype=TensorProto.INT32)]
    model = _model(nodes, _x_in(), _out(TensorProto.INT32))
    _check_against_ort(tmp_path, model, [np.ones((3, 5)), np.ones((4, 2)), np.ones((0, 3))])


def test_gather_nd_of_a_tensor_of_indices(tmp_path):
    nodes = [helper.make_node("GatherND", ["x", "i"], ["y"], name="gnd")]
    model = _model(nodes, _x_in(3), _out(),
                   [_int("i", [[[0, 1], [1, -1]], [[1, 0], [0, 2]]])])
    X = np.arange(24.0).reshape(2, 3, 4)
    _check_against_ort(tmp_path, model, [X])


# -- 3. refusals at the boundary ---------------------------------------------------------------

def _import(tmp_path, model, **kw):
    onnx.save(model, tmp_path / "r.onnx")
    return fg.import_onnx(tmp_path / "r.onnx", **kw)


def _operands(start, limit, delta, dtype):
    """Range's operands as Constant nodes (a float initializer would be a weight)."""
    return [helper.make_node("Constant", [], [k], name=k,
                             value=numpy_helper.from_array(np.asarray(v, dtype)))
            for k, v in (("a", start), ("b", limit), ("c", delta))]


def _range_model(start, limit, delta, dtype=np.int64):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = _operands(start, limit, delta, dtype) + [
        helper.make_node("Range", ["a", "b", "c"], ["y"], name="range")]
    return _model(nodes, [], _out(elem))


def test_range_delta_zero_is_refused(tmp_path):
    _import(tmp_path, _range_model(0, 3, 1))
    with pytest.raises(OnnxImportError, match=r"node 'range' \(Range\): its delta is 0"):
        _import(tmp_path, _range_model(0, 3, 0))


def test_range_length_is_charged_to_the_budget(tmp_path):
    """A constant limit is the file's choice: its output is charged before it is made
    (the three 8-byte operands, then 8 bytes per element)."""
    n = 1000
    budget = 3 * 8 + 8 * n
    assert fg.run(_import(tmp_path, _range_model(0, n, 1), max_bytes=budget)
                  .by_name("y")).shape == (n,)
    with pytest.raises(OnnxImportError, match=r"node 'range' \(Range\): its output of shape"
                                              r" \(1001,\)"):
        _import(tmp_path, _range_model(0, n + 1, 1), max_bytes=budget)
    with pytest.raises(OnnxImportError, match=r"\(Range\): its output of shape "
                                              r"\(1000000000000,\)"):
        _import(tmp_path, _range_model(0, 10 ** 12, 1))


def test_float_range_where_readers_round_differently_is_refused(tmp_path):
    """ONNX's start + i·delta against onnxruntime's running sum: 0.1 steps round apart."""
    steps = np.arange(10.0) * 0.1
    running = np.cumsum([0.0] + [0.1] * 9)
    assert not np.array_equal(steps, running)
    _import(tmp_path, _range_model(0.0, 1.0, 0.125, np.float64))
    with pytest.raises(OnnxImportError, match=r"\(Range\): start \+ i·delta"):
        _import(tmp_path, _range_model(0.0, 1.0, 0.1, np.float64))


def test_range_of_a_run_time_length_needs_start_zero(tmp_path):
    def model(start):
        nodes = _run_time_length_nodes() + [
            helper.make_node("Range", ["start", "n", "delta"], ["y"], name="range")]
        return _model(nodes, _x_in(), _out(TensorProto.INT64),
                      [_int("ax", [0]), _int("zero", [0]), _int("start", start),
                       _int("delta", 1)])
    _import(tmp_path, model(0))
    with pytest.raises(OnnxImportError, match=r"\(Range\): its limit 'n' is neither"):
        _import(tmp_path, model(1))


def test_constant_of_shape_of_computed_lengths_is_refused(tmp_path):
    """Lengths picked from a Shape (Concat) import; lengths computed from one do not."""
    def model(op):
        extra = {"axis": 0} if op == "Concat" else {}
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                 helper.make_node(op, ["s", "one"], ["s2"], name="op", **extra),
                 helper.make_node("ConstantOfShape", ["s2"], ["y"], name="fill")]
        return _model(nodes, _x_in(), _out(TensorProto.FLOAT), [_int("one", [1, 2])])
    _import(tmp_path, model("Concat"))
    with pytest.raises(OnnxImportError, match=r"node 'fill' \(ConstantOfShape\): its shape"
                                              r" 's2' is neither"):
        _import(tmp_path, model("Add"))


def test_gather_nd_with_batch_dims_is_refused(tmp_path):
    def model(b):
        nodes = [helper.make_node("GatherND", ["x", "i"], ["y"], name="gnd", batch_dims=b)]
        return _model(nodes, _x_in(3), _out(), [_int("i", [[0], [1]])])
    _import(tmp_path, model(0))
    with pytest.raises(OnnxImportError, match=r"\(GatherND\): batch_dims=1 is not"):
        _import(tmp_path, model(1))


def test_eye_like_of_a_3d_input_is_refused(tmp_path):
    def model(rank):
        return _model([helper.make_node("EyeLike", ["x"], ["y"], name="eye")],
                      _x_in(rank), _out())
    _import(tmp_path, model(2))
    with pytest.raises(OnnxImportError, match=r"\(EyeLike\): its input must be 2-d"):
        _import(tmp_path, model(3))


def test_constant_of_shape_of_run_time_lengths_charges_its_known_ones(tmp_path):
    """[batch, n]: n is the file's choice, so its int64 mask is charged (the two 8-byte
    initializers, then 8·n bytes); a negative n is refused."""
    def model(n):
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                 helper.make_node("Gather", ["s", "ax"], ["b"], name="pick", axis=0),
                 helper.make_node("Concat", ["b", "n"], ["shape"], name="cat", axis=0),
                 helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill")]
        return _model(nodes, _x_in(), _out(TensorProto.FLOAT),
                      [_int("ax", [0]), _int("n", [n])])
    n = 1000
    g = _import(tmp_path, model(n), max_bytes=16 + 8 * n)
    got = fg.run(g.by_name("y"), {g.by_name("x"): np.ones((3, 2))})
    np.testing.assert_array_equal(got, np.zeros((3, n), np.float32))
    with pytest.raises(OnnxImportError, match=r"node 'fill' \(ConstantOfShape\): its "
                                              r"output's known lengths of shape \(1, 1001\)"):
        _import(tmp_path, model(n + 1), max_bytes=16 + 8 * n)
    _import(tmp_path, model(0))
    with pytest.raises(OnnxImportError, match=r"\(ConstantOfShape\): its shape \[None, -1\]"
                                              r" has a negative length"):
        _import(tmp_path, model(-1))


def test_int32_range_whose_span_wraps_is_refused(tmp_path):
    """limit − start beyond int32 wraps in onnxruntime's int32 subtraction."""
    top = 2 ** 31 - 1
    g = _import(tmp_path, _range_model(0, top, 2 ** 30, np.int32))
    np.testing.assert_array_equal(fg.run(g.by_name("y")),
                                  np.array([0, 2 ** 30], np.int32))
    with pytest.raises(OnnxImportError, match=r"\(Range\): limit − start = 2147483648 is "
                                              r"beyond"):
        _import(tmp_path, _range_model(-1, top, 2 ** 30, np.int32))
