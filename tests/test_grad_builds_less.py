"""grad builds fewer nodes (issue 19): no seed node that nothing uses, and a rule's
``cos(x)`` / ``sin(x)`` / ``exp(x)`` … is the forward pass's own node when the graph has
one just after x. Values, dtypes and every drawn adjoint are what they were with copies."""
import re

import numpy as np
import pytest

import flowgrad as fg
import flowgrad.graph as graph_mod
from test_viz_draw import _parse_dot, _text


def _chain(x, steps=3):
    y = x
    for _ in range(steps):
        y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
    return y


def _no_sharing(monkeypatch):
    monkeypatch.setattr(graph_mod.Graph, "unary_twin", lambda self, op, x: None)


def _duplicates(g):
    seen, dups = set(), 0
    for n in g.nodes:
        if n.op is not None and len(n.inputs) == 1 and not n.attrs:
            key = (n.op.name, n.inputs[0].id)
            dups += key in seen
            seen.add(key)
    return dups


def test_the_chains_gradient_reuses_the_forward_sin_and_cos():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = _chain(x)
        n_forward = len(g)
        dx = fg.grad(y, x)
    assert _duplicates(g) == 0
    # per step: g·1.0001, g·0.1, −(·), two products and their sum (the seed once)
    assert len(g) - n_forward == 1 + 6 * 3
    v, d = 0.3, 1.0
    for _ in range(3):
        v, d = np.sin(v) * 1.0001 + 0.1 * np.cos(v), d * (np.cos(v) * 1.0001 - 0.1 * np.sin(v))
    got_v, got_d = fg.run([y, dx], {x: 0.3})
    assert got_v == pytest.approx(v, rel=1e-14) and got_d == pytest.approx(d, rel=1e-13)


def test_grad_builds_no_unused_seed():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = x * x
        fg.grad(y, x)
    seeds = [n for n in g.nodes if n.name.startswith("seed")]
    assert len(seeds) == 1 and seeds[0].value == 1.0


def _traced(sharing, monkeypatch):
    if not sharing:
        _no_sharing(monkeypatch)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        w = fg.variable(np.array([0.4, -1.2, 2.0]), name="w")
        h = fg.exp(w * x) + fg.tanh(w) * fg.sin(x) + fg.sqrt(fg.abs(w) + 1.0) * fg.cos(x)
        loss = fg.sum(fg.log1p(fg.exp(h)) * fg.sigmoid(h))
        gw = fg.grad(loss, w)
        tr = fg.compile(loss).trace(x=np.array([0.5, -0.25, 1.5]))
        return tr, gw, x, w


@pytest.mark.parametrize("backward", [False, True])
def test_values_and_drawn_adjoints_are_unchanged(backward, monkeypatch):
    shared, gw_s, x_s, w_s = _traced(True, monkeypatch)
    grad_shared = fg.run(gw_s, {x_s: np.array([0.5, -0.25, 1.5])})
    copied, gw_c, x_c, w_c = _traced(False, monkeypatch)
    grad_copied = fg.run(gw_c, {x_c: np.array([0.5, -0.25, 1.5])})
    # (two sweeps here, grad's and the trace's: the second one's sign(w) is far from w)
    assert _duplicates(shared.graph) < _duplicates(copied.graph)
    np.testing.assert_array_equal(grad_shared, grad_copied)   # the same operations
    for a, b in zip(shared.nodes, copied.nodes):
        if a.kind != "constant":
            np.testing.assert_array_equal(shared.adjoint(a), copied.adjoint(b))
    # every forward node's drawn v̄ reads the same number
    drawn = []
    for tr in (shared, copied):
        nodes, _ = _parse_dot(fg.viz.draw(tr, backward=backward).source)
        drawn.append([re.findall(r"v̄ [^\n]*", _text(nodes[f"n{n.id}"]["label"]))
                      for n in tr.nodes])
    assert drawn[0] == drawn[1] and any(drawn[0])


def test_no_twin_across_a_scope_or_a_composite_group():
    """A node in another name scope is not shared (drawings cluster by scope)."""
    with fg.Graph() as g:
        x = fg.placeholder("x")
        with fg.name_scope("fwd"):
            y = fg.sin(x) * fg.cos(x)
        with fg.name_scope("bwd"):
            fg.grad(y, x)
    assert len([n for n in g.nodes if n.op is not None and n.op.name == "cos"]) == 2


# -- the adjoint marks: a side table of autodiff's, not a key in every node's attrs --------

def test_adjoint_marks_live_in_autodiffs_table():
    from flowgrad.autodiff import adjoint_mark
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        p, q = fg.sin(x) * 2.0, fg.exp(x)
        y = fg.sum(fg.concatenate([p, q]))     # concatenate: one vjp_all call, two terms
        n = len(g)
        fg.grad(y, x)
    assert not any("adjoint_of" in node.record for node in g.nodes)
    assert all(adjoint_mark(node) is None for node in g.nodes[:n])
    owners = {adjoint_mark(node) for node in g.nodes[n:]} - {None}
    # every mark says ∂y/∂(something on the path), and each concatenate term its own input
    assert {m[1] for m in owners} == {y.id}
    assert {(p.id, y.id), (q.id, y.id)} <= owners


def test_a_nested_sweeps_marks_win():
    """A rule that differentiates (hvp's second sweep runs over the first's nodes) marks
    its own nodes first; the enclosing call's run does not overwrite them."""
    from flowgrad.autodiff import AdjointMarks
    marks = AdjointMarks()
    marks.add(12, 15, 3, 9)        # recorded first: a nested sweep's nodes 12..14
    marks.add(10, 20, 4, 9)        # then the enclosing rule call's 10..19
    assert marks.mark(13) == (3, 9) and marks.mark(11) == (4, 9) and marks.mark(19) == (4, 9)
    assert marks.mark(20) is None and marks.mark(9) is None
    assert marks.covered(13, 0, 1) and not marks.covered(11, 0, 1)


def test_a_graphs_seed_lives_in_randoms_table_not_on_the_graph():
    from flowgrad import random as fgr
    g = fg.Graph()
    fgr.set_seed(7, g)
    assert fgr.get_seed(g) == 7 and not [k for k in vars(g) if "random" in k]
    first = [fgr.derived_seed(g, "random") for _ in range(2)]
    fgr.set_seed(7, g)                                   # a re-seed restarts the count
    assert [fgr.derived_seed(g, "random") for _ in range(2)] == first
    assert first[0] != first[1] and fgr.get_seed(fg.Graph()) is None


def test_an_empty_graph_passed_explicitly_is_that_graph():
    """An empty Graph is falsy (it has a length): ``graph or default_graph()`` used to
    seed, scope or hold a constant in the default graph instead of the one passed."""
    from flowgrad import random as fgr
    from flowgrad.ops import as_node
    g, other = fg.Graph(), fg.Graph()
    with other:
        fgr.set_seed(7, g)
        assert fgr.get_seed(g) == 7 and fgr.get_seed(other) is None
        with fg.name_scope("s", g):
            assert fg.placeholder("p").name == "p"       # other's node: not scoped "s/"
        c = as_node(2.0, g)
    assert c.graph is g and len(g) == 1 and len(other) == 1   # (other: the placeholder)
