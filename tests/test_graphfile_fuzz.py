"""Graph files of the wave-3 graphs (tests/fuzz_wave3.py: loops, custom rules,
stop_gradient, vectorize, nn layers, weak and complex scalars, float16/int8/complex64,
run-time lengths), saved, loaded and saved again; and those files made hostile.

* Round trip: the loaded graph has the same node names and count, gives bit-identical
  values, dtypes and shapes on the same feeds (reference interpreter and generated
  code), a loss built after loading has bit-identical gradients (and builds as many
  nodes) as one built on the original, and saving the loaded graph writes the same
  bytes (the format is a function of the graph).
* Hostile files: seeded mutations anywhere in graph.json — inside loop bodies and
  specs too — and the boundaries of each defect found, each a ``GraphFileError``
  within a second, never a bare exception, or a graph that loads but says another
  than it runs. ONNX import with a 10^12-element tensor, external data outside the
  model, a cycle and loops nested past the limit.

Seeds are fixed; ``FLOWGRAD_FILEFUZZ`` graphs (default 40) keep it within seconds.
"""
import copy
import io
import json
import os
import random
import re
import time
import warnings
import zipfile

import numpy as np
import pytest

import flowgrad as fg
from fuzz_wave3 import NN_MODELS, build_case, nn_case

N_CASES = int(os.environ.get("FLOWGRAD_FILEFUZZ", "80"))
N_MUTANTS = int(os.environ.get("FLOWGRAD_FILEFUZZ_MUTANTS", "400"))


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members, doc=None, raw=None):
    """An archive of ``members``, graph.json replaced by ``doc`` (or the text ``raw``)."""
    text = raw if raw is not None else json.dumps(doc) if doc is not None else None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, text if name == "graph.json" and text is not None else data)
    path.write_bytes(buf.getvalue())
    return path


def _bits(a, b):
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    return (type(a), a_arr.dtype, a_arr.shape, a_arr.tobytes()) == \
        (type(b), b_arr.dtype, b_arr.shape, b_arr.tobytes())


def _run(outs, feed, codegen):
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fg.compile(outs, codegen=codegen)(feed)
    except fg.FlowgradError as e:
        return type(e)


def _same_runs(outs1, outs2, feeds, codegens=(False, True)):
    for feed in feeds:
        by_name = {p.name: v for p, v in feed.items()}
        for cg in codegens:
            r1, r2 = _run(outs1, feed, cg), _run(outs2, by_name, cg)
            if isinstance(r1, type) or isinstance(r2, type):
                assert r1 is r2
                continue
            assert all(_bits(a, b) for a, b in zip(r1, r2)), (cg, r1, r2)


def _loss(x):
    return fg.sum(fg.real(x * fg.conj(x)) if x.dtype.kind == "c" else fg.cos(x))


def _round_trip(case, tmp_path):
    g = case.graph
    first, second = tmp_path / "a.fg", tmp_path / "b.fg"
    fg.save_graph(first, g)
    g2 = fg.load_graph(first)
    assert [n.name for n in g2.nodes] == [n.name for n in g.nodes]
    fg.save_graph(second, g2)
    assert first.read_bytes() == second.read_bytes()
    _same_runs(case.outs, [g2.by_name(o.name) for o in case.outs], case.feeds)
    x = case.outs[0]
    if x.dtype.kind not in "fc":
        return
    wrt = [p for p in case.inputs if p.dtype.kind in "fc"]
    x2 = g2.by_name(x.name)
    with g:
        l1 = _loss(x)
        grads1 = fg.grad(l1, wrt)
    with g2:
        l2 = _loss(x2)
        grads2 = fg.grad(l2, [g2.by_name(p.name) for p in wrt])
    assert len(g2) == len(g)      # a loaded forward's nodes are shared as the original's
    _same_runs([l1, *grads1], [l2, *grads2], case.feeds, codegens=(False,))


@pytest.mark.parametrize("seed", range(N_CASES))
def test_wave3_graphs_round_trip_bit_for_bit(seed, tmp_path):
    _round_trip(build_case(seed, max_steps=5), tmp_path)


@pytest.mark.parametrize("name", sorted(NN_MODELS))
def test_nn_layers_round_trip_bit_for_bit(name, tmp_path):
    _round_trip(nn_case(name, "float32"), tmp_path)


# -- the defects round trips found ------------------------------------------------------

def _named_scan():
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(4, 3))
        c, ys = fg.scan(lambda c, r: ((c * 0.5 + fg.tanh(r)).named("hidden"),
                                      fg.constant(np.ones(3), name="bias") + c),
                        fg.constant(np.zeros(3)), x)
        c.named("c"), ys.named("ys")
    return g


def _reference_scan(x):
    c, ys = np.zeros(3), []
    for r in x:
        ys.append(np.ones(3) + c)
        c = c * 0.5 + np.tanh(r)
    return c, np.stack(ys)


def test_loop_body_node_names_survive_loading(tmp_path):
    """A name given inside a step (``.named("hidden")``, a constant's ``name=``) was
    lost on loading (the body node took its default name), so errors inside the loop
    named another node and a second save wrote another file."""
    g = _named_scan()
    fg.save_graph(tmp_path / "a.fg", g)
    g2 = fg.load_graph(tmp_path / "a.fg")
    body = g2.by_name("c").inputs[0].attrs["spec"].bodies[0]
    assert {"hidden", "bias"} <= {n.name for n in body.graph.nodes}
    fg.save_graph(tmp_path / "b.fg", g2)
    assert (tmp_path / "a.fg").read_bytes() == (tmp_path / "b.fg").read_bytes()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3))
    c, ys = fg.run([g2.by_name("c"), g2.by_name("ys")], {"x": x})
    want_c, want_ys = _reference_scan(x)
    np.testing.assert_allclose(c, want_c, rtol=1e-15)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-15)


def test_two_body_nodes_of_one_name_are_refused(tmp_path):
    fg.save_graph(tmp_path / "a.fg", _named_scan())
    members = _members(tmp_path / "a.fg")
    doc = json.loads(members["graph.json"])
    body = next(n for n in doc["nodes"] if n["op"] == "loop")["attrs"]["spec"]["$loop"][
        "bodies"][0]["nodes"]
    k = [n["name"] for n in body].index("bias")
    body[k]["name"] = "hidden"
    with pytest.raises(fg.GraphFileError, match="named 'hidden'"):
        fg.load_graph(_write(tmp_path / "m.fg", members, doc))


def test_a_gradient_built_after_loading_shares_the_forward_nodes(tmp_path):
    """Loading set an empty ``scope`` and ``group`` on every node, which the graph reads as
    "built in a composite" (Graph.unary_twin), so fg.grad after loading copied the
    forward's sin(x) where the original graph shares it: one node more per rule."""
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(3,))
        fg.sum(fg.sin(x)).named("y")
    fg.save_graph(tmp_path / "a.fg", g)
    g2 = fg.load_graph(tmp_path / "a.fg")
    counts, values = [], []
    xv = np.array([0.3, -1.2, 2.0])
    for graph in (g, g2):
        with graph:
            (gx,) = fg.grad(fg.sum(fg.cos(graph.by_name("x"))), [graph.by_name("x")])
        counts.append(len(graph))
        values.append(fg.run(gx, {"x": xv}))
    assert counts[1] == counts[0]
    for v in values:
        np.testing.assert_allclose(v, -np.sin(xv), rtol=1e-15)


def test_saving_the_same_graph_twice_writes_the_same_bytes(tmp_path, monkeypatch):
    """Each zip member carried the clock's time, so two saves a few seconds apart
    differed: a graph file was not a function of its graph."""
    g = _named_scan()
    fg.save_graph(tmp_path / "a.fg", g)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    fg.save_graph(tmp_path / "b.fg", g)
    assert (tmp_path / "a.fg").read_bytes() == (tmp_path / "b.fg").read_bytes()


# -- hostile files: the defects, at their boundaries ------------------------------------

def _scan_file(tmp_path):
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(4, 3))
        c, ys = fg.scan(lambda c, r: (c + r, r * 2.0), fg.constant(np.zeros(3)), x)
        c.named("c"), ys.named("ys")
    path = fg.save_graph(tmp_path / "scan.fg", g)
    members = _members(path)
    return members, json.loads(members["graph.json"])


def _spec(doc):
    return next(n for n in doc["nodes"] if n["op"] == "loop")["attrs"]["spec"]["$loop"]


def _node(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def test_a_loop_declaring_results_its_body_does_not_give_is_refused(tmp_path):
    """A scan's spec said its ys were (4, 5) where its step gives (3,) rows, and the
    loop_out record agreed: the file loaded, the node said (4, 5), runs returned (4, 3)."""
    members, doc = _scan_file(tmp_path)
    x = np.arange(12.0).reshape(4, 3)
    g = fg.load_graph(_write(tmp_path / "ok.fg", members, doc))   # as saved: (4, 3)
    np.testing.assert_array_equal(fg.run(g.by_name("ys"), {"x": x}), 2.0 * x)
    for edit in ("shape", "dtype", "stack"):
        d = copy.deepcopy(doc)
        spec = _spec(d)
        if edit == "shape":
            spec["out_shapes"][1] = [4, 5]
            _node(d, "ys")["shape"] = [4, 5]
        elif edit == "dtype":
            spec["out_dtypes"][1] = "float32"
            _node(d, "ys")["dtype"] = "float32"
        else:      # the carries' stack, which no loop_out of the file reads
            spec["out_shapes"][2] = [4, 1000000000000]
        with pytest.raises(fg.GraphFileError, match="loop disagree"):
            fg.load_graph(_write(tmp_path / "m.fg", members, d))


def test_a_loop_body_argument_unlike_the_loop_input_is_refused(tmp_path):
    """The step's row argument declared (4,) while the xs give rows of (3,)."""
    members, doc = _scan_file(tmp_path)
    d = copy.deepcopy(doc)
    body = _spec(d)["bodies"][0]
    body["nodes"][1]["shape"] = [4]       # arg_1, the xs row, unused by nothing else
    with pytest.raises(fg.GraphFileError):
        fg.load_graph(_write(tmp_path / "m.fg", members, d))


def test_a_scan_result_after_the_carries_must_have_an_axis(tmp_path):
    """A stacked result declared 0-d was an IndexError from LoopSpec; (4,) loads."""
    members, doc = _scan_file(tmp_path)
    d = copy.deepcopy(doc)
    _spec(d)["out_shapes"][2] = []
    with pytest.raises(fg.GraphFileError, match="0-d"):
        fg.load_graph(_write(tmp_path / "m.fg", members, d))


def test_a_node_record_without_an_op_key_is_refused(tmp_path):
    """``"op": null`` is a leaf's; no "op" key at all passed the type check as None,
    then was read as rec["op"]: a bare KeyError."""
    members, doc = _scan_file(tmp_path)
    d = copy.deepcopy(doc)
    del d["nodes"][0]["op"]             # the placeholder's null op
    with pytest.raises(fg.GraphFileError, match="missing or bad 'op'"):
        fg.load_graph(_write(tmp_path / "m.fg", members, d))


def test_a_body_leaf_with_an_op_inputs_or_attributes_is_refused(tmp_path):
    members, doc = _scan_file(tmp_path)
    for field, value in (("op", "sin"), ("inputs", [0]), ("attrs", {"axis": 0})):
        d = copy.deepcopy(doc)
        _spec(d)["bodies"][0]["nodes"][1][field] = value     # a placeholder
        with pytest.raises(fg.GraphFileError, match="has no op, inputs or attributes"):
            fg.load_graph(_write(tmp_path / "m.fg", members, d))


@pytest.mark.parametrize("key", ["version", "name", "op", "shape", "$loop"])
def test_a_repeated_json_key_is_refused(tmp_path, key):
    """json.loads keeps the last of two equal keys, other readers the first: such a
    file does not say one graph. The key once loads."""
    members, doc = _scan_file(tmp_path)
    text = members["graph.json"].decode()
    at = text.index(f'"{key}":')
    fg.load_graph(_write(tmp_path / "ok.fg", members, raw=text))
    repeated = text[:at] + f'"{key}":"other",' + text[at:]
    with pytest.raises(fg.GraphFileError, match=re.escape(f"repeats the key '{key}'")):
        fg.load_graph(_write(tmp_path / "m.fg", members, raw=repeated))


def test_a_repeated_zip_member_is_refused(tmp_path):
    members, _ = _scan_file(tmp_path)
    path = _write(tmp_path / "m.fg", members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # zipfile warns of the duplicate name
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("graph.json", b"{}")
    with pytest.raises(fg.GraphFileError, match="appears twice"):
        fg.load_graph(path)


@pytest.mark.parametrize("where", ["loop input", "body input"])
def test_a_node_reading_itself_is_refused(tmp_path, where):
    members, doc = _scan_file(tmp_path)
    d = copy.deepcopy(doc)
    if where == "loop input":
        k = next(i for i, n in enumerate(d["nodes"]) if n["op"] == "loop")
        d["nodes"][k]["inputs"][0] = k
    else:
        nodes = _spec(d)["bodies"][0]["nodes"]
        k = next(i for i, n in enumerate(nodes) if n["inputs"])
        nodes[k]["inputs"][0] = k
    with pytest.raises(fg.GraphFileError):
        fg.load_graph(_write(tmp_path / "m.fg", members, d))


# -- hostile files: seeded mutations anywhere ---------------------------------------------

HUGE = 10 ** 12
ODD = [None, True, 0, -1, 1, 2, HUGE, -HUGE, 2 ** 63, 2 ** 64, 10 ** 30, float("nan"),
       float("inf"), 1.5, "", "x", "loop", "float64", "object", [], [HUGE], [None], [-1],
       {}, {"$tuple": [HUGE]}, {"$loop": {}}, {"$custom": "not_registered"},
       {"$stream": -1}, {"$array": "arrays/0.npy"}, {"$dtype": "object"},
       {"$scalar": ["float16", 1e10]}, {"$float": "nan"}, "[" * 100000]


def _paths(doc):
    stack, out = [(doc, ())], []
    while stack:
        v, p = stack.pop()
        out.append(p)
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) \
            else ()
        stack.extend((w, p + (k,)) for k, w in items)
    return [p for p in out if p]


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _mutate(doc, rng):
    path = rng.choice(_paths(doc))
    parent, key, r = _at(doc, path[:-1]), path[-1], rng.random()
    if r < 0.6:
        parent[key] = copy.deepcopy(rng.choice(ODD))
    elif r < 0.75:
        del parent[key]
    elif r < 0.85 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = rng.choice([parent[key] + 1, parent[key] - 1, parent[key] * HUGE])


@pytest.fixture(scope="module")
def hostile_bases(tmp_path_factory):
    """Files with loops (scan, while, cond, derivative loops), custom rules, vectorize,
    batch norm's state and an LSTM."""
    tmp = tmp_path_factory.mktemp("bases")
    cases = [build_case(s, max_steps=6) for s in (31, 133, 27, 200, 411)]
    cases += [nn_case("lstm", "float32"), nn_case("batch_norm", "float64")]
    return [_members(fg.save_graph(tmp / f"{k}.fg", c.graph)) for k, c in enumerate(cases)]


def test_mutated_files_are_refused_typed_and_fast(hostile_bases, tmp_path):
    rng = random.Random(20)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(N_MUTANTS):
        members = rng.choice(hostile_bases)
        doc = json.loads(members["graph.json"])
        for _ in range(rng.randint(1, 2)):
            _mutate(doc, rng)
        path = _write(tmp_path / "m.fg", members, raw=json.dumps(doc))
        start = time.perf_counter()
        try:
            fg.load_graph(path)
            outcomes["loaded"] += 1
        except fg.GraphFileError:
            outcomes["refused"] += 1
        except Exception as e:      # noqa: BLE001
            pytest.fail(f"mutant {i}: {type(e).__name__}: {e}")
        assert time.perf_counter() - start < 1.0, f"mutant {i} took too long"
    assert outcomes["refused"] > N_MUTANTS * 0.8, outcomes


def test_truncated_and_flipped_files_are_refused_or_load(hostile_bases, tmp_path):
    rng = random.Random(21)
    raw = _write(tmp_path / "base.fg", hostile_bases[0]).read_bytes()
    for i in range(100):
        data = bytearray(raw[:rng.randrange(len(raw))] if i % 2 else raw)
        if not i % 2:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        (tmp_path / "m.fg").write_bytes(bytes(data))
        try:
            fg.load_graph(tmp_path / "m.fg")
        except fg.GraphFileError:
            pass


# -- ONNX import ----------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")


def _onnx_model(tmp_path):
    """A cond on a fed predicate (an If whose branches hold Constant tensors) times a
    variable (an initializer)."""
    case = build_case(21)
    with case.graph:
        out = case.outs[0] * fg.variable(np.full((2, 3), 0.5), name="w")
    path = tmp_path / "base.onnx"
    fg.export_onnx([out], path)
    return onnx.load(path)


def _import(model, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    start = time.perf_counter()
    try:
        fg.import_onnx(path)
    finally:
        assert time.perf_counter() - start < 1.0
    pytest.fail("imported")


def _tensor(model, where):
    """The initializer, or the first tensor attribute of a node in a subgraph."""
    if where == "initializer":
        return model.graph.initializer[0]
    stack = [g for n in model.graph.node for a in n.attribute
             for g in ([a.g] if a.HasField("g") else [])]
    while stack:
        graph = stack.pop()
        for n in graph.node:
            for a in n.attribute:
                if a.HasField("t"):
                    return a.t
                stack.extend([a.g] if a.HasField("g") else [])
    raise AssertionError("no tensor in a subgraph")


@pytest.mark.parametrize("where", ["initializer", "subgraph"])
@pytest.mark.parametrize("edit", ["huge", "passwd", "dotdot"])
def test_onnx_tensors_that_ask_for_too_much_or_for_other_files_are_refused(tmp_path, edit,
                                                                           where):
    model = _onnx_model(tmp_path)
    fg.import_onnx(tmp_path / "base.onnx")       # as exported: it imports
    t = _tensor(model, where)
    if edit == "huge":
        t.dims[:] = [HUGE]
    else:
        t.data_location = onnx.TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", ("/etc/passwd" if edit == "passwd"
                                              else "../../etc/passwd")
    with pytest.raises(fg.GraphFileError):
        _import(model, tmp_path)


def test_an_onnx_graph_with_a_cycle_is_refused(tmp_path):
    h = onnx.helper
    nodes = [h.make_node("Sin", ["b"], ["a"]), h.make_node("Cos", ["a"], ["b"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                [3])],
                         [h.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [3])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    with pytest.raises(fg.GraphFileError, match="computed by no earlier node"):
        _import(model, tmp_path)


def _nested_loops(depth):
    h, T = onnx.helper, onnx.TensorProto

    def body(level):
        nodes = [h.make_node("Neg", ["c_in"], [f"v{level}"])]
        out = f"v{level}"
        if level > 1:
            nodes.append(h.make_node("Loop", ["M", "", out], [f"w{level}"],
                                     body=body(level - 1)))
            out = f"w{level}"
        nodes += [h.make_node("Identity", ["cond_in"], ["cond_out"]),
                  h.make_node("Identity", [out], ["c_out"])]
        return h.make_graph(nodes, f"body{level}", [
            h.make_tensor_value_info("i", T.INT64, []),
            h.make_tensor_value_info("cond_in", T.BOOL, []),
            h.make_tensor_value_info("c_in", T.FLOAT, [3])], [
            h.make_tensor_value_info("cond_out", T.BOOL, []),
            h.make_tensor_value_info("c_out", T.FLOAT, [3])])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "", "x"], ["y"], body=body(depth))], "g",
        [h.make_tensor_value_info("x", T.FLOAT, [3])],
        [h.make_tensor_value_info("y", T.FLOAT, [3])], [h.make_tensor("M", T.INT64, [], [1])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_onnx_loops_nested_past_the_limit_are_refused(tmp_path):
    path = tmp_path / "ok.onnx"
    path.write_bytes(_nested_loops(16).SerializeToString())
    g = fg.import_onnx(path)
    x = np.array([1.0, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}), x)   # 16 negations
    with pytest.raises(fg.GraphFileError, match="more than 16 deep"):
        _import(_nested_loops(17), tmp_path)


@pytest.mark.parametrize("depth", [500, 900, 10 ** 5])
@pytest.mark.parametrize("form", ['[', '{"$tuple":[', '{"a":'])
def test_deeply_nested_attributes_are_refused_fast(tmp_path, depth, form):
    members, doc = _scan_file(tmp_path)
    _spec(doc)["bodies"][0]["nodes"][-1]["attrs"]["axis"] = "NEST"
    close = {"[": "]", '{"$tuple":[': "]}", '{"a":': "}"}[form]
    text = json.dumps(doc).replace('"NEST"', form * depth + "0" + close * depth)
    start = time.perf_counter()
    with pytest.raises(fg.GraphFileError):
        fg.load_graph(_write(tmp_path / "m.fg", members, raw=text))
    assert time.perf_counter() - start < 1.0
