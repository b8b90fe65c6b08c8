"""ONNX export and import checked against PyTorch (float64, autograd) and onnxruntime:
programs with run-time (None) dims exported whole, models torch.onnx writes read back
with their values and gradients."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.io.onnx_export import OnnxExportError
from flowgrad.io.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
torch = pytest.importorskip("torch")


def run_onnx(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_conv2d_with_a_run_time_output_channel_count_exports(tmp_path):
    """A float64 conv2d (im2col form) whose kernel's output channels are a placeholder's
    None: the export wrote that None into its reshapes (a bare TypeError); now the
    reshapes infer it, and the conv, its input and kernel gradients equal torch's."""
    rng = np.random.default_rng(3)
    X, W, B = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), \
        rng.standard_normal(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 6, 5))
        w = fg.placeholder("w", shape=(None, 2, 3, 3))
        b = fg.placeholder("b", shape=(None,))
        y = fg.conv2d(x, w, b, stride=2, padding=(1, 0))
        gx, gw, gb = fg.grad(fg.sum(y * y), [x, w, b])
        path = fg.export_onnx([y, gx, gw, gb], tmp_path / "conv.onnx")
    got = run_onnx(path, {"x": X, "w": W, "b": B})
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (X, W, B))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=(1, 0))
    (ty * ty).sum().backward()
    for g, t in zip(got, [ty.detach(), tx.grad, tw.grad, tb.grad]):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-12, atol=1e-12)


def test_float64_avg_pool_of_run_time_height_is_refused_by_name(tmp_path):
    """float64 average pooling is written as window slices whose ends need the output's
    height: with it unknown the export raised a bare TypeError; now OnnxExportError."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3, None, 7))
        y = fg.avg_pool2d(x, 3, 2)
        with pytest.raises(OnnxExportError, match="avg_pool2d.*height and width"):
            fg.export_onnx(y, tmp_path / "pool.onnx")


def _torch_export(model, args, path, opset=17):
    names = [f"in{k}" for k in range(len(args))]
    axes = {n: {0: "batch"} for n in names + ["out"]}
    torch.onnx.export(model.eval(), args, str(path), opset_version=opset, input_names=names,
                      output_names=["out"], dynamic_axes=axes, dynamo=False)
    return {n: a.detach().numpy() for n, a in zip(names, args)}


def _check_against_torch(path, model, args, feed, tol=1e-5):
    """The imported graph's output equals torch's and onnxruntime's; the gradients of
    Σ out·r w.r.t. the inputs and every weight equal torch's autograd."""
    g = fg.import_onnx(path)
    out = g.by_name("out")
    want = model(*args)
    np.testing.assert_allclose(fg.run(out, feed), want.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(fg.run(out, feed), run_onnx(path, feed)[0], rtol=tol, atol=tol)
    r = np.random.default_rng(9).standard_normal(want.shape).astype(np.float32)
    params = dict(model.named_parameters())
    # float initializers are variables: the parameters, and buffers (running statistics)
    weights = [v for v in g.nodes if v.kind == "variable" and v.name in params]
    assert {v.name for v in weights} == set(params)
    xs = [g.by_name(n) for n in feed]
    got = fg.run(fg.grad(fg.sum(out * r), xs + weights), feed)
    targs = [a.detach().clone().requires_grad_() for a in args]
    model.zero_grad()
    (model(*targs) * torch.from_numpy(r)).sum().backward()
    want_grads = [a.grad for a in targs] + [params[v.name].grad for v in weights]
    for gv, tv in zip(got, want_grads):
        np.testing.assert_allclose(gv, tv.numpy(), rtol=1e-4, atol=1e-5)


def test_an_lstm_is_refused_by_its_op_type(tmp_path):
    """torch writes an LSTM with its initial state built from Shape/ConstantOfShape of a
    run-time batch; the import failed on that ConstantOfShape first ("its shape must be a
    constant"), never naming the LSTM. Unsupported op types are now checked first."""
    lstm = torch.nn.LSTM(4, 6, batch_first=True)
    _torch_export(lstm, (torch.randn(2, 5, 4),), tmp_path / "lstm.onnx")
    with pytest.raises(OnnxImportError,
                       match=r"op type 'LSTM' \(node '[^']*LSTM'\) has no flowgrad counterpart"):
        fg.import_onnx(tmp_path / "lstm.onnx")


class _Padded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 12)

    def forward(self, x):
        h = torch.nn.functional.pad(self.lin(x).reshape(-1, 3, 4), (1, 2), value=0.5)
        return torch.tanh(h).reshape(-1, 21)


@pytest.mark.parametrize("opset", [13, 18])
def test_pads_torch_computes_from_constants_import(tmp_path, opset):
    """torch.onnx writes F.pad's pads as a ConstantOfShape/Concat/Reshape/Slice/
    Transpose/Cast chain over constants; only Constant-made operands counted as known, so
    the import refused the Pad. Integer nodes of known inputs are now folded."""
    torch.manual_seed(1)
    model, args = _Padded(), (torch.randn(5, 6),)
    feed = _torch_export(model, args, tmp_path / "pad.onnx", opset)
    _check_against_torch(tmp_path / "pad.onnx", model, args, feed)


def test_reshape_keeping_a_run_time_batch_imports(tmp_path):
    """Reshape(x, [0, -1]) of an x of run-time batch (a flatten that keeps the batch;
    flowgrad's own float64 conv export writes [0, O, H, W]) was refused; the -1 is
    worked out from the other lengths. Values and gradient against numpy."""
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph(
        [node], "m", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", 6])],
        [numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, tmp_path / "r.onnx")
    g = fg.import_onnx(tmp_path / "r.onnx")
    X = np.arange(24.0).reshape(4, 2, 3)
    y = g.by_name("y")
    assert y.shape == (None, 6)
    np.testing.assert_array_equal(fg.run(y, {"x": X}), X.reshape(4, 6))
    c = np.arange(24.0).reshape(4, 6)
    np.testing.assert_array_equal(fg.run(fg.grad(fg.sum(y * c), g.by_name("x")), {"x": X}),
                                  c.reshape(4, 2, 3))


class _Normed(torch.nn.Module):
    """Conv → global average pool → Linear → BatchNorm1d (torch fuses a BatchNorm only
    into a Conv, so this one stays a BatchNormalization) → LayerNorm → reciprocal."""
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.lin = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.ln = torch.nn.LayerNorm(6)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)
            self.ln.weight.normal_()
            self.ln.bias.normal_()   # (torch shares an all-zero one with others)

    def forward(self, x):
        h = torch.nn.functional.adaptive_avg_pool2d(torch.sigmoid(self.conv(x)), 1)
        h = self.ln(self.bn(self.lin(h.flatten(1))))
        return torch.reciprocal(h * h + 1.0) + h


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_normalization_and_global_pooling_import(tmp_path, opset):
    """BatchNormalization (inference), LayerNormalization (opset ≥ 17; torch decomposes
    it below), GlobalAveragePool and Reciprocal had no importer: a torch model with them
    was refused. Values equal torch's and onnxruntime's, gradients torch's autograd."""
    torch.manual_seed(2)
    model, args = _Normed(), (torch.randn(5, 2, 7, 6),)
    feed = _torch_export(model, args, tmp_path / "norm.onnx", opset)
    types = {n.op_type for n in onnx.load(tmp_path / "norm.onnx").graph.node}
    assert {"BatchNormalization", "GlobalAveragePool", "Reciprocal"} <= types
    assert ("LayerNormalization" in types) == (opset >= 17)
    _check_against_torch(tmp_path / "norm.onnx", model, args, feed)


def test_batch_norm_training_mode_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ones(3, np.float32), k)
             for k in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                            training_mode=1)
    graph = helper.make_graph(
        [node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]),
              tmp_path / "bn.onnx")
    with pytest.raises(OnnxImportError, match="BatchNormalization.*training_mode=1"):
        fg.import_onnx(tmp_path / "bn.onnx")


def test_cross_entropy_with_zero_target_entries_keeps_its_target_gradient(tmp_path):
    """softmax_cross_entropy's exported form (its decompose, also vectorize's) zeroed
    log softmax where t = 0, so ∂/∂t was 0 there after an export and import, where the
    op's rule and torch give −log softmax(z)/n. Checked on the re-imported graph against
    torch's autograd, and the exported gradient program against onnxruntime."""
    rng = np.random.default_rng(5)
    Z, T = rng.standard_normal((4, 3)), np.abs(rng.standard_normal((4, 3)))
    T[0, 1] = 0.0
    T[2] = [0.0, 1.0, 0.0]
    zt, tt = torch.tensor(Z, requires_grad=True), torch.tensor(T, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(zt, tt)
    loss_t.backward()
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 3))
        t = fg.placeholder("t", shape=(None, 3))
        loss = fg.softmax_cross_entropy(z, t).named("loss")
        path = fg.export_onnx(loss, tmp_path / "sce.onnx")
        grads = fg.export_onnx([loss, *fg.grad(loss, [z, t])], tmp_path / "sce_grad.onnx")
    g = fg.import_onnx(path)
    z2, t2, loss2 = g.by_name("z"), g.by_name("t"), g.by_name("loss")
    with g:
        got = fg.run([loss2, *fg.grad(loss2, [z2, t2])], {z2: Z, t2: T})
    ort_got = run_onnx(grads, {"z": Z, "t": T})
    for vals in (got, ort_got):
        np.testing.assert_allclose(vals[0], loss_t.item(), rtol=1e-13)
        np.testing.assert_allclose(vals[1], zt.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(vals[2], tt.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert got[2][0, 1] == pytest.approx(-np.log(np.exp(Z[0, 1]) / np.exp(Z[0]).sum()) / 4)
