"""fg.import_onnx: a model built with the onnx helper API and a flowgrad export read
back become flowgrad graphs whose forward values match onnxruntime and whose
gradients (inputs and weights, first and second order) match finite differences."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.io.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

D, H, K = 4, 6, 3


def run_onnx(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@pytest.fixture
def helper_mlp(tmp_path):
    """A small MLP written with the onnx helper API (not by flowgrad): Gemm, Tanh,
    MatMul, Add, Sigmoid, Softmax, a Reshape/Transpose/Slice round, a mean loss."""
    rng = np.random.default_rng(11)
    init = {
        "W1": rng.standard_normal((H, D)) / 2,      # Gemm with transB=1
        "b1": rng.standard_normal(H) / 2,
        "W2": rng.standard_normal((H, K)) / 2,
        "b2": rng.standard_normal(K) / 2,
        "shape_flat": np.array([-1], np.int64),
        "starts": np.array([1], np.int64), "ends": np.array([K], np.int64),
        "axes": np.array([1], np.int64),
        "red_axes": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["z1"], name="layer1", transB=1),
        helper.make_node("Tanh", ["z1"], ["h1"], name="act1"),
        helper.make_node("MatMul", ["h1", "W2"], ["z2a"], name="layer2_mm"),
        helper.make_node("Add", ["z2a", "b2"], ["z2"], name="layer2_add"),
        helper.make_node("Softmax", ["z2"], ["probs"], name="softmax", axis=-1),
        helper.make_node("Sigmoid", ["z2"], ["gate"], name="gate"),
        helper.make_node("Mul", ["probs", "gate"], ["y"], name="combine"),
        helper.make_node("Slice", ["y", "starts", "ends", "axes"], ["y_tail"], name="tail"),
        helper.make_node("ReduceSum", ["y_tail", "red_axes"], ["row"], name="rowsum",
                         keepdims=0),
        helper.make_node("Transpose", ["y"], ["yt"], name="yt", perm=[1, 0]),
        helper.make_node("Reshape", ["yt", "shape_flat"], ["flat"], name="flat"),
        helper.make_node("ReduceLogSumExp", ["flat"], ["score"], name="score", keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "helper_mlp",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", D])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", K]),
         helper.make_tensor_value_info("row", TensorProto.DOUBLE, ["batch"]),
         helper.make_tensor_value_info("score", TensorProto.DOUBLE, [])],
        [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "helper_mlp.onnx"
    onnx.save(model, path)
    return path


def test_helper_mlp_forward_matches_onnxruntime(helper_mlp):
    g = fg.import_onnx(helper_mlp)
    x = g.by_name("x")
    assert x.kind == "placeholder" and x.shape == (None, D)
    assert {v.name for v in g.nodes if v.kind == "variable"} == {"W1", "b1", "W2", "b2"}
    assert g.by_name("shape_flat").kind == "constant"   # integer initializers are no weights
    X = np.random.default_rng(0).standard_normal((5, D))
    outs = [g.by_name(n) for n in ("y", "row", "score")]
    for w, got in zip(run_onnx(helper_mlp, {"x": X}), fg.run(outs, {"x": X})):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)


def test_helper_mlp_gradients_match_finite_differences(helper_mlp):
    g = fg.import_onnx(helper_mlp)
    x, score = g.by_name("x"), g.by_name("score")
    weights = [g.by_name(n) for n in ("W1", "b1", "W2", "b2")]
    X = np.random.default_rng(1).standard_normal((3, D))
    # first and second order, reverse and forward mode, w.r.t. the input and every weight
    fg.check_grads(score, [x, *weights], feed={x: X}, modes=("rev", "fwd"), order=2)
    # Hessian-vector products exist on the imported graph: H v against differences of ∇
    gw = fg.grad(score, weights[0])
    v = np.random.default_rng(2).standard_normal((H, D))
    hv = fg.run(fg.hvp(score, weights[0], v), {x: X})
    w0, eps = weights[0].value.copy(), 1e-5
    weights[0].value = w0 + eps * v
    up = fg.run(gw, {x: X})
    weights[0].value = w0 - eps * v
    down = fg.run(gw, {x: X})
    np.testing.assert_allclose(hv, (up - down) / (2 * eps), rtol=1e-6, atol=1e-8)
    # and the imported graph draws
    assert "score" in fg.viz.draw(score).source


def _flowgrad_mlp(tmp_path):
    rng = np.random.default_rng(4)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, D))
        t = fg.placeholder("t", shape=(None, K))
        w1 = fg.variable(rng.standard_normal((D, H)) / 2, name="W1")
        b1 = fg.variable(rng.standard_normal(H) / 2, name="b1")
        w2 = fg.variable(rng.standard_normal((H, K)) / 2, name="W2")
        with fg.name_scope("net"):
            h = fg.softplus(fg.linear(x, w1, b1)).named("hidden")
            logits = fg.matmul(fg.sigmoid(h) * fg.tanh(h), w2).named("logits")
        loss = (fg.softmax_cross_entropy(logits, t) + 1e-3 * fg.l2(w1)
                + fg.mean(fg.log1p(fg.abs(logits)))).named("loss")
        grads = fg.grad(loss, [x, w1, b1, w2])
    path = fg.export_onnx([logits, loss], tmp_path / "mine.onnx")
    return path, (x, t, [w1, b1, w2], loss, logits, grads)


def test_a_flowgrad_export_reads_back(tmp_path):
    path, (x, t, ws, loss, logits, grads) = _flowgrad_mlp(tmp_path)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, D))
    T = np.eye(K)[rng.integers(0, K, 4)]
    g = fg.import_onnx(path)
    x2, t2 = g.by_name("x"), g.by_name("t")
    ws2 = [g.by_name(w.name) for w in ws]
    loss2, logits2 = g.by_name("loss"), g.by_name("net/logits")
    feed = {"x": X, "t": T}
    ref = run_onnx(path, feed)
    mine = fg.run([logits2, loss2], feed)
    for a, b in zip(ref, mine):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    # the reimported graph's gradients equal the original graph's
    want = fg.run(grads, {x: X, t: T})
    got = fg.run(fg.grad(loss2, [x2, *ws2]), feed)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    fg.check_grads(loss2, [x2, *ws2], feed={x2: X, t2: T}, modes=("rev",), order=1)


def _model_with(node, inputs, outputs, inits=()):
    graph = helper.make_graph([node], "m", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_an_unsupported_op_is_named(tmp_path):
    node = helper.make_node("Mod", ["a", "b"], ["c"], name="my_mod", fmod=1)
    io_ = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [2, 2]) for n in "abc"]
    onnx.save(_model_with(node, io_[:2], io_[2:]), tmp_path / "e.onnx")
    with pytest.raises(OnnxImportError, match=r"op type 'Mod' \(node 'my_mod'\)"):
        fg.import_onnx(tmp_path / "e.onnx")


def test_a_shape_operand_that_is_not_constant_is_named(tmp_path):
    node = helper.make_node("Reshape", ["a", "s"], ["c"], name="dyn")
    ins = [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2, 2]),
           helper.make_tensor_value_info("s", TensorProto.INT64, [1])]
    out = [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [4])]
    onnx.save(_model_with(node, ins, out), tmp_path / "d.onnx")
    with pytest.raises(OnnxImportError, match=r"node 'dyn' \(Reshape\).*'s' must be a constant"):
        fg.import_onnx(tmp_path / "d.onnx")


def test_a_corrupt_model_is_a_graph_file_error(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x12\xff\xff\xff garbage")
    with pytest.raises(fg.GraphFileError):
        fg.import_onnx(tmp_path / "junk.onnx")


def test_outputs_limit_the_import_to_what_they_need(tmp_path):
    """A gradient program exported whole reads back by its forward part."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        w = fg.variable(np.array([0.3, -0.2, 0.5]), name="w")
        loss = fg.mean(fg.softplus(x @ w)).named("loss")
        gw = fg.grad(loss, w).named("gw")
    path = fg.export_onnx([loss, gw], tmp_path / "lg.onnx")
    X = np.random.default_rng(3).standard_normal((5, 3))
    # the gradient part expands to a run-time shape: an Expand to a Shape, read back whole
    # since onnx_import_shapes (it was refused before)
    whole = fg.import_onnx(path)
    np.testing.assert_array_equal(fg.run(whole.by_name("gw"), {"x": X}), fg.run(gw, {x: X}))
    g = fg.import_onnx(path, outputs=["loss"])
    np.testing.assert_allclose(fg.run(fg.grad(g.by_name("loss"), g.by_name("w")), {"x": X}),
                               fg.run(gw, {x: X}), rtol=1e-12)
    with pytest.raises(OnnxImportError, match=r"no tensors named \['nope'\]"):
        fg.import_onnx(path, outputs=["nope"])


def test_external_data_is_refused(tmp_path):
    """Weights kept in another file would make a model read any file it names."""
    from onnx.external_data_helper import convert_model_to_external_data
    node = helper.make_node("MatMul", ["a", "W"], ["c"], name="mm")
    model = _model_with(node, [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2, 64])],
                        [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [2, 64])],
                        [numpy_helper.from_array(np.ones((64, 64)), "W")])
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, tmp_path / "ext.onnx")
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(OnnxImportError,
                       match=r"initializer 'W': tensors that keep their data in other files"):
        fg.import_onnx(tmp_path / "ext.onnx")


# -- files the model names, memory it asks for, malformed tensors ----------------------------

def _external(tensor, location="secret.txt"):
    """``tensor`` (a TensorProto) pointing at ``location`` for its data, as a hostile
    model would write it by hand."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("double_data")
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    return tensor


def _secret_models():
    """Models that each hold one tensor reading ./secret.txt, in a different place."""
    out = [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])]
    value = _external(numpy_helper.from_array(np.zeros(2), "v"))
    const = helper.make_node("Constant", [], ["y"], name="leak", value=value)
    one = _external(numpy_helper.from_array(np.zeros(1), "one"))
    of_shape = [helper.make_node("Constant", [], ["s"], name="s",
                                 value=numpy_helper.from_array(np.array([2], np.int64))),
                helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill", value=one)]
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], name="inner",
                                                 value=_external(numpy_helper.from_array(
                                                     np.zeros(2), "w")))],
                               "branch", [], [helper.make_tensor_value_info(
                                   "b", TensorProto.DOUBLE, [2])])
    cond = [helper.make_node("Constant", [], ["c"], name="c",
                             value=numpy_helper.from_array(np.array(True))),
            helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch,
                             else_branch=branch)]
    tensors = helper.make_node("Constant", [], ["y"], name="leak",
                               value=numpy_helper.from_array(np.zeros(2)))
    tensors.attribute.append(helper.make_attribute(
        "extra", [_external(numpy_helper.from_array(np.zeros(2), "t"))]))
    sparse = helper.make_sparse_tensor(
        _external(numpy_helper.from_array(np.zeros(1), "sv")),
        numpy_helper.from_array(np.array([0], np.int64), "si"), [2])
    sparse_node = helper.make_node("Constant", [], ["y"], name="leak", sparse_value=sparse)
    models = {"Constant": [const], "ConstantOfShape": of_shape, "subgraph": cond,
              "attribute list": [tensors], "sparse attribute": [sparse_node]}
    made = {k: helper.make_model(helper.make_graph(nodes, "m", [], out),
                                 opset_imports=[helper.make_opsetid("", 18)])
            for k, nodes in models.items()}
    init = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "m", [],
                             out, [numpy_helper.from_array(np.zeros(2), "x")])
    init.sparse_initializer.append(helper.make_sparse_tensor(
        _external(numpy_helper.from_array(np.zeros(1), "z")),
        numpy_helper.from_array(np.array([0], np.int64), "zi"), [2]))
    made["sparse initializer"] = helper.make_model(init, opset_imports=[
        helper.make_opsetid("", 18)])
    return made


@pytest.mark.parametrize("where", sorted(_secret_models()))
def test_external_data_anywhere_is_refused_and_never_read(where, tmp_path, monkeypatch):
    """A Constant's tensor with external data used to be read relative to the working
    directory: a model pulled ./secret.txt into the graph."""
    import builtins
    import os
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.txt").write_bytes(b"api-key-12345678")
    onnx.save(_secret_models()[where], tmp_path / "m.onnx")
    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        opened.append(os.fspath(file) if not isinstance(file, int) else file)
        return real_open(file, *a, **k)

    def spy_os_open(file, *a, **k):
        opened.append(os.fspath(file))
        return real_os_open(file, *a, **k)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    with pytest.raises(OnnxImportError, match="keep their data in other files"):
        fg.import_onnx(tmp_path / "m.onnx")
    monkeypatch.undo()
    assert not [f for f in opened if "secret" in str(f)], opened


def _constant_of_shape_model(dims, dtype=TensorProto.FLOAT):
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill",
                              value=helper.make_tensor("v", dtype, [1], [1]))]
    out = [helper.make_tensor_value_info("y", dtype, None)]
    graph = helper.make_graph(nodes, "m", [], out,
                              [numpy_helper.from_array(np.array(dims, np.int64), "s")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_constant_of_shape_bomb_is_refused_before_it_is_allocated(tmp_path):
    """ConstantOfShape [1e5, 1e5] used to allocate 37 GiB at import (a raw MemoryError)."""
    import tracemalloc
    onnx.save(_constant_of_shape_model([10 ** 5, 10 ** 5]), tmp_path / "bomb.onnx")
    tracemalloc.start()
    try:
        with pytest.raises(OnnxImportError, match=r"node 'fill' \(ConstantOfShape\): its output"
                                                  r" of shape \(100000, 100000\) float32"):
            fg.import_onnx(tmp_path / "bomb.onnx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    onnx.save(_constant_of_shape_model([-1, 3]), tmp_path / "neg.onnx")
    with pytest.raises(OnnxImportError, match="bad shape"):
        fg.import_onnx(tmp_path / "neg.onnx")


def test_max_bytes_pins_the_import_budget(tmp_path):
    """The shape initializer (2 int64: 16 bytes), the fill value (one float32) and the
    output (a·b float32) are all the import allocates: exactly that total loads, one byte
    less is refused."""
    path = tmp_path / "m.onnx"
    onnx.save(_constant_of_shape_model([300, 500]), path)
    total = 16 + 4 + 300 * 500 * 4
    g = fg.import_onnx(path, max_bytes=total)
    np.testing.assert_array_equal(fg.run(g.by_name("y")), np.ones((300, 500), np.float32))
    with pytest.raises(OnnxImportError, match=f"would take {300 * 500 * 4} bytes"):
        fg.import_onnx(path, max_bytes=total - 1)
    # by default: 64 × the file's size, at least 1 MiB (the file is ~100 bytes)
    from flowgrad.io import limits
    onnx.save(_constant_of_shape_model([256, 1024]), path)     # 20 B + 1 MiB
    assert limits.default_budget(path.stat().st_size) == limits.FLOOR
    with pytest.raises(OnnxImportError, match="pass max_bytes="):
        fg.import_onnx(path)
    onnx.save(_constant_of_shape_model([256, 1023]), path)     # 20 B + 1 MiB − 4 KiB
    fg.import_onnx(path)


def _single(node, inputs, outputs, inits=()):
    onnx.save(_model_with(node, inputs, outputs, inits), "m.onnx")


@pytest.mark.parametrize("case", ["gather 0-d", "string input", "negative dims",
                                  "dims disagree", "unknown data type", "string initializer",
                                  "undefined input type"])
def test_malformed_models_are_typed_errors_naming_the_place(case, tmp_path, monkeypatch):
    """Each used to be a raw ZeroDivisionError, TypeError, ValueError or KeyError."""
    monkeypatch.chdir(tmp_path)
    vi = helper.make_tensor_value_info
    y = [vi("y", TensorProto.DOUBLE, None)]
    w = numpy_helper.from_array(np.ones(4), "W")
    mm = helper.make_node("Add", ["a", "W"], ["y"], name="add")
    a = [vi("a", TensorProto.DOUBLE, [4])]
    if case == "gather 0-d":
        node = helper.make_node("Gather", ["a", "i"], ["y"], name="g")
        _single(node, [vi("a", TensorProto.DOUBLE, []), vi("i", TensorProto.INT64, [])], y)
        match = r"node 'g' \(Gather\).*0-d"
    elif case == "string input":
        _single(helper.make_node("Identity", ["a"], ["y"], name="i"),
                [vi("a", TensorProto.STRING, [2])], y)
        match = r"graph input 'a': element type 8 .* not a number type"
    elif case == "undefined input type":
        _single(helper.make_node("Identity", ["a"], ["y"], name="i"),
                [vi("a", TensorProto.UNDEFINED, [2])], y)
        match = r"graph input 'a': .*element type"
    elif case == "negative dims":
        w.dims[:] = [-4]
        _single(mm, a, y, [w])
        match = r"initializer 'W': a tensor has a bad shape \(-4,\)"
    elif case == "dims disagree":
        w.dims[:] = [5]
        _single(mm, a, y, [w])
        match = r"initializer 'W': a malformed tensor"
    elif case == "unknown data type":
        w.data_type = 999
        _single(mm, a, y, [w])
        match = r"initializer 'W': unknown ONNX element type 999"
    else:
        _single(mm, a, y, [helper.make_tensor("W", TensorProto.STRING, [1], [b"x"])])
        match = r"initializer 'W': element type 8"
    with pytest.raises(OnnxImportError, match=match):
        fg.import_onnx("m.onnx")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_exported_files_follow_the_umask(umask, mode, tmp_path):
    import os
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        y = (x * 2.0).named("y")
    old = os.umask(umask)
    try:
        path = fg.export_onnx(y, tmp_path / "u.onnx")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.onnx"]
    np.testing.assert_array_equal(fg.run(fg.import_onnx(path).by_name("y"), {"x": [1.0, 2.0]}),
                                  [2.0, 4.0])


@pytest.mark.parametrize("first", ["x", "W", "y"])
def test_a_tensor_produced_twice_is_refused(first, tmp_path):
    """A node output named like the graph input used to rename the placeholder (so the
    feed name changed silently); ONNX assigns each tensor once."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Neg", ["x"], [first], name="n1"),
             helper.make_node("Neg", [first], ["y"], name="n2")]
    graph = helper.make_graph(nodes, "m", [vi("x", TensorProto.DOUBLE, [2])],
                              [vi("y", TensorProto.DOUBLE, [2])],
                              [numpy_helper.from_array(np.ones(2), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              tmp_path / "m.onnx")
    node = "n1" if first != "y" else "n2"
    with pytest.raises(OnnxImportError, match=rf"node '{node}' \(Neg\): its output '{first}' is "
                                              "already produced"):
        fg.import_onnx(tmp_path / "m.onnx")
