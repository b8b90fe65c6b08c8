"""fg.composite: the nodes a function builds carry its group; drawings show one box per
group (its output's value and v̄, edges from its inputs) and open it on request."""
import inspect
import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.composite import groups
from test_viz_draw import _parse_dot, _text


@fg.composite
def sq_err(y, t):
    """½ (y − t)²."""
    return 0.5 * (y - t) ** 2


def test_groups_are_recorded_named_per_call_and_nest():
    with fg.Graph() as g:
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w = fg.variable(0.8, name="w")

        @fg.composite
        def model(x):
            with fg.composite("affine"):
                z = w * x + 1.0
            return fg.sigmoid(z)

        y = model(x)
        a = sq_err(y, t)
        b = sq_err(a, t)
    assert sq_err.__name__ == "sq_err" and sq_err.__doc__ == "½ (y − t)²."
    assert inspect.isfunction(sq_err) and str(inspect.signature(sq_err)) == "(y, t)"
    assert x.group == () and w.group == ()
    assert y.group == ("model",) and y.inputs[0].group == ("model", "affine")
    assert a.group == ("sq_err",) and b.group == ("sq_err_1",)
    assert {n.group for n in g.nodes if n.group} == {
        ("model",), ("model", "affine"), ("sq_err",), ("sq_err_1",)}
    records = groups(g)
    assert records["sq_err_1"] == {"label": "sq_err", "args": (a.id, t.id)}
    # the numbers are those of the plain expression
    tr = fg.compile(b).trace(x=1.5, t=1.0)
    y0 = 1 / (1 + np.exp(-(0.8 * 1.5 + 1)))
    a0 = 0.5 * (y0 - 1) ** 2
    assert float(tr.value(b)) == pytest.approx(0.5 * (a0 - 1) ** 2, rel=1e-12)


def test_decorator_with_a_name_and_on_methods():
    class Layer:
        @fg.composite("dense")
        def __call__(self, x):
            return fg.tanh(2.0 * x)

    with fg.Graph():
        x = fg.placeholder("x")
        h = Layer()(x)
        h2 = Layer()(h)
    assert h.group == ("dense",) and h2.group == ("dense_1",)
    with pytest.raises(ValueError):
        fg.composite("")


def _trace():
    with fg.Graph():
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w = fg.variable(0.8, name="w")
        y = fg.sigmoid(w * x).named("y")
        loss = sq_err(y, t).named("loss")
        tr = fg.compile(loss).trace(x=1.5, t=1.0)
    return tr, x, t, w, y, loss


def test_a_group_is_one_box_with_its_value_and_adjoint():
    tr, x, t, w, y, loss = _trace()
    nodes, edges = _parse_dot(fg.viz.draw(tr, constants=False).source)
    y0 = 1 / (1 + np.exp(-1.2))
    box = _text(nodes["g_sq_err"]["label"])
    assert box.split("\n")[0].startswith("sq_err") and "loss" in box.split("\n")[0]
    assert f"{0.5 * (y0 - 1) ** 2:.4g}" in box and "v̄ 1" in box
    # the group's inner nodes are not drawn, its inputs point at the box
    inner = [n for n in tr.nodes if n.group and n.kind != "constant"]
    assert len(inner) == 3 and not any(f"n{n.id}" in nodes for n in inner)
    assert {(a, b) for a, b, _ in edges if b == "g_sq_err"} == {
        (f"n{y.id}", "g_sq_err"), (f"n{t.id}", "g_sq_err")}
    assert set(nodes) == {f"n{k.id}" for k in (x, t, w, y)} | {f"n{y.inputs[0].id}",
                                                               "g_sq_err"}


@pytest.mark.parametrize("expand", [True, ["sq_err"]])
def test_expand_draws_the_inner_nodes(expand):
    tr, x, t, w, y, loss = _trace()
    src = fg.viz.draw(tr, expand=expand).source
    nodes, _ = _parse_dot(src)
    assert "g_sq_err" not in nodes
    # the opened group is a dotted frame labelled with the function's name
    frame = src[src.index('subgraph cluster_sq_err'):]
    assert "label=sq_err" in frame.split("\n")[1] and "dotted" in frame.split("\n")[1]
    inner = [n for n in tr.nodes if n.group]
    assert all(f"n{n.id}" in nodes for n in inner)
    # the inner nodes show their own adjoints: v̄ of (y − t) is y − t
    sub = next(n for n in inner if n.op is not None and n.op.name == "sub")
    y0 = 1 / (1 + np.exp(-1.2))
    assert f"v̄ {y0 - 1:.4g}" in _text(nodes[f"n{sub.id}"]["label"])


def test_model_composites_are_boxes_until_they_are_primitives():
    with fg.Graph():
        X = fg.placeholder("X", shape=(3, 2))
        w = fg.variable(np.array([0.5, -1.0]), name="w")
        out = fg.linear(X, w)
        tr = fg.compile(fg.sum(out)).trace(X=np.ones((3, 2)))
    nodes, _ = _parse_dot(fg.viz.draw(tr).source)
    boxes = [k for k in nodes if k.startswith("g_")]
    if out.op is not None and out.op.name == "linear":      # a primitive: one op node
        assert not boxes and f"n{out.id}" in nodes
    else:                                                   # a composite: one box
        assert boxes == ["g_linear"]
        assert "[-0.5 -0.5 -0.5]" in _text(nodes["g_linear"]["label"])
    assert re.search(r"\blinear\b", fg.viz.draw(tr).source)


def test_edges_into_a_box_carry_its_local_derivative_or_rule():
    tr, x, t, w, y, loss = _trace()
    _, edges = _parse_dot(fg.viz.draw(tr).source)
    lab = {(a, b): e.get("label") for a, b, e in edges}
    y0 = 1 / (1 + np.exp(-1.2))
    # ∂sq_err/∂y = y − t and ∂sq_err/∂t = −(y − t), from the members' summands
    assert lab[(f"n{y.id}", "g_sq_err")] == f"∂ {y0 - 1:.4g}"
    assert lab[(f"n{t.id}", "g_sq_err")] == f"∂ {1 - y0:.4g}"
    # arrays: the rule of a model composite, in the names the boxes show
    with fg.Graph():
        X = fg.placeholder("X", shape=(3, 2))
        T = fg.placeholder("T", shape=(3,))
        wv = fg.variable(np.array([0.5, -1.0]), name="w")
        p = fg.linear(X, wv).named("p")
        tr = fg.compile(fg.mse(p, T)).trace(X=np.ones((3, 2)), T=np.zeros(3))
    _, edges = _parse_dot(fg.viz.draw(tr).source)
    lab = {(a, b): e.get("label") for a, b, e in edges}
    if p.op is not None and p.op.name == "add":              # composites on this branch
        assert lab[(f"n{T.id}", "g_mse")] == "T̄ −= v̄ · 2(linear − T) / n"
        assert lab[(f"n{wv.id}", "g_linear")] == "w̄ += Xᵀ v̄"
        assert lab[("g_linear", "g_mse")] is None             # box to box: no one rule


def test_a_composite_of_one_op_is_drawn_as_that_op():
    with fg.Graph():
        x = fg.placeholder("x")

        tanh = fg.composite(fg.tanh)                 # a primitive, decorated: one op node

        @fg.composite
        def squash(v):                              # one op node of another name: a box
            return fg.tanh(v)

        y = tanh(x)
        tr = fg.compile(squash(y) * 2.0).trace(x=0.5)
    nodes, _ = _parse_dot(fg.viz.draw(tr).source)
    assert y.group == ("tanh",) and "g_tanh" not in nodes and f"n{y.id}" in nodes
    assert "g_squash" in nodes
    assert [f["cur"] for f in fg.viz.walkthrough(tr).frames if f["phase"] == "fw"][1] == [
        f"n{y.id}"]
