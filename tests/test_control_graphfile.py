"""Loops in graph files: save_graph/load_graph keep scan, cond and while_loop, their
derivative loops and nested loops, with bodies stored as data; tampered bodies are
refused with a GraphFileError, building nothing."""
import json
import zipfile

import numpy as np
import pytest

import flowgrad as fg

X = np.linspace(-1, 1, 12).reshape(4, 3)


def _model():
    W = fg.variable(np.eye(3) * 0.5, name="W")
    xs = fg.placeholder("xs", (None, 3))
    bias = np.array([0.1, 0.2, 0.3])

    def step(h, x):
        inner, _ = fg.scan(lambda c, v: (c * 0.5 + v, None), fg.sum(h), x)   # nested
        return fg.tanh(h @ W + x + bias) + inner, fg.sum(h)

    hT, ys = fg.scan(step, fg.constant(np.zeros(3)), xs)
    r = fg.cond(fg.sum(hT) > 0.0, lambda v: fg.log(v * v), lambda v: v, hT)
    w = fg.while_loop(lambda v: v < 5.0, lambda v: v + 1.0, fg.sum(r))
    loss = (fg.sum(ys) + fg.sum(r) + w).named("loss")
    g = fg.grad(loss, W).named("gW")
    h2 = fg.grad(fg.sum(g * g), W).named("g2")   # second order: loops over vjp loops
    return loss, g, h2


def test_loops_round_trip_bit_for_bit(tmp_path):
    with fg.Graph():
        outs = _model()
        want = fg.compile(list(outs))(xs=X)
        path = fg.save_graph(tmp_path / "loops.fg", list(outs))
    g = fg.load_graph(path)
    loaded = [g.by_name(n) for n in ("loss", "gW", "g2")]
    for codegen in (True, False):
        got = fg.compile(loaded, codegen=codegen)(xs=X)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
    # the loaded loops differentiate again, and are drawn as loops
    W = g.by_name("W")
    again = fg.compile(fg.grad(g.by_name("loss"), W))(xs=X)
    assert np.array_equal(again, want[1])
    assert "scan × T" in fg.viz.draw(g.by_name("loss"), expand=True).source
    fg.save_graph(tmp_path / "again.fg", loaded)      # a loaded graph saves again


def _doc(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("graph.json"))


def _write(path, doc):
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    content["graph.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in content.items():
            zf.writestr(n, data)


def _first_loop(doc):
    for rec in doc["nodes"]:
        if rec["op"] == "loop":
            return rec["attrs"]["spec"]["$loop"]
    raise AssertionError("no loop")


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(kind="for"), "malformed loop"),
    (lambda s: s.update(n_carry=-1), "malformed loop"),
    (lambda s: s["bodies"].pop(), "malformed loop"),
    (lambda s: s["bodies"][0]["nodes"][2].update(op="system"), "unknown op"),
    (lambda s: s["bodies"][0]["nodes"][2].update(inputs=[7]), "out of range"),
    (lambda s: s["bodies"][0]["nodes"][2].update(shape=[5]), "the file says shape"),
    (lambda s: s["bodies"][0]["nodes"][3].update(dtype="float64"), "the file says"),
    (lambda s: s["bodies"][0].update(outs=[999]), "out of range"),
    (lambda s: s["bodies"][0]["arrays"][0].update(b64="AAAA"), "wrong size"),
    (lambda s: s["bodies"][0]["arrays"][0].update(dtype="object"), "malformed array"),
])
def test_tampered_loops_are_refused(tmp_path, edit, match):
    with fg.Graph():
        outs = _model()
        path = fg.save_graph(tmp_path / "loops.fg", list(outs))
    doc = _doc(path)
    edit(_first_loop(doc))
    _write(path, doc)
    with pytest.raises(fg.GraphFileError, match=match):
        fg.load_graph(path)


def test_object_dtype_is_refused_outside_a_loop_node(tmp_path):
    with fg.Graph():
        outs = _model()
        path = fg.save_graph(tmp_path / "loops.fg", list(outs))
    doc = _doc(path)
    rec = next(r for r in doc["nodes"] if r["op"] == "loop_out")
    rec["dtype"] = "object"
    _write(path, doc)
    with pytest.raises(fg.GraphFileError, match="object"):
        fg.load_graph(path)
