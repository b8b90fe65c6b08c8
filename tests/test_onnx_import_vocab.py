"""fg.import_onnx reads issue 22's vocabulary.

1. Round trip: a float64 model using each new op, exported by flowgrad and read back,
   gives the original graph's values and gradients (1e-12).
2. The ONNX operators themselves, written with the onnx helper API (Erf, Tan, Gelu, Clip,
   LeakyRelu, Elu, Floor, CumSum, Einsum, Pad, Split, Cast, ReduceProd, Conv, MaxPool,
   AveragePool): values and gradients against PyTorch in float64, an independent
   reference.
3. Attribute values flowgrad does not compute are OnnxImportErrors naming the node, at
   the first unsupported value (the supported one beside it imports).
"""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.io.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL = 1e-12


# -- 1. flowgrad export -> import ----------------------------------------------------------

def _conv_net(x, w):
    img = fg.reshape(x, (1, 1, 4, 6))
    h = fg.conv2d(img, w, padding="same", stride=(1, 2))
    return fg.avg_pool2d(fg.max_pool2d(fg.elu(h, 0.7), (2, 1)), (1, 3), stride=1)


_ROUND_TRIP = {
    "activations": lambda x, w: fg.clip(x, -0.6, 0.9) * fg.leaky_relu(x @ w, 0.2)[:, :6]
    + fg.elu(x, 1.3) + fg.gelu(x) * fg.erf(x) + fg.tan(0.5 * x),
    "statistics": lambda x, w: fg.var(x, axis=1, ddof=1) + fg.std(x @ w, axis=1)
    + fg.prod(x, axis=1) + fg.sum(fg.cumsum(x, axis=1), axis=1),
    "tensor": lambda x, w: fg.sum(fg.pad(x, ((1, 0), (2, 3)), 0.5) ** 2, axis=0)[:6]
    + fg.split(x, [2, 5], axis=1)[1][0, 0]
    + fg.astype(fg.astype(x @ w, "float32"), "float64")[0],
    "einsum": lambda x, w: fg.einsum("ij,jk,ik->k", x, w, x @ w),
    "conv_pool": _conv_net,
}


def _export_import(name, tmp_path, dtype="float64"):
    rng = np.random.default_rng(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(4, 6), dtype=dtype)
        w_shape = (3, 1, 3, 3) if name == "conv_pool" else (6, 6)
        w = fg.variable((rng.standard_normal(w_shape) / 2).astype(dtype), name="w")
        y = _ROUND_TRIP[name](x, w)
        loss = fg.sum(y * fg.sin(y)).named("loss")
        X = rng.uniform(-0.9, 0.9, (4, 6)).astype(dtype)
        want = fg.run([y, loss, *fg.grad(loss, [x, w])], {x: X})
        path = fg.export_onnx([y.named("y"), loss], tmp_path / f"{name}.onnx")
    g = fg.import_onnx(path)
    x2, w2, y2, loss2 = (g.by_name(k) for k in ("x", "w", "y", "loss"))
    got = fg.run([y2, loss2, *fg.grad(loss2, [x2, w2])], {x2: X})
    return want, got, (g, x2, w2, loss2, X)


@pytest.mark.parametrize("name", sorted(_ROUND_TRIP))
def test_an_export_reads_back_with_its_values_and_gradients(name, tmp_path):
    want, got, _ = _export_import(name, tmp_path)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", ["activations", "conv_pool"])
def test_a_float32_export_reads_back(name, tmp_path):
    # float32 convolution and pooling are written as ONNX's Conv, MaxPool, AveragePool
    # (onnxruntime runs them natively), erf and gelu through Floor: read back, the same
    # flowgrad kernels give the same float32 values and gradients
    want, got, _ = _export_import(name, tmp_path, "float32")
    for a, b in zip(want, got):
        assert b.dtype == a.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_a_read_back_convolution_has_second_derivatives(tmp_path):
    _, _, (g, x2, w2, loss2, X) = _export_import("conv_pool", tmp_path)
    fg.check_grads(loss2, [x2, w2], {x2: X}, modes=("rev",), order=2, rtol=1e-6, atol=1e-8)


# -- 2. ONNX's own operators against PyTorch -------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f64(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.DOUBLE, shape)


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _one(op_type, shape, out_shape, attrs=None, extra=(), inits=(), opset=18, outputs=1):
    outs = ["y"] + [f"y{k}" for k in range(1, outputs)]
    node = helper.make_node(op_type, ["x", *extra], outs, name=f"my_{op_type}",
                            **(attrs or {}))
    return _model([node], [_f64("x", shape)],
                  [_f64(o, out_shape) for o in outs], inits, opset)


def _torch_ref(fn, X):
    t = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    out = fn(t)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    weights = [torch.tensor(np.cos(np.arange(o.numel())).reshape(o.shape)) for o in outs]
    total = sum((o * r).sum() for o, r in zip(outs, weights))
    total.backward()
    return [o.detach().numpy() for o in outs], t.grad.numpy(), [r.numpy() for r in weights]


def _check_against_torch(model, fn, X, tmp_path):
    onnx.save(model, tmp_path / "m.onnx")
    g = fg.import_onnx(tmp_path / "m.onnx")
    x = g.by_name("x")
    outs = [g.by_name(o.name) for o in model.graph.output]
    want, want_grad, weights = _torch_ref(fn, X)
    with g:
        total = sum(fg.sum(o * r) for o, r in zip(outs, weights))
        got = fg.run([*outs, fg.grad(total, x)], {x: X})
    for a, b in zip(want + [want_grad], got):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL)


_X = np.random.default_rng(8).uniform(-2.0, 2.0, (3, 4))
_IMG = np.random.default_rng(9).standard_normal((2, 3, 6, 7))
_W = np.random.default_rng(10).standard_normal((4, 3, 3, 2)) / 3
_F = torch.nn.functional

_NATIVE = {
    "Erf": (lambda: _one("Erf", [3, 4], [3, 4]), torch.erf),
    "Tan": (lambda: _one("Tan", [3, 4], [3, 4]), torch.tan),
    "Gelu": (lambda: _one("Gelu", [3, 4], [3, 4], opset=20), _F.gelu),
    "Gelu_tanh": (lambda: _one("Gelu", [3, 4], [3, 4], {"approximate": "tanh"}, opset=20),
                  lambda t: _F.gelu(t, approximate="tanh")),
    "Clip": (lambda: _one("Clip", [3, 4], [3, 4], extra=["lo", "hi"],
                          inits=[numpy_helper.from_array(np.array(-0.5), "lo"),
                                 numpy_helper.from_array(np.array(1.25), "hi")]),
             lambda t: torch.clamp(t, -0.5, 1.25)),
    "Clip_upper_only": (lambda: _one("Clip", [3, 4], [3, 4], extra=["", "hi"],
                                     inits=[numpy_helper.from_array(np.array(0.3), "hi")]),
                        lambda t: torch.clamp(t, max=0.3)),
    "LeakyRelu": (lambda: _one("LeakyRelu", [3, 4], [3, 4], {"alpha": 0.25}),
                  lambda t: _F.leaky_relu(t, 0.25)),
    "Elu": (lambda: _one("Elu", [3, 4], [3, 4], {"alpha": 0.5}), lambda t: _F.elu(t, 0.5)),
    "Floor": (lambda: _one("Floor", [3, 4], [3, 4]), lambda t: torch.floor(t * 1.0)),
    "CumSum": (lambda: _one("CumSum", [3, 4], [3, 4], extra=["axis"],
                            inits=[_ints("axis", 1)]), lambda t: torch.cumsum(t, 1)),
    "Einsum": (lambda: _one("Einsum", [3, 4], [4, 4], {"equation": "ij,ik->jk"}),
               None),
    "Pad": (lambda: _one("Pad", [3, 4], [4, 7], {"mode": "constant"}, extra=["pads", "v"],
                         inits=[_ints("pads", [1, 2, 0, 1]),
                                numpy_helper.from_array(np.array(0.75), "v")]),
            lambda t: _F.pad(t, (2, 1, 1, 0), value=0.75)),
    "Pad_axes": (lambda: _one("Pad", [3, 4], [3, 6], extra=["pads", "", "axes"],
                              inits=[_ints("pads", [2, 0]), _ints("axes", [-1])]),
                 lambda t: _F.pad(t, (2, 0))),
    "Split": (lambda: _one("Split", [3, 4], [3, 1], {"axis": 1}, extra=["s"],
                           inits=[_ints("s", [1, 3])], outputs=2),
              lambda t: torch.split(t, [1, 3], dim=1)),
    # ONNX: ceil(5/3) = 2 per part, the last one smaller, as torch.split(t, 2)
    "Split_uneven": (lambda: _one("Split", [3, 5], [3, 2], {"axis": 1, "num_outputs": 3},
                                  outputs=3), lambda t: torch.split(t, 2, dim=1)),
    "ReduceProd": (lambda: _one("ReduceProd", [3, 4], [3], {"keepdims": 0}, extra=["ax"],
                                inits=[_ints("ax", [1])]), lambda t: torch.prod(t, 1)),
}


def _native_einsum(t):
    return torch.einsum("ij,ik->jk", t, t)


@pytest.mark.parametrize("op", sorted(_NATIVE))
def test_onnx_operators_match_pytorch(op, tmp_path):
    build, fn = _NATIVE[op]
    model = build()
    X = _X
    if op == "Einsum":    # two operands: x twice
        model.graph.node[0].input.append("x")
        fn = _native_einsum
    if op == "Split_uneven":
        X = np.random.default_rng(1).standard_normal((3, 5))
    _check_against_torch(model, fn, X, tmp_path)


def _cast_model(to):
    node = helper.make_node("Cast", ["x"], ["y"], name="my_cast", to=to)
    return _model([node], [_f64("x", [3, 4])],
                  [helper.make_tensor_value_info("y", to, [3, 4])])


@pytest.mark.parametrize("to, dtype", [(TensorProto.FLOAT, np.float32),
                                       (TensorProto.INT32, np.int32),
                                       (TensorProto.BOOL, np.bool_)])
def test_cast_narrows_as_numpy(to, dtype, tmp_path):
    onnx.save(_cast_model(to), tmp_path / "c.onnx")
    g = fg.import_onnx(tmp_path / "c.onnx")
    X = _X * 3
    got = fg.run(g.by_name("y"), {"x": X})
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, X.astype(dtype))


def _conv_model(attrs, w_shape=_W.shape, bias=True, x_shape=_IMG.shape):
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(_W if w_shape == _W.shape else
                                     rng.standard_normal(w_shape), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(np.arange(w_shape[0]) / 4.0, "b"))
        ins.append("b")
    node = helper.make_node("Conv", ins, ["y"], name="my_conv", **attrs)
    return _model([node], [_f64("x", list(x_shape))], [_f64("y", None)], inits)


def _torch_conv(stride=1, padding=0, pads=None):
    w, b = torch.tensor(_W), torch.arange(4) / 4.0

    def fn(t):
        if pads is not None:    # (left, right, top, bottom)
            t = _F.pad(t, pads)
        return _F.conv2d(t, w, b.double(), stride=stride, padding=padding)
    return fn


@pytest.mark.parametrize("attrs, fn", [
    ({}, _torch_conv()),
    ({"strides": [2, 1], "pads": [1, 0, 1, 0]}, _torch_conv((2, 1), (1, 0))),
    ({"pads": [0, 1, 1, 0]}, _torch_conv(pads=(1, 0, 0, 1))),    # asymmetric
    ({"auto_pad": "SAME_UPPER"}, _torch_conv(padding="same")),
    ({"auto_pad": "VALID", "dilations": [1, 1], "group": 1, "kernel_shape": [3, 2]},
     _torch_conv()),
], ids=["plain", "strided", "asymmetric", "same", "explicit_defaults"])
def test_conv_matches_pytorch(attrs, fn, tmp_path):
    _check_against_torch(_conv_model(attrs), fn, _IMG, tmp_path)


@pytest.mark.parametrize("op, attrs, fn", [
    ("MaxPool", {"kernel_shape": [2, 3]}, lambda t: _F.max_pool2d(t, (2, 3), stride=1)),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
     lambda t: _F.max_pool2d(t, 2, ceil_mode=True)[..., :3]),    # 6×7 → 3×3 (floor)
    ("AveragePool", {"kernel_shape": [3, 2], "strides": [1, 2]},
     lambda t: _F.avg_pool2d(t, (3, 2), stride=(1, 2))),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "count_include_pad": 1},
     lambda t: _F.avg_pool2d(t, 2)),
], ids=["max", "max_ceil_equal", "avg", "avg_count_include_pad"])
def test_pooling_matches_pytorch(op, attrs, fn, tmp_path):
    model = _one(op, list(_IMG.shape), None, attrs)
    if attrs.get("ceil_mode"):   # H=6 fits the windows; only W=7 would keep a partial one
        model = _one(op, [2, 3, 6, 8], None, attrs)
        fn = lambda t: _F.max_pool2d(t, 2)   # noqa: E731
        X = np.random.default_rng(4).standard_normal((2, 3, 6, 8))
        _check_against_torch(model, fn, X, tmp_path)
        return
    _check_against_torch(model, fn, _IMG, tmp_path)


# -- 3. refusals at the boundary ----------------------------------------------------------

def _pool_model(attrs, op="MaxPool", shape=(2, 3, 6, 8), outputs=1):
    return _one(op, list(shape), None, {"kernel_shape": [2, 2], "strides": [2, 2], **attrs},
                outputs=outputs)


_REFUSED = {
    # name: (the model refused, the same with the last supported value: imports)
    "cumsum_exclusive": (
        lambda v: _one("CumSum", [3, 4], [3, 4], {"exclusive": v}, ["a"], [_ints("a", 0)]),
        1, 0, "exclusive=1"),
    "cumsum_reverse": (
        lambda v: _one("CumSum", [3, 4], [3, 4], {"reverse": v}, ["a"], [_ints("a", 0)]),
        1, 0, "reverse=1"),
    "pad_mode": (lambda v: _one("Pad", [3, 4], [3, 6], {"mode": v}, ["p"],
                                [_ints("p", [0, 1, 0, 1])]), "reflect", "constant",
                 "mode='reflect'"),
    "pad_negative": (lambda v: _one("Pad", [3, 4], [3, 6], {}, ["p"],
                                    [_ints("p", [0, v, 0, 1])]), -1, 0, "negative pads"),
    "conv_group": (lambda v: _conv_model({"group": v}), 2, 1, "group=2"),
    "conv_dilation": (lambda v: _conv_model({"dilations": [v, 1]}), 2, 1, "dilations"),
    "conv_auto_pad": (lambda v: _conv_model({"auto_pad": v}), "SAME_LOWER", "SAME_UPPER",
                      "auto_pad='SAME_LOWER'"),
    "conv_1d": (lambda v: _conv_model({}, w_shape=(4, 3, 3, 2)[:v],
                                      x_shape=(2, 3, 6, 7)[:v]), 3, 4, "3-d"),
    "pool_pads": (lambda v: _pool_model({"pads": [0, 0, 0, v]}), 1, 0, "padding"),
    "pool_ceil": (lambda v: _pool_model({"ceil_mode": 1}, shape=(2, 3, 6, v)), 7, 8,
                  "ceil_mode=1"),
    "pool_dilation": (lambda v: _pool_model({"dilations": [1, v]}), 2, 1, "dilations"),
    "pool_storage": (lambda v: _pool_model({"storage_order": v}), 1, 0, "storage_order=1"),
    "pool_indices": (lambda v: _pool_model({}, outputs=v), 2, 1, "Indices"),
    "avg_pool_pads": (lambda v: _pool_model({"pads": [v, 0, 0, 0]}, "AveragePool"), 1, 0,
                      "padding"),
    "gelu_approximate": (lambda v: _one("Gelu", [3, 4], [3, 4], {"approximate": v},
                                        opset=20), "fast", "tanh", "approximate='fast'"),
    "split_sizes": (lambda v: _one("Split", [3, 4], [3, 1], {"axis": 1}, ["s"],
                                   [_ints("s", [1, v])], outputs=2), 2, 3, "do not split"),
}


@pytest.mark.parametrize("case", sorted(_REFUSED))
def test_unsupported_attribute_values_are_refused_naming_the_node(case, tmp_path):
    build, bad, good, message = _REFUSED[case]
    onnx.save(build(good), tmp_path / "good.onnx")
    fg.import_onnx(tmp_path / "good.onnx")
    onnx.save(build(bad), tmp_path / "bad.onnx")
    with pytest.raises(OnnxImportError, match="node 'my_") as err:
        fg.import_onnx(tmp_path / "bad.onnx")
    assert message in str(err.value)


def test_gelu_before_opset_20_is_no_standard_operator(tmp_path):
    # the op table holds Gelu, but a model of opset 18 cannot mean ONNX's Gelu
    onnx.save(_one("Gelu", [3, 4], [3, 4], opset=18), tmp_path / "g.onnx")
    with pytest.raises(OnnxImportError, match="node 'my_Gelu'.*opset 20"):
        fg.import_onnx(tmp_path / "g.onnx")
