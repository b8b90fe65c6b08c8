"""Hostile graph files and ONNX models found by the file-reader QA pass: each test pins
one way a file could make a reader allocate, run or raise what it should not."""
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

import flowgrad as fg

MIB = 1 << 20


def _members(g, path):
    fg.save_graph(path, g)
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members, doc):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in members.items():
            zf.writestr(n, json.dumps(doc) if n == "graph.json" else data)
    return path


def _peak_load(path):
    """(peak bytes traced while loading ``path``, the graph)."""
    tracemalloc.start()
    try:
        g = fg.load_graph(path)
        return tracemalloc.get_traced_memory()[1], g
    finally:
        tracemalloc.stop()


WEAK_ONE = {"op": None, "kind": "constant", "name": "one", "scope": [], "shape": [],
            "dtype": "float64", "inputs": [], "attrs": {}, "weak": True, "value": 1.0}


def _draw_file(tmp_path, n):
    """A file whose random draw of shape (n,) reads a weak Python-number constant (its
    ``like`` input): apply evaluates an op over weak scalars only, at load time."""
    with fg.Graph() as g:
        fg.random.normal(like=fg.placeholder("x", (3,)), seed=1)
    members = _members(g, tmp_path / "draw.fg")
    doc = json.loads(members["graph.json"])
    doc["nodes"][0] = dict(WEAK_ONE)
    draw = doc["nodes"][1]
    draw["attrs"]["shape"], draw["shape"] = {"$tuple": [n]}, [n]
    return _write(tmp_path / "weak_draw.fg", members, doc)


def test_an_op_over_weak_scalars_is_not_run_while_loading(tmp_path):
    # 8 MiB of draws asked for by a ~600-byte file: the loader must not make them (the
    # old loader ran the draw inside apply's constant folding, then dropped it)
    n = 1 << 20
    path = _draw_file(tmp_path, n)
    assert path.stat().st_size < 2000
    peak, g = _peak_load(path)
    assert peak < MIB, peak
    (draw,) = [m for m in g.nodes if m.op is not None]
    assert draw.shape == (n,) and draw.dtype == np.float64


def test_an_op_over_weak_scalars_in_a_loop_body_is_not_run_while_loading(tmp_path):
    n = 1 << 20
    with fg.Graph() as g:
        fg.scan(lambda c, xi: (c + xi, c * xi), 0.0, fg.placeholder("x", (3,)))
    members = _members(g, tmp_path / "scan.fg")
    doc = json.loads(members["graph.json"])
    (loop,) = [r for r in doc["nodes"] if r["op"] == "loop"]
    body = loop["attrs"]["spec"]["$loop"]["bodies"][0]["nodes"]
    draw = {"op": "random_normal", "kind": "op", "name": "draw", "shape": [n],
            "dtype": "float64", "inputs": [len(body)],
            "attrs": {"shape": {"$tuple": [n]}, "dtype": {"$dtype": "float64"},
                      "dist": "normal", "params": {"$tuple": [0.0, 1.0]},
                      "stream": {"$stream": 1}}}
    weak = {k: v for k, v in WEAK_ONE.items() if k != "scope"}
    body += [weak, draw]
    peak, _ = _peak_load(_write(tmp_path / "weak_body.fg", members, doc))
    assert peak < MIB, peak


def _input_made_weak(g, tmp_path, name):
    """The file of graph ``g`` (one placeholder, then one op) with the placeholder
    replaced by a weak Python-number constant: the op now reads only weak scalars."""
    members = _members(g, tmp_path / f"{name}.fg")
    doc = json.loads(members["graph.json"])
    doc["nodes"][0] = dict(WEAK_ONE)
    return _write(tmp_path / f"weak_{name}.fg", members, doc)

def test_an_op_over_weak_scalars_with_a_0d_result_is_refused_unrun(tmp_path):
    # apply would fold it into a constant, so no built graph holds such a node
    with fg.Graph() as g:
        fg.sin(fg.placeholder("x", ()))
    with pytest.raises(fg.GraphFileError, match="folds to a constant"):
        fg.load_graph(_input_made_weak(g, tmp_path, "sin"))


def test_a_small_op_over_weak_scalars_that_fails_on_numbers_is_refused(tmp_path):
    # small results are still evaluated as the builder would: sum_to reads .ndim, which
    # a Python number lacks, so the record is refused when loaded, not when run
    from flowgrad.ops.broadcast import sum_to
    with fg.Graph() as g:
        sum_to(fg.placeholder("x", (2, 3)), shape=(3,))
    with pytest.raises(fg.GraphFileError, match="rebuilding sum_to failed"):
        fg.load_graph(_input_made_weak(g, tmp_path, "sum_to"))


def test_ops_over_weak_scalars_a_builder_made_still_round_trip(tmp_path):
    with fg.Graph() as g:
        a = fg.expand_dims(2.0, 0)
        b = fg.broadcast_to(3, (2, 3))
    fg.save_graph(tmp_path / "w.fg", g)
    g2 = fg.load_graph(tmp_path / "w.fg")
    got = fg.compile([g2.by_name(a.name), g2.by_name(b.name)])({})
    np.testing.assert_array_equal(got[0], np.array([2.0]))
    np.testing.assert_array_equal(got[1], np.full((2, 3), 3))
    assert got[0].dtype == np.float64 and got[1].dtype == np.array(3).dtype


def _scan_doc(tmp_path):
    with fg.Graph() as g:
        fg.scan(lambda c, xi: (c + xi, c * xi), 0.0, fg.placeholder("x", (3,)))
    members = _members(g, tmp_path / "scan.fg")
    doc = json.loads(members["graph.json"])
    (loop,) = [r for r in doc["nodes"] if r["op"] == "loop"]
    return members, doc, loop["attrs"]["spec"]["$loop"]["bodies"][0]


def _body_constant(tmp_path, shape, b64):
    """The scan file with one more constant in its body: an inline array of ``shape``."""
    members, doc, body = _scan_doc(tmp_path)
    body["arrays"].append({"dtype": "float64", "shape": shape, "b64": b64})
    body["nodes"].append({"op": None, "kind": "constant", "name": "k", "shape": shape,
                          "dtype": "float64", "inputs": [], "attrs": {}, "weak": False,
                          "value": {"$array": str(len(body["arrays"]) - 1)}})
    return _write(tmp_path / "body_const.fg", members, doc)


EIGHT_BYTES = "AAAAAAAA8D8="      # base64 of float64 1.0


@pytest.mark.parametrize("shape", [[1 << 16] * 4, [1 << 20, 1 << 20, 1 << 24]])
def test_a_loop_body_array_whose_size_wraps_int64_is_refused(tmp_path, shape):
    # 2^64 entries is 0 in int64 arithmetic: np.prod said the array held 0 bytes, and the
    # reshape that followed raised a bare ValueError
    with pytest.raises(fg.GraphFileError, match="wrong size"):
        fg.load_graph(_body_constant(tmp_path, shape, ""))


def test_a_loop_body_array_may_have_64_dimensions_not_65(tmp_path):
    g = fg.load_graph(_body_constant(tmp_path, [1] * 64, EIGHT_BYTES))
    (loop,) = [n for n in g.nodes if n.op is not None and n.op.name == "loop"]
    (k,) = [n for n in loop.attrs["spec"].bodies[0].graph.nodes if n.shape == (1,) * 64]
    assert k.shape == (1,) * 64 and k.value.reshape(()) == 1.0
    with pytest.raises(fg.GraphFileError, match="wrong size"):
        fg.load_graph(_body_constant(tmp_path, [1] * 65, EIGHT_BYTES))


@pytest.mark.parametrize("dtype, last_good, first_bad", [
    ("float16", 65504.0, 65520.0),                 # 65520 rounds to inf in float16
    ("float32", float(np.finfo(np.float32).max), 3.4028235677973366e38)])
def test_a_tagged_scalar_past_its_dtypes_range_is_refused_not_made_inf(dtype, last_good,
                                                                        first_bad):
    import warnings
    from flowgrad.io.attrs import decode
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # and no RuntimeWarning on the way
        got = decode({"$scalar": [dtype, last_good]}, None, "here")
        assert got.dtype == np.dtype(dtype) and float(got) == last_good
        with pytest.raises(fg.GraphFileError, match="does not fit"):
            decode({"$scalar": [dtype, first_bad]}, None, "here")
        assert np.isnan(decode({"$scalar": [dtype, {"$float": "nan"}]}, None, "here"))
        assert decode({"$scalar": [dtype, {"$float": "-inf"}]}, None, "here") == -np.inf


def _onnx_input_model(tmp_path, ndim):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "m",
                              [vi("x", TensorProto.DOUBLE, [1] * ndim)],
                              [vi("y", TensorProto.DOUBLE, None)])
    path = tmp_path / f"in{ndim}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_an_onnx_input_may_have_64_dimensions_not_65(tmp_path):
    g = fg.import_onnx(_onnx_input_model(tmp_path, 64))
    x = np.full((1,) * 64, 2.5)
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}), -x)
    with pytest.raises(fg.GraphFileError, match="65 dimensions"):
        fg.import_onnx(_onnx_input_model(tmp_path, 65))


def test_a_graph_output_made_by_identity_is_found_by_its_name(tmp_path):
    """Identity makes no node, so its output's name went unclaimed: g.by_name("y") was a
    KeyError for the model's own output (flowgrad's export writes such an Identity for
    every output named like its node, e.g. fg.var(x).named("out"))."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["h"]),
                               helper.make_node("Identity", ["h"], ["y"]),
                               helper.make_node("Identity", ["x"], ["x2"])], "m",
                              [vi("x", TensorProto.DOUBLE, [3])],
                              [vi("y", TensorProto.DOUBLE, None),
                               vi("x2", TensorProto.DOUBLE, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              tmp_path / "id.onnx")
    g = fg.import_onnx(tmp_path / "id.onnx")
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(fg.run(g.by_name("y"), {"x": x}), 1 / (1 + np.exp(-x)),
                               rtol=1e-15)
    assert g.by_name("x").kind == "placeholder"    # an input keeps its (feed) name

    with fg.Graph():
        out = fg.var(fg.placeholder("a", (3, 4))).named("out")
    fg.export_onnx(out, tmp_path / "var.onnx")
    a = np.arange(12.0).reshape(3, 4) ** 1.5
    got = fg.run(fg.import_onnx(tmp_path / "var.onnx").by_name("out"), {"a": a})
    np.testing.assert_allclose(got, np.var(a), rtol=1e-13)


def test_graph_json_that_parses_past_memory_is_a_graph_file_error(tmp_path, monkeypatch):
    """"{}," repeated deflates 1000:1 and parses to ~24 bytes per byte of text: a 1 MB
    file within its 64 MB budget of text made a 1.5 GB parse, a bare MemoryError under a
    memory limit. (Simulated here: json.loads raising MemoryError.)"""
    import types
    from flowgrad.io import graphfile
    with fg.Graph() as g:
        fg.placeholder("x", (2,))
    path = fg.save_graph(tmp_path / "ok.fg", g)

    def loads(text, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(graphfile, "json", types.SimpleNamespace(loads=loads))
    with pytest.raises(fg.GraphFileError, match="does not fit in memory once parsed"):
        fg.load_graph(path)


def test_json_made_to_inflate_is_refused_before_it_is_parsed(tmp_path):
    """'{},' repeated compresses ~1000:1 and parses to ~24 bytes of objects per byte, so
    text within the data budget could take 1500× the file's size once parsed (a 1 MB
    file, 1.5 GB). The objects are estimated from brackets and commas before parsing and
    held to PARSE_RATIO × the budget: pinned at the budget where the estimate just fits."""
    from flowgrad.io import limits
    with fg.Graph() as g:
        fg.sin(fg.placeholder("x", (2,)))
    members = _members(g, tmp_path / "small.fg")
    doc = json.loads(members["graph.json"])
    doc["padding"] = [{}] * 100_000
    path = _write(tmp_path / "inflating.fg", members, doc)
    text = json.dumps(doc).encode()
    fits = -(-limits.parsed_estimate(text) // limits.PARSE_RATIO)
    with pytest.raises(fg.GraphFileError, match="would parse to about"):
        fg.load_graph(path, max_bytes=fits - 1)
    try:     # at the budget where it fits, the parse goes ahead (the extra key may
        fg.load_graph(path, max_bytes=fits)     # still be refused, for what it is)
    except fg.GraphFileError as e:
        assert "would parse" not in str(e)
    with pytest.raises(fg.GraphFileError, match="would parse to about"):
        fg.load_graph(path)                     # the default budget: 64× the file


def test_a_large_graph_save_graph_wrote_is_within_the_parse_budget(tmp_path):
    """The estimate overestimates graph.json as save_graph writes it by ~1.3× and the
    objects take ~150× the file: within PARSE_RATIO × 64× the file's size."""
    from flowgrad.io import limits
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 4))
        W = fg.variable(np.zeros((4, 4)), name="W")
        y = x
        for _ in range(300):
            y = fg.tanh(y @ W) * 1.5 + fg.sin(y)
        fg.grad(fg.sum(y), W)
    path = tmp_path / "large.fg"
    fg.save_graph(path, g)
    with zipfile.ZipFile(path) as zf:
        text = zf.read("graph.json")
    size = path.stat().st_size
    assert limits.parsed_estimate(text) < limits.PARSE_RATIO * limits.RATIO * size / 1.5
    peak, g2 = _peak_load(path)
    assert len(g2) == len(g)
