"""fg.export_onnx in every dtype: each op case of the op table (and the ops it lacks:
comparisons, sign, argmax, astype, one_hot …) is built in float64, float32, float16,
int8, int16, int32, int64, uint8 and bool (what flowgrad refuses to build is skipped).
Each model flowgrad writes must pass ONNX's strict type inference and run in
onnxruntime with flowgrad's value, dtype and shape (exact for ints and bools);
otherwise export_onnx must refuse it with an OnnxExportError naming the node, the
user's line and the dtype. Integer edge values (wrap-around, negative operands) are
checked against numpy itself; the table of onnxruntime's kernel gaps against the
installed onnxruntime."""
import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.errors import FlowgradError, RunError
from flowgrad.io.onnx_export import OnnxExportError

from op_cases import CASES

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")

DTYPES = ("float64", "float32", "float16", "int8", "int16", "int32", "int64", "uint8", "bool")
# ints and bools into log, sqrt …: NaN in flowgrad and in onnxruntime alike
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TOL = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-2}

#: ops with no ONNX counterpart at all (test_onnx_export pins those refusals)
NO_COUNTERPART = "has no ONNX counterpart"
#: the refusals this file expects, by case and dtype: the only ones that may happen
#: (a pattern on the case id, the dtypes, a pattern on the message)
EXPECTED_REFUSALS = [
    (r"^det", {"float64", "int8", "int16", "int32", "int64", "uint8", "bool"},
     r"uses Det .* float64"),                               # onnxruntime: float Det only
    (r"^pow (x\*\*y|tensor exponent|<x,x>)", {"int8", "int16", "int32", "int64", "uint8", "bool"},
     r"integer Pow"),
    (r"^max_pool2d", {"int64"}, r"MaxPool .* int64"),
    (r"^int pow tensor", {"int8", "int16", "int32", "int64", "uint8"}, r"integer Pow"),
    (r"^prod (all|axis|axes)", {"int8", "int16", "int32", "int64", "uint8", "bool"}, r"integer ReduceProd"),
    (r"^einsum (matmul|implicit|three)", {"int8", "int16", "int32", "int64", "uint8"},
     r"integer Einsum"),
]

_r = np.random.default_rng(11)


def _values(a, dtype):
    """An array shaped like ``a`` for ``dtype``: a's own values for floats, small
    integers of both signs (no overflow in a case's arithmetic) for ints, random bools."""
    shape, dt = np.shape(a), np.dtype(dtype)
    if dt.kind == "f":
        return np.asarray(a, dt)
    if dt.kind == "b":
        return _r.integers(0, 2, shape).astype(bool)
    lo = 0 if dt.kind == "u" else -4
    return _r.integers(lo, 5, shape).astype(dt)


#: the ops CASES lacks, with int-friendly inputs
EXTRA = [
    ("greater", lambda a, b: a > b, [np.zeros((2, 3)), np.zeros(3)]),
    ("less_equal", lambda a, b: a <= b, [np.zeros((2, 3)), np.zeros(3)]),
    ("equal", fg.equal, [np.zeros((2, 3)), np.zeros((2, 3))]),
    ("not_equal", fg.not_equal, [np.zeros(4), np.zeros(4)]),
    ("sign", fg.sign, [np.zeros((2, 3))]),
    ("argmax", lambda a: fg.argmax(a, axis=1), [np.zeros((3, 4))]),
    ("astype float32", lambda a: fg.astype(a, "float32"), [np.zeros(5)]),
    ("astype int8", lambda a: fg.astype(a, "int8"), [np.zeros(5)]),
    ("one_hot", lambda a: fg.one_hot(fg.astype(fg.abs(a), "int64"), 6), [np.zeros(4)]),
    ("where on the input's comparison", lambda a, b: fg.where(a > b, a, b),
     [np.zeros((2, 3)), np.zeros(3)]),
    ("relu", fg.relu, [np.zeros((2, 3))]),
    ("clip node bounds", fg.clip, [np.zeros((2, 3)), np.zeros(3), np.zeros((2, 1))]),
    ("cumsum axis=0", lambda a: fg.cumsum(a, axis=0), [np.zeros((3, 2))]),
    ("trace", fg.trace, [np.zeros((3, 3))]),
    ("getitem node index", lambda a, i: a[fg.astype(fg.abs(i), "int64")],
     [np.zeros((6, 2)), np.zeros(3)]),
    ("pow x**0", lambda a: a ** 0, [np.zeros(4)]),
    ("pow x**1", lambda a: a ** 1, [np.zeros(4)]),
    ("pow x**5", lambda a: a ** 5, [np.zeros(4)]),
    ("int pow tensor", lambda a, b: a ** fg.abs(b), [np.zeros(4), np.zeros(4)]),
    ("max_pool2d", lambda x: fg.max_pool2d(x, 2), [np.zeros((1, 2, 4, 4))]),
    ("avg_pool2d", lambda x: fg.avg_pool2d(x, 2), [np.zeros((1, 2, 4, 4))]),
    ("conv2d valid", fg.conv2d, [np.zeros((1, 2, 4, 4)), np.zeros((3, 2, 2, 2))]),
]
ALL = [(cid, fn, arrays) for cid, fn, arrays, _ in CASES] + EXTRA


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _export(out, path):
    fg.export_onnx(out, path)
    model = onnx.load(path)
    # what onnx.checker does not look at: every operator's operand types
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def _same(got, want, node, label):
    assert got.dtype == want.dtype == node.dtype, (label, got.dtype, want.dtype, node.dtype)
    assert got.shape == want.shape, (label, got.shape, want.shape)
    if want.dtype.kind == "f":
        tol = TOL[want.dtype.name]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=label)
    else:
        np.testing.assert_array_equal(got, want, err_msg=label)


def _expected_refusal(cid, dtype, msg):
    if NO_COUNTERPART in msg:
        return True
    return any(re.search(c, cid) and dtype in dts and re.search(m, msg)
               for c, dts, m in EXPECTED_REFUSALS)


def _check_case(cid, fn, arrays, dtype, path):
    arrays = [_values(a, dtype) for a in arrays]
    try:
        with fg.Graph():
            xs = [fg.placeholder(f"a{i}", shape=np.shape(a), dtype=dtype)
                  for i, a in enumerate(arrays)]
            out = fn(*xs)
    except FlowgradError:
        return "flowgrad refuses to build it"
    try:
        want = np.asarray(fg.run(out, dict(zip(xs, arrays))))
    except RunError:
        return "flowgrad refuses to run it"      # e.g. inv of a singular bool matrix
    try:
        model = _export(out, path)
    except OnnxExportError as err:
        msg = str(err)
        assert _expected_refusal(cid, dtype, msg), f"{cid} in {dtype} refused: {msg}"
        assert NO_COUNTERPART in msg or "built at" in msg, msg   # the user's line
        return "refused"
    sess = _session(model)
    names = {i.name for i in sess.get_inputs()}
    got = sess.run(None, {x.name: a for x, a in zip(xs, arrays) if x.name in names})[0]
    _same(got, want, out, f"{cid} in {dtype}")
    return "ok"


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_case_in_every_dtype(dtype, tmp_path):
    outcomes = {cid: _check_case(cid, fn, arrays, dtype, tmp_path / "m.onnx")
                for cid, fn, arrays in ALL}
    # the refusals expected here do happen: the table above is not stale
    for pattern, dts, _ in EXPECTED_REFUSALS:
        if dtype in dts:
            hit = [c for c in outcomes if re.search(pattern, c)]
            assert hit and all(outcomes[c] != "ok" for c in hit), \
                (pattern, {c: outcomes[c] for c in hit})
    assert sum(v == "ok" for v in outcomes.values()) > len(ALL) // 2


# -- integer edge values against numpy ---------------------------------------------------------

INTS = ("int8", "int16", "int32", "int64", "uint8")


def _edge(dtype):
    info = np.iinfo(dtype)
    vals = [info.min, info.min + 1, -7, -2, -1, 0, 1, 2, 7, 100, info.max - 1, info.max]
    return np.array([v for v in vals if info.min <= v <= info.max], dtype)


def _run_onnx(outs, feed, path):
    model = _export(outs, path)
    return _session(model).run(None, {k.name: v for k, v in feed.items()})


@pytest.mark.parametrize("dtype", INTS)
def test_integer_edge_values_match_numpy(dtype, tmp_path):
    a = _edge(dtype)
    b = np.roll(a, 3)
    m = np.array([[100, -100 if dtype[0] == "i" else 200], [7, 1]], dtype)
    with np.errstate(all="ignore"):
        want = [a + b, a - b, a * b, -a, np.abs(a), a ** 2, a ** 3, a ** 0, a / np.where(b == 0, 1, b),
                np.maximum(a, b), np.minimum(a, b), np.clip(a, b, np.maximum(a, b)),
                a.sum(),
                np.cumsum(a), m @ m, np.where(a > b, a, b), np.sign(a)]
    with fg.Graph():
        x = fg.placeholder("x", a.shape, dtype)
        y = fg.placeholder("y", a.shape, dtype)
        mm = fg.placeholder("m", m.shape, dtype)
        safe = fg.where(fg.equal(y, 0), 1, y)
        outs = [x + y, x - y, x * y, -x, fg.abs(x), x ** 2, x ** 3, x ** 0, x / safe,
                fg.maximum(x, y), fg.minimum(x, y), fg.clip(x, y, fg.maximum(x, y)),
                fg.sum(x), fg.cumsum(x), fg.matmul(mm, mm), fg.where(x > y, x, y), fg.sign(x)]
        feed = {x: a, y: b, mm: m}
        mine = fg.run(outs, feed)
        got = _run_onnx(outs, feed, tmp_path / "edge.onnx")
    for k, (w, f, g) in enumerate(zip(want, mine, got)):
        w = np.asarray(w)
        assert f.dtype == g.dtype and f.shape == g.shape, (k, f.dtype, g.dtype)
        np.testing.assert_array_equal(g, f, err_msg=f"output {k} ({outs[k].op.name})")
        if f.dtype == w.dtype:      # numpy's own answer, where flowgrad keeps its dtype
            np.testing.assert_array_equal(g, w, err_msg=f"numpy, output {k}")


def test_int8_wraps_as_numpy(tmp_path):
    """The exact widening: int8 matmul and power through int64 wrap back to int8."""
    a = np.array([[100, -128], [127, 3]], np.int8)
    with np.errstate(all="ignore"):
        want = [a @ a, a ** 3, a * a, -a, np.abs(a)]
    assert want[0].dtype == np.int8 and want[0][0, 0] == np.int64(100 * 100 - 128 * 127) % 256 - 256
    with fg.Graph():
        x = fg.placeholder("x", a.shape, "int8")
        outs = [fg.matmul(x, x), x ** 3, x * x, -x, fg.abs(x)]
        got = _run_onnx(outs, {x: a}, tmp_path / "wrap.onnx")
    for w, g in zip(want, got):
        assert g.dtype == np.int8
        np.testing.assert_array_equal(g, w)


def test_bool_arithmetic_as_numpy(tmp_path):
    a = np.array([[True, False], [True, True]])
    b = np.array([[False, False], [True, False]])
    want = [a + b, a * b, a @ b, np.maximum(a, b), np.minimum(a, b), np.abs(a),
            a.max(axis=0), np.einsum("ij,jk->ik", a, b)]
    with fg.Graph():
        x, y = fg.placeholder("x", a.shape, bool), fg.placeholder("y", b.shape, bool)
        outs = [x + y, x * y, fg.matmul(x, y), fg.maximum(x, y), fg.minimum(x, y), fg.abs(x),
                fg.max(x, axis=0), fg.einsum("ij,jk->ik", x, y)]
        got = _run_onnx(outs, {x: a, y: b}, tmp_path / "bool.onnx")
    for w, g in zip(want, got):
        assert g.dtype == w.dtype == np.bool_
        np.testing.assert_array_equal(g, w)


# -- refusals: typed, naming the node, the user's line and the dtype ---------------------------

def test_a_type_gap_is_refused_by_node_line_and_dtype(tmp_path):
    with fg.Graph():
        ok = fg.max_pool2d(fg.placeholder("x", (1, 1, 2, 2), "int32"), 2)
        fg.export_onnx(ok, tmp_path / "ok.onnx")      # int32 pools exactly in float64
        bad = fg.max_pool2d(fg.placeholder("y", (1, 1, 2, 2), "int64"), 2); line = _line()
        with pytest.raises(OnnxExportError) as err:
            fg.export_onnx(bad, tmp_path / "bad.onnx")
    msg = str(err.value)
    assert f"node {bad.name!r}" in msg and f"test_onnx_dtypes.py:{line}" in msg
    assert "int64" in msg and "MaxPool" in msg
    assert not (tmp_path / "bad.onnx").exists()


def test_an_integer_power_by_a_tensor_is_refused(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,), "int32")
        fg.export_onnx(x ** 0, tmp_path / "ok.onnx")
        p = x ** x; line = _line()
        with pytest.raises(OnnxExportError, match=rf"{p.name}.*int32.*:{line}.*integer Pow"):
            fg.export_onnx(p, tmp_path / "bad.onnx")


def test_float64_det_is_refused_float32_exported(tmp_path):
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    with fg.Graph():
        x32 = fg.placeholder("x", (2, 2), "float32")
        got = _run_onnx([fg.det(x32)], {x32: a.astype(np.float32)}, tmp_path / "d.onnx")
        np.testing.assert_allclose(got[0], 5.0, rtol=1e-6)
        d = fg.det(fg.placeholder("y", (2, 2), "float64"))
        with pytest.raises(OnnxExportError, match=rf"{d.name}.*Det.*float64"):
            fg.export_onnx(d, tmp_path / "d64.onnx")


def _line():
    import inspect
    return inspect.currentframe().f_back.f_lineno


# -- the runtime table against the installed onnxruntime ----------------------------------------

def _runtime_kernels(opset=18):
    from onnxruntime.capi import _pybind_state as C
    from flowgrad.io.onnx_types import _TYPE_STR
    kernels = {}
    for k in C.get_all_opkernel_def():
        lo, hi = k.version_range
        if k.provider == "CPUExecutionProvider" and k.domain in ("", "ai.onnx") and \
                lo <= opset <= hi:
            for c, types in k.type_constraints.items():
                kernels.setdefault((k.op_name, c), set()).update(
                    _TYPE_STR[t] for t in types if t in _TYPE_STR)
    return kernels


def test_the_runtime_table_never_allows_what_onnxruntime_lacks():
    """For every operator the exporter writes, every dtype onnx_types allows has an
    onnxruntime CPU kernel (float16 aside: onnxruntime computes it in float32)."""
    import pathlib
    from flowgrad.io import onnx_types
    source = "".join(p.read_text() for p in
                     pathlib.Path(onnx_types.__file__).parent.glob("onnx_*.py"))
    used = set(re.findall(r'(?:op|typed|make_node)\(\s*"([A-Z][A-Za-z]+)"', source))
    used |= set(re.findall(r'"[a-z_]+": "([A-Z][A-Za-z]+)"', source))
    assert {"MatMul", "Where", "Pad", "ReduceSum", "MaxPool", "Det", "Relu"} <= used
    kernels = _runtime_kernels()
    for op_type in sorted(used):
        schema = onnx.defs.get_schema(op_type, 18)
        for tc in schema.type_constraints:
            ok = onnx_types.allowed(op_type, tc.type_param_str, 18)
            have = kernels.get((op_type, tc.type_param_str))
            if ok is None or have is None:
                continue
            extra = set(ok) - have - {"float16"}
            assert not extra, f"{op_type} {tc.type_param_str}: onnxruntime lacks {extra}"


# -- flowgrad's own kernels, found wrong by the comparison above --------------------------------

def test_avg_pool2d_of_bool_and_int8_is_the_float_mean():
    x = np.array([[[[True, False], [True, True]]]])
    i8 = np.full((1, 1, 2, 2), 100, np.int8)
    with fg.Graph():
        pb = fg.placeholder("b", x.shape, bool)
        pi = fg.placeholder("i", i8.shape, "int8")
        got = fg.run([fg.avg_pool2d(pb, 2), fg.avg_pool2d(pi, 2)], {pb: x, pi: i8})
    assert got[0].dtype == np.float64 and got[0].item() == 0.75     # the bool sum was an or
    assert got[1].item() == 100.0                                  # the int8 sum wrapped


def test_softmax_cross_entropy_of_int_logits_is_float64():
    z = np.array([[1, -2, 3], [0, 4, -1]], np.int8)
    labels = np.array([2, 1])
    zf = z.astype(np.float64)
    lse = np.log(np.exp(zf - zf.max(1, keepdims=True)).sum(1)) + zf.max(1)
    want = np.mean(lse - zf[np.arange(2), labels])
    with fg.Graph():
        p = fg.placeholder("z", z.shape, "int8")
        loss = fg.softmax_cross_entropy(p, labels)
        got = fg.run(loss, {p: z})
    assert loss.dtype == got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_l2_of_int8_and_bool_is_the_float_sum_of_squares(tmp_path):
    w8 = np.array([100, -100, 3], np.int8)
    wb = np.array([True, True, False])
    with fg.Graph():
        p8, pb = fg.placeholder("w8", (3,), "int8"), fg.placeholder("wb", (3,), bool)
        outs = [fg.l2(p8), fg.l2(pb)]
        mine = fg.run(outs, {p8: w8, pb: wb})
        got = _run_onnx(outs, {p8: w8, pb: wb}, tmp_path / "l2.onnx")
    for m, g, want in zip(mine, got, (0.5 * 20009.0, 1.0)):
        assert m.dtype == g.dtype == np.float64 and m == g == want


def test_mse_of_uint8_exports_as_its_kernel(tmp_path):
    """mse's decomposition (what is exported) subtracts and squares in float64, as the
    kernel: two uint8 operands are taken as float64 first (sklearn's mean_squared_error),
    so 1 − 3 is −2, not the wrapped 254 (tests/test_int_edges.py)."""
    y, t = np.array([1, 5, 2], np.uint8), np.array([3, 1, 2], np.uint8)
    d = y.astype(np.float64) - t.astype(np.float64)
    for reduction, want in (("mean", np.mean(d * d)), ("sum", np.sum(d * d))):
        with fg.Graph():
            py, pt = fg.placeholder("y", (3,), "uint8"), fg.placeholder("t", (3,), "uint8")
            loss = fg.mse(py, pt, reduction=reduction)
            mine = fg.run(loss, {py: y, pt: t})
            got = _run_onnx([loss], {py: y, pt: t}, tmp_path / "mse.onnx")[0]
        assert mine == want and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
