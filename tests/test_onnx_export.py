"""fg.export_onnx: every op of the op table (values and gradients) runs in onnxruntime
and matches flowgrad (1e-12 in float64, 1e-5 in float32); gradient programs of the
logistic regression and an MLP export whole; ops without an ONNX counterpart are
refused by name; an op's ``decompose`` hook is used when it has no mapping."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import flowgrad as fg
from flowgrad.io.onnx_export import OnnxExportError
from flowgrad.ops import Op
from flowgrad.ops.base import float_dtype

import random_graphs
from op_cases import CASES

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")

#: ops with no ONNX counterpart: exporting them is an error that names them
#: (basis_map runs a compiled sub-program per basis vector: jacobian / hessian)
NO_COUNTERPART = ("inv", "solve", "logdet", "eigvalsh", "eigh_vectors", "eigh_top",
                  "basis_map")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path, feed):
    sess = session(path)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})


def _case_graph(fn, arrays, dtype):
    with fg.Graph():
        xs = [fg.placeholder(f"a{i}", shape=np.shape(a), dtype=dtype)
              for i, a in enumerate(arrays)]
        out = fn(*xs)
        c = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
        s = fg.sum(out * c) if out.shape else out * 1.5
        grads = fg.grad(s, xs)
    return xs, [out, s, *grads]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_op_and_its_gradient(case, dtype, tol, tmp_path):
    _, fn, arrays, _ = case
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    xs, outs = _case_graph(fn, arrays, dtype)
    feed = {x.name: a for x, a in zip(xs, arrays)}
    try:
        path = fg.export_onnx(outs, tmp_path / "case.onnx")
    except OnnxExportError as err:
        ops = [n.op.name for n in outs[0].graph.nodes if n.op is not None]
        missing = [o for o in NO_COUNTERPART if o in ops]
        assert missing, f"refused though every op has a counterpart: {err}"
        assert any(f"op {o!r} (node '{o}_" in str(err) for o in missing), str(err)
        return
    onnx.checker.check_model(onnx.load(path), full_check=True)
    want = fg.run(outs, {x: a for x, a in zip(xs, arrays)})
    got = run_onnx(path, feed)
    for o, w, g in zip(outs, want, got):
        assert g.dtype == w.dtype == o.dtype
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=o.name)


def test_the_op_table_is_covered():
    """Each op flowgrad builds has a converter, a decomposition, or is one of the few
    documented ones refused by name."""
    from flowgrad.io.onnx_ops import CONVERTERS, REFUSED
    from flowgrad.ops import REGISTRY
    ours = {n: op for n, op in REGISTRY.items()    # not the ops other tests register
            if getattr(op.forward, "__module__", "").startswith("flowgrad.")}
    assert len(ours) > 60
    missing = sorted(n for n, op in ours.items() if n not in CONVERTERS and n not in REFUSED
                     and getattr(op, "decompose", None) is None)
    assert missing == sorted(NO_COUNTERPART)


def test_classification_ops(tmp_path):
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 4))
        lab = fg.placeholder("lab", shape=(None,), dtype="int64")
        outs = [fg.argmax(z), fg.argmax(z, axis=0, keepdims=True),
                fg.one_hot(lab, 5), fg.one_hot(lab, 3, axis=0, dtype="float32")]
    Z = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, -1.0, 0.5, 2.0], [0.0, 0.0, 0.0, 0.0]])
    L = np.array([0, 2, 1])
    feed = {"z": Z, "lab": L}
    for w, g in zip(fg.run(outs, feed), run_onnx(fg.export_onnx(outs, tmp_path / "c.onnx"),
                                                 feed)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_random_ops_are_refused_with_the_reason(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2))
        y = (x + fg.random.normal((None, 2), like=x, seed=0)).named("noisy")
    with pytest.raises(OnnxExportError, match=r"op 'random_normal' .*own generator"):
        fg.export_onnx(y, tmp_path / "r.onnx")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs.programs())
def test_random_gradient_programs(tmp_path_factory, program):
    _, xs, outs, arrays = random_graphs.build(program)
    path = fg.export_onnx(outs, tmp_path_factory.mktemp("rg") / "g.onnx")
    want = fg.run(outs, dict(zip(xs, arrays)))
    got = run_onnx(path, {x.name: a for x, a in zip(xs, arrays)})
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


# -- whole programs -----------------------------------------------------------------------

def _logistic(dtype, d=4):
    rng = np.random.default_rng(5)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d), dtype=dtype)
        t = fg.placeholder("t", shape=(None,), dtype=dtype)
        w = fg.variable(rng.standard_normal(d).astype(dtype), name="w")
        b = fg.variable(np.asarray(0.3, dtype), name="b")
        logits = fg.linear(x, w, b).named("logits")
        loss = (fg.bce_with_logits(logits, t) + 0.01 * fg.l2(w)).named("loss")
        gw, gb = fg.grad(loss, [w, b])
    return x, t, [loss, gw.named("gw"), gb.named("gb")]


def _mlp(dtype, d=5, h=7, k=3):
    rng = np.random.default_rng(6)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d), dtype=dtype)
        t = fg.placeholder("labels", shape=(None,), dtype="int64")
        w1 = fg.variable(rng.standard_normal((d, h)).astype(dtype) / 2, name="W1")
        b1 = fg.variable(rng.standard_normal(h).astype(dtype) / 2, name="b1")
        w2 = fg.variable(rng.standard_normal((h, k)).astype(dtype) / 2, name="W2")
        b2 = fg.variable(np.zeros(k, dtype), name="b2")
        with fg.name_scope("mlp"):
            hid = fg.tanh(fg.linear(x, w1, b1)).named("hidden")
            logits = fg.linear(fg.relu(hid), w2, b2).named("logits")
        loss = fg.softmax_cross_entropy(logits, t).named("loss")
        grads = [g.named(f"d{v.name}") for v, g in zip([w1, b1, w2, b2],
                                                       fg.grad(loss, [w1, b1, w2, b2]))]
    return x, t, [loss, fg.softmax(logits).named("probs"), *grads]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_logistic_regression_loss_and_gradients(dtype, tol, tmp_path):
    x, t, outs = _logistic(dtype)
    path = fg.export_onnx(outs, tmp_path / "lr.onnx")
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["x", "t"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x.shape[0]"
    assert sorted(i.name for i in model.graph.initializer) == ["b", "w"]
    assert [o.name for o in model.graph.output] == ["loss", "gw", "gb"]
    assert {"logits", "loss", "gw"} <= {n.name for n in model.graph.node}
    rng = np.random.default_rng(0)
    for n in (1, 9, 30):      # the batch length is symbolic
        X = rng.standard_normal((n, 4)).astype(dtype)
        T = rng.uniform(0, 1, n).astype(dtype)
        want = fg.run(outs, {x: X, t: T})
        got = run_onnx(path, {"x": X, "t": T})
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_mlp_loss_and_gradients(dtype, tol, tmp_path):
    x, t, outs = _mlp(dtype)
    path = fg.export_onnx(outs, tmp_path / "mlp.onnx")
    names = {n.name for n in onnx.load(path).graph.node}
    assert {"mlp/hidden", "mlp/logits", "loss", "dW1"} <= names
    rng = np.random.default_rng(1)
    for n in (2, 17):
        X = rng.standard_normal((n, 5)).astype(dtype)
        L = rng.integers(0, 3, n)
        want = fg.run(outs, {x: X, t: L})
        got = run_onnx(path, {"x": X, "labels": L})
        for o, w, g in zip(outs, want, got):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=o.name)


def test_stable_ops_at_extreme_inputs(tmp_path):
    with fg.Graph():
        z = fg.placeholder("z", shape=(None,))
        t = fg.placeholder("t", shape=(None,))
        outs = [fg.sigmoid(z), fg.softplus(z), fg.log1p(z * 1e-4),
                fg.bce_with_logits(z, t, reduction="none"), fg.logsumexp(z),
                *fg.grad(fg.sum(fg.softplus(z)) + fg.logsumexp(z), [z])]
    Z = np.array([-1000.0, -40.0, -1e-20, 0.0, 3e-17, 40.0, 1000.0])
    T = np.linspace(0, 1, len(Z))
    want = fg.run(outs, {z: Z, t: T})
    got = run_onnx(fg.export_onnx(outs, tmp_path / "s.onnx"), {"z": Z, "t": T})
    for w, g in zip(want, got):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)


def test_weak_scalars_keep_float32(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        y = (0.1 * x + 2) ** 2 / 3
    X = np.arange(3, dtype=np.float32)
    got, = run_onnx(fg.export_onnx(y, tmp_path / "w.onnx"), {"x": X})
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, fg.run(y, {x: X}), rtol=1e-6)


def test_outputs_that_are_leaves_or_repeated(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        w = fg.variable(np.ones(2), name="w")
        y = (x * w).named("y")
        c = fg.constant(2.5)                    # a weak scalar as an output
    got = run_onnx(fg.export_onnx([y, x, w, y, c], tmp_path / "l.onnx"),
                   {"x": np.array([2., 3.])})
    assert got[4] == 2.5
    np.testing.assert_array_equal(got[0], [2, 3])
    np.testing.assert_array_equal(got[1], [2, 3])
    np.testing.assert_array_equal(got[2], [1, 1])
    np.testing.assert_array_equal(got[3], [2, 3])


# -- refusals and the decompose hook ---------------------------------------------------------

def test_an_op_without_counterpart_is_named(tmp_path):
    with fg.Graph():
        a = fg.placeholder("a", shape=(3, 3))
        y = fg.sum(fg.inv(a).named("my_inverse"))
    with pytest.raises(OnnxExportError, match=r"op 'inv' \(node 'my_inverse'\) has no ONNX"):
        fg.export_onnx(y, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert issubclass(OnnxExportError, fg.FlowgradError)


def test_a_hessian_map_is_named(tmp_path):
    with fg.Graph():
        w = fg.variable(np.ones(2), name="w")
        h = fg.hessian(fg.sum(fg.exp(w)), w, method="map").named("H")   # the basis loop
    with pytest.raises(OnnxExportError, match=r"op 'basis_map' \(node 'basis_map_\d+'\)"):
        fg.export_onnx(h, tmp_path / "h.onnx")


def _scaled_softplus_infer(x, y, scale):
    return fg.ops.base.broadcast_shapes("test_scaled_softplus", x, y), \
        float_dtype(fg.ops.base.result_dtype(x, y))


_scaled = Op("test_onnx_scaled_softplus",
             lambda xp, x, y, scale: scale * (np.logaddexp(0, x)) + y,
             _scaled_softplus_infer,
             vjp=(lambda g, ans, x, y, scale: g * scale * fg.sigmoid(x),
                  lambda g, ans, x, y, scale: g), elementwise=True)
# what another branch gives model ops: the same value from primitive ops
_scaled.decompose = lambda x, y, scale: scale * fg.softplus(x) + y

_opaque = Op("test_onnx_opaque", lambda xp, x: x * 2, lambda x: (x.shape, x.dtype),
             vjp=(lambda g, ans, x: 2 * g,))


def test_an_op_with_decompose_exports_through_it(tmp_path):
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((4, 3)), rng.standard_normal(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        y = fg.placeholder("y", shape=(3,))
        out = _scaled(x, y, scale=0.75).named("fused")
        loss = fg.sum(out * out)
        gx, gy = fg.grad(loss, [x, y])
    outs = [out, loss, gx, gy]
    path = fg.export_onnx(outs, tmp_path / "d.onnx")
    model = onnx.load(path)
    names = [n.name for n in model.graph.node]
    assert "fused" in names and any(n.startswith("fused/") for n in names)
    for w, g in zip(fg.run(outs, {x: X, y: Y}), run_onnx(path, {"x": X, "y": Y})):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    with fg.Graph():
        z = _opaque(fg.placeholder("z", shape=(2,))).named("odd")
    with pytest.raises(OnnxExportError, match=r"'test_onnx_opaque' \(node 'odd'\)"):
        fg.export_onnx(z, tmp_path / "o.onnx")


def test_import_flowgrad_does_not_import_onnx():
    code = "import sys, flowgrad; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("join", ["concatenate", "stack"])
def test_gradients_through_blocks_of_run_time_length_export(join, tmp_path):
    # with None lengths, the adjoint of each part is a block found from the parts'
    # run-time offsets (concat_offsets / concat_part / concat_unpart)
    rng = np.random.default_rng(5)
    with fg.Graph():
        a = fg.placeholder("a", shape=(None, 2))
        b = fg.placeholder("b", shape=(None, 2))
        c = fg.placeholder("c", shape=(None, 2))
        if join == "concatenate":
            y = fg.concatenate([a, fg.sin(b), c * c], axis=0)
        else:
            y = fg.stack([a, fg.sin(b), c * c], axis=1)
        s = fg.sum(fg.tanh(y) * 1.5)
        grads = fg.grad(s, [a, b, c])
        gy = fg.jvp(y, [a, b, c], [a, b, c])          # forward mode too
        h = fg.grad(fg.sum(grads[0] * grads[0]), a)   # second order: blocks put back
    ops = {n.op.name for n in a.graph.nodes if n.op is not None}
    if join == "concatenate":   # stack's parts have length 1: plain indexing serves
        assert {"concat_offsets", "concat_part", "concat_unpart"} <= ops
    n = {"a": 3, "b": 4, "c": 2} if join == "concatenate" else {"a": 3, "b": 3, "c": 3}
    feed = {k: rng.standard_normal((m, 2)) for k, m in n.items()}
    outs = [s, *grads, gy, h]
    path = fg.export_onnx(outs, tmp_path / "blocks.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    want = fg.run(outs, feed)
    got = run_onnx(path, feed)
    for o, w, g in zip(outs, want, got):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=o.name)
