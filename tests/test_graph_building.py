"""Building graphs: leaves, operators, shape/dtype inference and the errors of API.md §1."""
import re

import numpy as np
import pytest

import flowgrad as fg


def test_nodes_live_in_the_networkx_graph_with_ordered_inputs():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        y = x * x
    assert y.inputs == (x, x)
    assert g.nx.nodes[y.id]["op"].name == "mul"
    assert g.nx.nodes[y.id]["inputs"] == (x.id, x.id)
    assert g.nx.edges[x.id, y.id]["argnums"] == (0, 1)
    assert fg.run(y, {x: np.array([1.0, 2.0, 3.0])}).tolist() == [1.0, 4.0, 9.0]


def test_default_graph_outside_any_with_block():
    x = fg.placeholder("x")
    assert x.graph is fg.default_graph()
    with fg.Graph() as g:
        y = fg.placeholder("y")
        assert fg.default_graph() is g
    assert y.graph is g and x.graph is not g


def test_operators_and_python_scalars_and_numpy_arrays():
    x = fg.placeholder("x", shape=(2,))
    a = np.array([10.0, 20.0])
    exprs = [x + 1, 1 + x, x - 1, 1 - x, 2 * x, x * 2, x / 2, 2 / x, x ** 2, 2 ** x, -x,
             a * x, a + x, x @ a, a @ x]
    X = np.array([1.0, 2.0])
    want = [X + 1, 1 + X, X - 1, 1 - X, 2 * X, X * 2, X / 2, 2 / X, X ** 2, 2 ** X, -X,
            a * X, a + X, X @ a, a @ X]
    for e, v in zip(exprs, want):
        np.testing.assert_allclose(fg.run(e, {x: X}), v, rtol=1e-15)


def test_shape_and_dtype_inference():
    x = fg.placeholder("x", shape=(None, 3))
    w = fg.variable(np.zeros(3, dtype=np.float32))
    z = x @ w
    assert z.shape == (None,)
    assert (x + w).shape == (None, 3)
    assert fg.sum(x, axis=1, keepdims=True).shape == (None, 1)
    assert x.T.shape == (3, None)
    assert (w * 0.1).dtype == np.float32        # Python scalars are weakly typed
    assert (w * np.float64(0.1)).dtype == np.float64
    assert (w ** 2).dtype == np.float32
    i = fg.placeholder("i", shape=(3,), dtype="int64")
    assert (i + 1).dtype == np.int64
    assert fg.exp(i).dtype == np.float64
    assert (i / 2).dtype == np.float64


def test_shape_error_names_op_operands_shapes_and_user_line():
    a = fg.placeholder("a", shape=(2, 3))
    b = fg.placeholder("b", shape=(4,))
    with pytest.raises(fg.ShapeError) as err:
        a + b  # this line is named in the message
    msg = str(err.value)
    assert "add" in msg and "a (2, 3)" in msg and "b (4,)" in msg
    assert re.search(r"test_graph_building\.py:\d+", msg)
    with pytest.raises(fg.ShapeError, match=r"matmul: inner dimensions differ \(3 vs 4\)"):
        a @ b
    with pytest.raises(fg.ShapeError, match="reshape"):
        fg.reshape(a, (5,))
    with pytest.raises(fg.ShapeError, match="axis 2 is out of range"):
        fg.sum(a, axis=2)


def test_mixing_graphs_is_an_error():
    with fg.Graph():
        x = fg.placeholder("x")
    with fg.Graph():
        y = fg.placeholder("y")
        with pytest.raises(fg.GraphError, match="two graphs"):
            x + y


def test_names_are_unique_and_settable():
    with fg.Graph() as g:
        a = fg.placeholder("x")
        with pytest.raises(fg.GraphError, match="already has a node named 'x'"):
            fg.placeholder("x")  # fed by name: never silently renamed (issue 10)
        b = fg.variable(1.0, name="x")  # other nodes take the first free suffix
        assert (a.name, b.name) == ("x", "x_1")
        c = (a + b).named("total")
        assert g.by_name("total") is c
        with pytest.raises(ValueError, match="already has"):
            c.named("x")
        with fg.name_scope("layer1"):
            h = fg.tanh(a)
        assert h.name.startswith("layer1/") and h.scope == ("layer1",)


def test_nodes_are_not_iterable_and_have_no_truth_value():
    x = fg.placeholder("x", shape=(3,))
    with pytest.raises(TypeError, match="not iterable"):
        list(x)
    with pytest.raises(TypeError, match="truth value"):
        bool(x)


def test_variables_and_constants_hold_values():
    w = fg.variable([1, 2, 3], name="w")
    assert w.dtype == np.float64 and w.value.tolist() == [1.0, 2.0, 3.0]
    w.value = np.ones(3)
    assert fg.run(w, {}).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(fg.FeedError, match="shape"):
        w.value = np.ones(4)
    c = fg.constant(np.eye(2))
    with pytest.raises(AttributeError, match="only variables"):
        c.value = np.zeros((2, 2))
    x = fg.placeholder("x")
    with pytest.raises(AttributeError, match="fg.run"):
        x.value
