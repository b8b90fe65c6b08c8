"""How the graph stores its nodes compactly (issue 12, lever 5) while Graph.nx stays an
ordinary DiGraph whose every attribute reads as before."""
import gc
import inspect

import networkx as nx
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.autodiff import adjoint_mark
from flowgrad.graph import gc_paused
from flowgrad.node import Node, NodeRecord


def test_op_nodes_read_their_default_keys_and_leaves_store_every_key():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,))
        c = fg.constant(2.0)
        y = fg.sin(x) * c
    d = g.nx.nodes[y.id]
    assert isinstance(d, NodeRecord) and d.node is y
    assert d["value"] is None and d["weak"] is False and d["group"] == ()
    assert "value" not in d and "weak" not in d           # defaults left out of op nodes
    assert g.nx.nodes[c.id]["value"] == 2.0 and g.nx.nodes[c.id]["weak"] is True
    assert g.nx.nodes[x.id]["weak"] is False and "value" in g.nx.nodes[x.id]
    with pytest.raises(KeyError, match="nope"):
        d["nope"]
    # a networkx copy is an ordinary DiGraph of plain dicts holding every listed key
    assert type(g.nx.copy().nodes[y.id]) is dict and g.nx.copy().nodes[c.id]["weak"] is True
    assert type(d.copy()) is dict and d.copy()["name"] == y.name

def test_every_attribute_reads_the_same_through_a_node_and_networkx():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        with fg.name_scope("layer"):
            line = inspect.currentframe().f_lineno + 1
            y = fg.sum(fg.tanh(x) * x, axis=0)
        dx = fg.grad(y, x)
    assert y.name == "layer/sum_3" and y.scope == ("layer",) and y.attrs == {"axis": (0,),
                                                                             "keepdims": False}
    assert y.where == f"{__file__}:{line}"
    assert g.nx.nodes[y.id]["where"] == (__file__, line)
    marks = {m for m in map(adjoint_mark, g.nodes) if m is not None}
    assert {(x.id, y.id)} <= marks and all(m[1] == y.id for m in marks) and dx.id > y.id
    assert nx.is_directed_acyclic_graph(g.nx)
    assert sorted(g.nx.predecessors(y.id)) == [y.inputs[0].id]
    assert g.nx.number_of_edges() == sum(len(set(n.record["inputs"])) for n in g.nodes)


def test_nodes_without_attrs_share_one_frozen_dict():
    with fg.Graph():
        x = fg.placeholder("x")
        a, b = fg.sin(x), fg.cos(x)
    assert a.attrs == {} and a.attrs is b.attrs
    with pytest.raises(TypeError, match="cannot be changed"):
        a.attrs["axis"] = 0
    with pytest.raises(TypeError):
        a.attrs.update(axis=0)
    assert b.attrs == {}


def test_shared_edge_dicts_are_never_grown_in_place():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        z = fg.placeholder("z")
        y = x * x          # one edge, argnums (0, 1): its own dict
        w = x * z          # x -> w is argument 0, z -> w argument 1: shared dicts
        v = z * x
    assert g.nx.edges[x.id, y.id]["argnums"] == (0, 1)
    assert g.nx.edges[x.id, w.id]["argnums"] == (0,)
    assert g.nx.edges[z.id, w.id]["argnums"] == (1,)
    assert g.nx.edges[x.id, v.id]["argnums"] == (1,)
    assert g.nx.edges[z.id, v.id]["argnums"] == (0,)
    assert float(fg.run(y, {x: 3.0})) == 9.0


def test_user_lines_are_shared_per_source_line():
    with fg.Graph():
        x = fg.placeholder("x")
        ys = [fg.sin(x) for _ in range(3)]
    assert ys[0].record["where"] is ys[1].record["where"] is ys[2].record["where"]


def test_gc_paused_restores_the_collector_even_on_error():
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with gc_paused():
            assert not gc.isenabled()
            raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()   # it was off before: it stays off
    finally:
        gc.enable()


def test_a_long_chain_differentiates_and_compiles_with_the_collector_back_on():
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(2000):
            y = fg.sin(y)
        dy = fg.grad(y, x)
        assert gc.isenabled()
        value, deriv = fg.compile([y, dy])(x=0.5)
        assert gc.isenabled()
    v, d = 0.5, 1.0
    for _ in range(2000):
        v, d = np.sin(v), d * np.cos(v)
    assert abs(float(value) - v) < 1e-13 and abs(float(deriv) - d) < 1e-12


def _reference_digraph(g):
    """The DiGraph the graph's nodes describe, built the ordinary networkx way."""
    ref = nx.DiGraph()
    for n in g.nodes:
        ref.add_node(n.id)
        for k, i in enumerate(n.record["inputs"]):
            argnums = ref.edges[i, n.id]["argnums"] + (k,) if ref.has_edge(i, n.id) else (k,)
            ref.add_edge(i, n.id, argnums=argnums)
    return ref


def test_the_adjacency_read_from_the_inputs_is_the_ordinary_digraph():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        z = fg.placeholder("z", shape=(3,))
        y = fg.sum(x * x + fg.sin(z) * x, axis=0)
        cat = fg.concatenate([x, z, x, fg.cos(x)], axis=0)
        dx, dz = fg.grad(y + fg.sum(cat), [x, z])
    ref = _reference_digraph(g)
    G = g.nx
    assert isinstance(G, nx.DiGraph)
    assert list(G.nodes) == list(ref.nodes)
    assert sorted(G.edges(data="argnums")) == sorted(ref.edges(data="argnums"))
    for n in ref.nodes:
        assert list(G.successors(n)) == list(ref.successors(n))
        assert list(G.predecessors(n)) == list(ref.predecessors(n))
        assert G.in_degree(n) == ref.in_degree(n) and G.out_degree(n) == ref.out_degree(n)
        assert dict(G.adj[n]) == dict(ref.adj[n]) and dict(G.pred[n]) == dict(ref.pred[n])
    assert G.number_of_edges() == ref.number_of_edges()
    assert nx.is_directed_acyclic_graph(G)
    assert list(nx.topological_sort(G)) == list(nx.topological_sort(ref))
    assert nx.descendants(G, z.id) == nx.descendants(ref, z.id)
    assert nx.ancestors(G, dx.id) == nx.ancestors(ref, dx.id)
    assert G.has_edge(x.id, cat.id) and not G.has_edge(cat.id, x.id)
    assert G.edges[x.id, cat.id]["argnums"] == (0, 2)
    assert nx.is_isomorphic(G, ref)
    # a copy is an ordinary DiGraph, mutable, with the same structure
    c = G.copy()
    assert sorted(c.edges(data="argnums")) == sorted(ref.edges(data="argnums"))
    c.add_edge(dz.id, x.id)
    assert not G.has_edge(dz.id, x.id)
    sub = G.subgraph([x.id, z.id, y.id, cat.id])
    assert sorted(sub.edges) == sorted(ref.subgraph([x.id, z.id, y.id, cat.id]).edges)


def test_successors_include_nodes_built_after_the_adjacency_was_first_read():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        a = fg.sin(x)
        assert list(g.nx.successors(x.id)) == [a.id]
        b, c = fg.cos(x), a * x
        assert list(g.nx.successors(x.id)) == [a.id, b.id, c.id]
        assert list(g.nx.successors(a.id)) == [c.id]
        assert list(g.nx.successors(c.id)) == []


def test_networkx_cannot_write_into_a_flowgrad_graph():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = fg.sin(x)
    with pytest.raises(TypeError):
        g.nx.add_edge(y.id, x.id)
    with pytest.raises(TypeError, match="read-only"):
        g.nx.add_node("extra")
    assert list(g.nx.successors(x.id)) == [y.id] and len(g.nx) == 2


def test_building_a_large_graph_freezes_the_collector_only_inside_its_with_block():
    from flowgrad import graph as graph_mod
    assert gc.get_freeze_count() == 0
    n = graph_mod._FREEZE_EVERY_MASK + 2
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = x
        for _ in range(n):
            y = fg.sin(y)
        assert gc.get_freeze_count() > 0 and gc.isenabled()
        dy = fg.grad(y, x)
    assert gc.get_freeze_count() == 0 and not graph_mod._FROZEN_BY
    assert len(g) > 2 * n and dy.graph is g
    # a cycle made (and dropped) while frozen is collected once the block has exited
    with fg.Graph():
        x = fg.placeholder("x")
        junk = [1]
        junk.append(junk)
        ref = __import__("weakref").ref(fg.Graph())   # graphs are cycles (handles <-> graph)
        y = x
        for _ in range(n):
            y = fg.sin(y)
        del junk
    gc.collect()
    assert ref() is None and gc.get_freeze_count() == 0


def test_objects_someone_else_froze_stay_frozen(monkeypatch):
    with fg.Graph():
        x = fg.placeholder("x")
    calls = []
    gc.freeze()
    try:
        monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
        monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
        with fg.Graph():
            y = fg.placeholder("x")
            for _ in range(70_000):
                y = fg.sin(y)
        assert calls == [] and gc.get_freeze_count() > 0
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_a_graph_built_outside_a_with_block_never_freezes():
    g = fg.Graph()
    x = g.add_node(None, (), {}, (), np.dtype("float64"), name="x", kind="placeholder")
    for k in range(70_000):
        x = g.add_node(fg.sin, (x,), {}, (), np.dtype("float64"))
    assert gc.get_freeze_count() == 0


def test_default_names_are_found_and_kept_unique_without_being_registered():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        a = fg.sin(x)                                  # sin_1, not in g._names
        assert a.name == "sin_1" and "sin_1" not in g._names
        assert g.by_name("sin_1") is a and g.name_id("sin_1") == a.id
        assert g.name_id("sin_01") is None and g.name_id("sin_١") is None
        # an explicit name equal to a default one is taken: it gets a suffix
        b = fg.constant(1.0, name="sin_1")
        assert b.name == "sin_1_1"
        with pytest.raises(ValueError, match="already has"):
            b.named("sin_1")
        with pytest.raises(fg.GraphError, match="already has a node named 'sin_1'"):
            fg.placeholder("sin_1")
        # a name that a future node would get by default reserves it
        c = fg.cos(x).named("cos_5")                 # ids 3 (cos) ... 5 still to come
        d = fg.exp(x)                                  # id 4
        e = fg.cos(x)                                  # id 5: cos_5 is taken
        assert (c.id, d.name, e.id, e.name) == (3, "exp_4", 5, "cos_5_1")
        assert g.by_name("cos_5") is c and g.by_name("cos_5_1") is e
        # renaming a default-named node frees its default name
        d.name = "renamed"
        assert g.name_id("exp_4") is None and g.by_name("renamed") is d
        f = fg.exp(x).named("exp_4")
        assert f.name == "exp_4" and g.by_name("exp_4") is f
        with fg.name_scope("s"):
            h = fg.tanh(x)
        assert h.name == f"s/tanh_{h.id}" and g.by_name(h.name) is h
        names = [n.name for n in g.nodes]
        assert len(set(names)) == len(names)
        with pytest.raises(fg.FeedError, match="only placeholders and variables can be fed"):
            fg.run(a, {"sin_1": 1.0})
        assert g.nx.nodes[a.id]["name"] == "sin_1"
        assert dict(g.nx.nodes(data="name"))[a.id] == "sin_1"


def test_threads_building_and_reading_the_adjacency_agree_with_the_inputs():
    import threading
    with fg.Graph() as g:
        x = fg.placeholder("x")
    errors = []

    def build(k):
        try:
            with g:
                y = x
                for i in range(2000):
                    y = fg.sin(y) * x if i % 3 else fg.cos(y)
                    if i % 97 == 0:
                        list(g.nx.successors(x.id))   # the index, brought up to date midway
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ref = _reference_digraph(g)
    assert sorted(g.nx.edges(data="argnums")) == sorted(ref.edges(data="argnums"))
    assert all(list(g.nx.successors(n)) == list(ref.successors(n)) for n in ref.nodes)
    names = [n.name for n in g.nodes]
    assert len(set(names)) == len(names) and all(g.by_name(m) is n for m, n in zip(names, g.nodes))


def test_each_node_keeps_its_own_line_when_threads_interleave_their_building():
    """issue 19: the graph keeps the user's line once a run of nodes built from one line;
    threads building from different lines at once interleave their runs, and every node
    still reads the line that built it."""
    import threading
    with fg.Graph() as g:
        x = fg.placeholder("x")
    lines, built = {}, {}
    start = threading.Barrier(3)

    def build(k):
        with g:
            start.wait()
            mine = []
            for _ in range(3000):
                if k == 0:
                    mine.append(fg.sin(x)); lines[0] = inspect.currentframe().f_lineno
                elif k == 1:
                    mine.append(fg.cos(x)); lines[1] = inspect.currentframe().f_lineno
                else:
                    mine.append(fg.exp(x)); lines[2] = inspect.currentframe().f_lineno
            built[k] = mine

    threads = [threading.Thread(target=build, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, op in enumerate((fg.sin, fg.cos, fg.exp)):
        assert len(built[k]) == 3000 and all(n.op is op for n in built[k])
        assert {n.site for n in built[k]} == {(__file__, lines[k])}
        assert {n.where for n in built[k]} == {f"{__file__}:{lines[k]}"}
    assert x.site is not None and g.site_of(x.id) == x.site
    with pytest.raises(IndexError):
        g.site_of(len(g))


def test_save_and_load_round_trip_every_stored_attribute(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2, 3))
        c = fg.constant(2.0)
        a = fg.sin(x) * c                                  # default names
        with fg.name_scope("blk"):
            b = fg.sum(fg.tanh(a), axis=1)                 # scoped, with attrs
        fg.constant(1.0, name=f"exp_{len(g) + 1}")         # reserves a future default name
        e = fg.exp(b)
        assert e.name == f"exp_{e.id}_1"
        s = fg.sum(e).named("out")
        fg.grad(s, x)
    path = fg.save_graph(tmp_path / "g.fg", g)
    g2 = fg.load_graph(path)
    assert len(g2) == len(g)
    for n, m in zip(g.nodes, g2.nodes):
        assert (m.name, m.kind, m.shape, m.dtype, m.scope, m.attrs) == \
            (n.name, n.kind, n.shape, n.dtype, n.scope, n.attrs)
        assert (m.op is None and n.op is None) or m.op.name == n.op.name
        assert g2.by_name(m.name) is m and g.by_name(n.name) is n
    assert sorted(g2.nx.edges(data="argnums")) == sorted(g.nx.edges(data="argnums"))
    feed = {"x": np.arange(6.0).reshape(2, 3)}
    np.testing.assert_array_equal(fg.run(g2.by_name("out"), feed), fg.run(s, feed))


def test_a_copied_adjacency_is_an_ordinary_dict_of_dicts():
    # (copy.deepcopy(g.nx) also copies each node's op, which may hold a module once it
    # has run: that part is not the adjacency's to decide)
    import copy
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = fg.sin(x) * x
    succ = copy.deepcopy(g.nx._succ)
    assert type(succ) is dict and succ == {n: dict(g.nx._succ[n]) for n in g.nx}
    assert succ[x.id] == {y.inputs[0].id: {"argnums": (0,)}, y.id: {"argnums": (1,)}}
    G = nx.DiGraph()
    G._succ = G._adj = succ
    G._pred = copy.deepcopy(g.nx._pred)
    G._node = {n: dict(d) for n, d in g.nx.nodes.items()}
    G.add_edge(y.id, x.id)
    assert G.has_edge(y.id, x.id) and not g.nx.has_edge(y.id, x.id)


def test_a_default_name_is_made_on_read_and_reads_as_stored_everywhere():
    """issue 19: an op node's default name is not stored (~60 bytes a node) but reads the
    same through d[...], in, get, iteration, items, len, copies and networkx."""
    import copy
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = fg.sin(x)
        z = fg.cos(y)
    d = g.nx.nodes[y.id]
    assert y.more is None                                  # not stored ...
    assert d["name"] == y.name == "sin_1" and "name" in d and d.get("name") == "sin_1"
    assert list(d) == list(d.keys()) and list(d)[:3] == ["op", "attrs", "name"]
    assert dict(d)["name"] == "sin_1" and len(d) == len(dict(d)) == 9
    assert dict(g.nx.nodes(data="name")) == {0: "x", 1: "sin_1", 2: "cos_2"}
    assert nx.get_node_attributes(g.nx, "name")[2] == "cos_2"
    assert g.nx.copy().nodes[1]["name"] == "sin_1" and copy.copy(d)["name"] == "sin_1"
    assert d == dict(d) and d.copy() == d
    assert g.by_name("cos_2") is z
    z.name = "zed"                                         # ... until one is assigned
    assert z.more == {"name": "zed"} and g.nx.nodes[2]["name"] == "zed"
    assert g.by_name("zed") is z and len(g.nx.nodes[2]) == 9
    with pytest.raises(KeyError):
        g.by_name("cos_2")


def test_an_op_node_is_one_small_object_and_reads_as_the_full_record():
    """issue 19: a node is one typed object (its handle *is* its record: ~100 bytes, where
    a handle plus an attribute dict were ~250), and networkx reads it as the nine-key
    record it stands for; the fields fixed at build time cannot be written through it."""
    import copy
    import sys
    from flowgrad.graph import NO_ATTRS
    order = ["op", "attrs", "name", "shape", "dtype", "inputs", "kind", "scope", "where"]
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        y = fg.sin(x)
        with fg.name_scope("layer"):
            s = fg.sum(y, axis=0)
    assert type(y) is Node and not hasattr(y, "__dict__") and y.more is None
    assert sys.getsizeof(y) <= 112 and g.handles[y.id] is y
    d = g.nx.nodes[y.id]
    assert d["kind"] == y.kind == "op" and d["attrs"] is NO_ATTRS and d["scope"] == ()
    assert d.get("kind") == "op" and d.get("scope") == () and d.get("attrs") is NO_ATTRS
    assert "kind" in d and "attrs" in d and "scope" in d and "value" not in d
    assert list(d) == order and len(d) == 9 and list(dict(d)) == order
    assert dict(d) == {"op": y.op, "attrs": {}, "name": "sin_1", "shape": (3,),
                       "dtype": np.dtype(float), "inputs": (x.id,), "kind": "op",
                       "scope": (), "where": y.site}
    assert d == dict(d) and d.copy() == d and copy.copy(d)["kind"] == "op"
    assert g.nx.copy().nodes[y.id]["kind"] == "op" and list(g.nx.copy().nodes[y.id]) == order
    for key in ("op", "shape", "dtype", "inputs", "attrs", "where"):
        with pytest.raises(TypeError, match="fixed"):
            d[key] = None
    d["name"] = "sine"                                     # a name: checked, registered
    assert y.name == "sine" and g.by_name("sine") is y
    with pytest.raises(ValueError, match="already has a node named 'x'"):
        d["name"] = "x"
    d["colour"] = "red"                                    # a user's own key: kept
    assert y.more == {"name": "sine", "colour": "red"} and list(d) == order + ["colour"]
    del d["colour"]
    assert "colour" not in d
    # a scope and a registered name are kept with the node, and read in the same order
    e = g.nx.nodes[s.id]
    assert s.more == {"scope": ("layer",), "name": "layer/sum_2"}
    assert list(e) == order and e["scope"] == ("layer",) and e["attrs"]["axis"] == (0,)
    assert [k for k, _ in g.nx.nodes(data="kind")] == [0, 1, 2]
    assert dict(g.nx.nodes(data="kind")) == {0: "placeholder", 1: "op", 2: "op"}
    # a leaf keeps its kind, value and weak flag, listed after the nine
    assert list(g.nx.nodes[x.id]) == order + ["value", "weak"]
    assert 2 in g.nx and 3 not in g.nx and -1 not in g.nx and "x" not in g.nx
    # ids are looked up as a dict keyed 0 … n-1 would match them
    assert 2.0 in g.nx and np.int64(2) in g.nx and 2.5 not in g.nx and "2" not in g.nx
    assert g.nx.nodes[np.int64(2)]["name"] == s.name and float("nan") not in g.nx
