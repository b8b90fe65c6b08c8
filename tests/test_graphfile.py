"""fg.save_graph / fg.load_graph: every op of the op table round-trips with its
derivatives, random graphs round-trip (hypothesis), and hostile files are refused."""
import io
import json
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import flowgrad as fg
from flowgrad.io import graphfile
from flowgrad.ops import Op

import random_graphs
from op_cases import CASES


def _build_case(fn, arrays):
    """out = fn(placeholders), s = Σ out·C (C fixed), and ∂s/∂inputs, in a new graph."""
    g = fg.Graph()
    with g:
        xs = [fg.placeholder(f"a{i}", shape=np.shape(a)) for i, a in enumerate(arrays)]
        out = fn(*xs)
        c = np.random.default_rng(0).standard_normal(out.shape)
        s = fg.sum(out * c) if out.shape else out * 1.5
        grads = fg.grad(s, xs)
    return g, xs, out, s, grads


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_round_trip_every_op(case, tmp_path):
    _, fn, arrays, _ = case
    g, xs, out, s, grads = _build_case(fn, arrays)
    feed = dict(zip(xs, arrays))
    before = fg.run([out, s, *grads], feed)
    path = graphfile.save_graph(tmp_path / "case.fg", g)
    g2 = fg.load_graph(path)
    assert len(g2) == len(g)
    for n in g.nodes:   # every node comes back: op, name, scope, shape, dtype, inputs, attrs
        m = g2.by_name(n.name)
        assert (m.op, m.kind, m.shape, m.dtype, m.scope) == (n.op, n.kind, n.shape, n.dtype,
                                                              n.scope)
        assert [i.name for i in m.inputs] == [i.name for i in n.inputs]
    find = [g2.by_name(n.name) for n in (out, s, *grads)]
    feed2 = {x.name: a for x, a in zip(xs, arrays)}
    after = fg.run(find, feed2)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # the reloaded graph can be differentiated again: its gradients equal the saved ones
    xs2 = [g2.by_name(x.name) for x in xs]
    again = fg.run(fg.grad(g2.by_name(s.name), xs2), feed2)
    for a, b in zip(before[2:], again):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_loss_with_gradients_and_hessian_reloads(tmp_path):
    rng = np.random.default_rng(3)
    X, T = rng.standard_normal((6, 3)), rng.uniform(0, 1, 6)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(rng.standard_normal(3), name="w")
        b = fg.variable(np.float32(0.25), name="b", dtype=np.float64)
        with fg.name_scope("model"):
            loss = (fg.bce_with_logits(fg.linear(x, w, b), t) + 0.1 * fg.l2(w)).named("loss")
        gw, gb = fg.grad(loss, [w, b])
        gw.named("gw")
        gb.named("gb")
    fg.save_graph(tmp_path / "lr.fg", [loss, gw, gb])   # only what these need
    g2 = fg.load_graph(tmp_path / "lr.fg")
    assert g2.by_name("model/loss").scope == ("model",)
    assert g2.by_name("x").shape == (None, 3)
    want = fg.run([loss, gw, gb], {x: X, t: T})
    got = fg.run([g2.by_name(n) for n in ("model/loss", "gw", "gb")], {"x": X, "t": T})
    for a, b_ in zip(want, got):
        np.testing.assert_array_equal(a, b_)
    # second order on the reloaded graph, against the original
    w2 = g2.by_name("w")
    h_want = fg.run(fg.hessian(loss, w), {x: X, t: T})
    h_got = fg.run(fg.hessian(g2.by_name("model/loss"), w2), {"x": X, "t": T})
    np.testing.assert_allclose(h_got, h_want, rtol=1e-12, atol=1e-14)
    # variables keep their values and stay trainable
    np.testing.assert_array_equal(w2.value, w.value)
    w2.value = np.zeros(3)
    sigma_b = 1 / (1 + np.exp(-0.25))               # w = 0: every logit is b
    assert fg.run(g2.by_name("gb"), {"x": X, "t": T}) == pytest.approx(sigma_b - T.mean(),
                                                                      rel=1e-12)


def test_a_reloaded_gradient_program_trains_and_keeps_composite_groups(tmp_path):
    rng = np.random.default_rng(4)
    X, T = rng.standard_normal((8, 2)), rng.uniform(0, 1, 8)

    @fg.composite
    def model(x, w, b):
        return fg.linear(x, w, b)

    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.zeros(2), name="w")
        b = fg.variable(0.0, name="b")
        loss = fg.bce_with_logits(model(x, w, b), t).named("loss")
        gw, gb = fg.grad(loss, [w, b])
    fg.save_graph(tmp_path / "m.fg", [loss, gw, gb])
    g2 = fg.load_graph(tmp_path / "m.fg")
    loss2, w2, b2 = g2.by_name("loss"), g2.by_name("w"), g2.by_name("b")
    assert g2.by_name("w").group == () and g2.by_name("loss").group == ()
    assert [n for n in g2.nodes if n.group == ("model",)]
    # the optimizer's bind-time check knows these nodes as ∂loss/∂w and ∂loss/∂b
    opt = fg.optim.SGD([w2, b2], lr=0.5)
    prog = fg.compile([loss2, g2.by_name(gw.name), g2.by_name(gb.name)])
    opt.step(prog, {"x": X, "t": T})
    sig = 0.5                                       # σ(0): every logit is 0 at the start
    np.testing.assert_allclose(w2.value, -0.5 * X.T @ (sig - T) / 8, rtol=1e-13)
    assert float(b2.value) == pytest.approx(-0.5 * np.mean(sig - T), rel=1e-13)


def test_malformed_gradient_records_are_refused(tmp_path):
    ok = _saved(tmp_path)
    doc = _doc(ok)
    doc["gradients"] = [[0, 99, 1]]
    _refused(_rewrite(ok, tmp_path / "g.fg", doc=doc), "gradient records are malformed")


def test_jacobians_and_hessians_round_trip(tmp_path):
    """basis_map nodes (jacobian, hessian) name a body of nodes in the same graph:
    saving some outputs keeps those nodes, and the reloaded maps differentiate again."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((4, 3))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        w = fg.variable(rng.standard_normal(3), name="w")
        loss = fg.mean(fg.softplus(x @ w) * fg.tanh(x @ w)).named("loss")
        h = fg.hessian(loss, w).named("H")
        jx = fg.jacobian(fg.tanh(x @ w), x).named("Jx")      # a run-time-length basis
        third = fg.jacobian(h, w).named("T")
    outs = [h, jx, third]
    fg.save_graph(tmp_path / "h.fg", outs)
    g2 = fg.load_graph(tmp_path / "h.fg")
    want = fg.run(outs, {x: X})
    got = fg.run([g2.by_name(o.name) for o in outs], {"x": X})
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    w2 = g2.by_name("w")
    again = fg.run(fg.grad(fg.sum(g2.by_name("H")), w2), {"x": X})
    np.testing.assert_allclose(again, fg.run(fg.grad(fg.sum(h), w), {x: X}), rtol=1e-12)


def test_random_and_classification_ops_round_trip(tmp_path):
    """A random node's stream is stored as its seed: the reloaded graph draws the same
    sequence from the start, as a fresh copy of the original does."""
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 2))
        lab = fg.placeholder("lab", shape=(None,), dtype="int64")
        outs = [x + fg.random.normal((None, 2), like=x, seed=3),
                fg.nn.dropout(x, 0.5, training=True), fg.argmax(x), fg.one_hot(lab, 4)]
    g2 = fg.load_graph(fg.save_graph(tmp_path / "r.fg", g))
    feed = {"x": np.random.default_rng(0).standard_normal((3, 2)), "lab": np.array([0, 3, 1])}
    for _ in range(2):       # the second call draws anew, in both graphs alike
        want = fg.run(outs, feed)
        got = fg.run([g2.by_name(o.name) for o in outs], feed)
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)


def test_float32_and_weak_scalars_keep_their_dtypes(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,), dtype="float32")
        y = (0.5 * x + 1).named("y")
        k = fg.constant(np.arange(3, dtype=np.int32), name="k")
        fg.sum(k).named("ks")
    g2 = fg.load_graph(fg.save_graph(tmp_path / "f.fg", g))
    assert g2.by_name("y").dtype == np.float32
    assert g2.by_name(y.inputs[0].inputs[0].name).value == 0.5   # weak stays a Python float
    assert g2.by_name("k").dtype == np.int32
    assert fg.run(g2.by_name("ks")) == 3


# -- random graphs ------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs.programs())
def test_random_graphs_round_trip(tmp_path_factory, program):
    g, xs, outs, arrays = random_graphs.build(program)
    path = tmp_path_factory.mktemp("rg") / "g.fg"
    fg.save_graph(path, g)
    g2 = fg.load_graph(path)
    feed = {x.name: a for x, a in zip(xs, arrays)}
    want = fg.run(outs, feed)
    got = fg.run([g2.by_name(v.name) for v in outs], feed)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    again = fg.run(fg.grad(g2.by_name("loss"), [g2.by_name(x.name) for x in xs]), feed)
    for a, b in zip(want[1:], again):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


# -- refusing to save what is not data --------------------------------------------------

_with_fn = Op("test_io_apply_fn", lambda xp, x, fn: fn(x), lambda x, fn: (x.shape, x.dtype),
              vjp=(None,))


def test_an_attribute_that_is_code_is_refused_naming_the_node(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,))
        _with_fn(x, fn=lambda v: v + 1).named("odd")
    with pytest.raises(fg.GraphFileError, match=r"node 'odd', attribute 'fn'.*function"):
        fg.save_graph(tmp_path / "bad.fg", g)
    assert not (tmp_path / "bad.fg").exists()


# -- hostile files ------------------------------------------------------------------------

def _saved(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 2))
        w = fg.variable(np.arange(2.0), name="w")
        fg.sum(x[:, ::-1] @ w).named("y")
    return fg.save_graph(tmp_path / "ok.fg", g)


def _rewrite(path, out, *, doc=None, members=None):
    """A copy of the archive at ``path`` with graph.json replaced by ``doc`` (edited)
    and members added or replaced."""
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    if doc is not None:
        content["graph.json"] = json.dumps(doc).encode()
    content.update(members or {})
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in content.items():
            zf.writestr(n, data)
    return out


def _doc(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("graph.json"))


def _refused(path, match):
    before = len(fg.default_graph())
    with pytest.raises(fg.GraphFileError, match=match):
        fg.load_graph(path)
    assert len(fg.default_graph()) == before


def test_unknown_op(tmp_path):
    doc = _doc(_saved(tmp_path))
    doc["nodes"][-1]["op"] = "frobnicate"
    _refused(_rewrite(tmp_path / "ok.fg", tmp_path / "x.fg", doc=doc),
             r"node 'y' uses op 'frobnicate'")


def test_newer_format_version(tmp_path):
    doc = _doc(_saved(tmp_path))
    doc["version"] = graphfile.FORMAT_VERSION + 1
    _refused(_rewrite(tmp_path / "ok.fg", tmp_path / "x.fg", doc=doc), r"newer")


def test_corrupt_and_truncated_files(tmp_path):
    data = _saved(tmp_path).read_bytes()
    (tmp_path / "trunc.fg").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "trunc.fg", "not a readable graph file")
    (tmp_path / "noise.fg").write_bytes(np.random.default_rng(0).bytes(500))
    _refused(tmp_path / "noise.fg", "not a readable graph file")
    flipped = bytearray(data)
    start = flipped.index(b"graph.json") + 40      # inside the compressed JSON
    flipped[start:start + 8] = b"\xff" * 8
    (tmp_path / "flip.fg").write_bytes(bytes(flipped))
    _refused(tmp_path / "flip.fg", "graph")
    (tmp_path / "json.fg").write_bytes(b"")
    _rewrite(tmp_path / "ok.fg", tmp_path / "json.fg", members={"graph.json": b"{\"nodes\": ["})
    _refused(tmp_path / "json.fg", "not valid JSON")


def test_structural_lies_are_refused(tmp_path):
    ok = _saved(tmp_path)
    doc = _doc(ok)
    doc["nodes"][1]["inputs"] = [5]                  # an input that is not an earlier node
    _refused(_rewrite(ok, tmp_path / "a.fg", doc=doc), "not an earlier node")
    doc = _doc(ok)
    doc["nodes"][-1]["shape"] = [3]                  # disagrees with what the op infers
    _refused(_rewrite(ok, tmp_path / "b.fg", doc=doc), "rebuilding gives")
    doc = _doc(ok)
    doc["nodes"][-1]["attrs"]["axis"] = {"$pickle": "cos\nsystem\n"}
    _refused(_rewrite(ok, tmp_path / "c.fg", doc=doc), "unknown attribute tag")
    doc = _doc(ok)
    doc["nodes"][1]["dtype"] = "object"
    _refused(_rewrite(ok, tmp_path / "d.fg", doc=doc), "not allowed")


def _npy_header(shape, dtype="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_array_member_with_absurd_shape(tmp_path):
    ok = _saved(tmp_path)
    bomb = _npy_header((10 ** 12, 10 ** 12)) + b"\0" * 16
    _refused(_rewrite(ok, tmp_path / "a.fg", members={"arrays/0.npy": bomb}), "absurd|declares")
    pickled = _npy_header((2,), "|O") + b"\0" * 16
    _refused(_rewrite(ok, tmp_path / "b.fg", members={"arrays/0.npy": pickled}), "dtype|header")


def test_decompression_bombs(tmp_path, monkeypatch):
    ok = _saved(tmp_path)
    # a member whose declared size is over the limit is never inflated
    monkeypatch.setattr(graphfile, "MAX_ARRAY_BYTES", 1 << 20)
    big = _npy_header((4 << 20,), "|u1") + bytes(4 << 20)   # 4 MiB of zeros, ~4 KiB zipped
    _refused(_rewrite(ok, tmp_path / "a.fg", members={"arrays/0.npy": big}), "over the")
    monkeypatch.setattr(graphfile, "MAX_TOTAL_BYTES", 2 << 20)
    _refused(_rewrite(ok, tmp_path / "b.fg", members={"pad": big}), "in all")
    monkeypatch.undo()
    # a member that inflates past the size its header declares: stopped at that size
    path = _rewrite(ok, tmp_path / "c.fg", members={"arrays/0.npy": big})
    data = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):   # uncompressed-size fields
        at = 0
        while (at := data.find(sig, at)) >= 0:
            name_len = struct.unpack_from("<H", data, at + (26 if sig == b"PK\x03\x04" else 28))[0]
            name_at = at + (30 if sig == b"PK\x03\x04" else 46)
            if data[name_at:name_at + name_len] == b"arrays/0.npy":
                struct.pack_into("<I", data, at + off, 200)
            at += 4
    path.write_bytes(bytes(data))
    _refused(path, "Bad CRC|not a readable graph file")
