"""The builder forms of ops/fast_rules.py build exactly what their ops' own reverse rules
build: every entry, over dtypes, shapes (0-d, broadcast), weak scalars and scopes, is
differentiated twice in twin graphs — once with the forms, once with them switched off —
and the two graphs must agree node by node (op, inputs, attributes, shape, dtype, name,
site). The gradients' values are checked against closed forms too."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import fast_rules

UNARY = {   # op -> (its derivative, closed form; an input domain that suits it)
    "sin": (np.cos, (-2.0, 2.0)),
    "cos": (lambda x: -np.sin(x), (-2.0, 2.0)),
    "exp": (np.exp, (-2.0, 2.0)),
    "log": (lambda x: 1 / x, (0.5, 3.0)),
    "tanh": (lambda x: 1 - np.tanh(x) ** 2, (-2.0, 2.0)),
    "sqrt": (lambda x: 0.5 / np.sqrt(x), (0.5, 3.0)),
    "log1p": (lambda x: 1 / (1 + x), (0.0, 3.0)),
    "neg": (lambda x: -np.ones_like(x), (-2.0, 2.0)),
}
BINARY = {  # op -> (∂/∂x, ∂/∂y) closed forms
    "sub": (lambda x, y: np.ones_like(x + y), lambda x, y: -np.ones_like(x + y)),
    "mul": (lambda x, y: y + 0 * x, lambda x, y: x + 0 * y),
    "div": (lambda x, y: 1 / y + 0 * x, lambda x, y: -x / y ** 2),
}


def test_every_fast_form_is_tested():
    names = {op.name for op in fast_rules.REVERSE}
    assert names == set(UNARY) | set(BINARY)


def _structure(g):
    return [(n.op.name if n.op else n.kind, n.input_ids, dict(n.attrs), n.shape, n.dtype,
             n.name, g.site_of(n.id)) for n in g.nodes]


def _twins(monkeypatch, build):
    """(graph, its gradients) built with the forms, and the same without them."""
    made = []
    for forms in (fast_rules.REVERSE, {}):
        monkeypatch.setattr(fast_rules, "REVERSE", forms)
        with fg.Graph() as g:
            made.append((g, build()))
    return made


def _check_same(made):
    (g1, _), (g2, _) = made
    s1, s2 = _structure(g1), _structure(g2)
    assert len(s1) == len(s2)
    for a, b in zip(s1, s2):
        assert a == b
        assert type(a[3]) is tuple and isinstance(a[4], np.dtype)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_unary_forms_build_the_rules_graph(monkeypatch, name, dtype, shape):
    deriv, (lo, hi) = UNARY[name]
    rng = np.random.default_rng(0)
    xv = rng.uniform(lo, hi, shape).astype(dtype)
    op = getattr(fg, name)

    def build():
        x = fg.placeholder("x", shape=shape, dtype=dtype)
        y = op(op(x)) if name in ("sin", "cos", "tanh", "neg") else op(x)
        return x, fg.grad(fg.sum(y * 1.5), x), fg.grad(fg.sum(fg.grad(fg.sum(op(x)), x)), x)

    made = _twins(monkeypatch, build)
    _check_same(made)
    g, (x, dx, _) = made[0]
    got = fg.run([dx], {x: xv})[0]
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    if name not in ("sin", "cos", "tanh", "neg"):
        want = 1.5 * deriv(xv.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((), ()), ((2, 3), (2, 3)), ((2, 3), (3,)), ((1,), (4,))])
@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float32", "float32"),
                                    ("float32", "float64")])
def test_binary_forms_build_the_rules_graph(monkeypatch, name, shapes, dtypes):
    rng = np.random.default_rng(1)
    xv = rng.uniform(0.5, 2.0, shapes[0]).astype(dtypes[0])
    yv = rng.uniform(0.5, 2.0, shapes[1]).astype(dtypes[1])
    op = getattr(fg, name)

    def build():
        x = fg.placeholder("x", shape=shapes[0], dtype=dtypes[0])
        y = fg.placeholder("y", shape=shapes[1], dtype=dtypes[1])
        z = fg.sum(op(x, y))
        return x, y, fg.grad(z, [x, y])

    made = _twins(monkeypatch, build)
    _check_same(made)
    g, (x, y, (dx, dy)) = made[0]
    gx, gy = fg.run([dx, dy], {x: xv, y: yv})
    fx, fy = BINARY[name]
    x64, y64 = xv.astype(np.float64), yv.astype(np.float64)
    shape = np.broadcast_shapes(shapes[0], shapes[1])
    want_x = np.broadcast_to(fx(x64, y64), shape).reshape((-1,) + shapes[0]).sum(0) \
        if shapes[0] != shape else fx(x64, y64)
    assert gx.dtype == np.dtype(dtypes[0]) and gy.dtype == np.dtype(dtypes[1])
    tol = 1e-6 if "float32" in dtypes else 1e-12
    np.testing.assert_allclose(gx, want_x, rtol=tol)
    want_y = fy(x64, y64)
    want_y = want_y.reshape((-1,) + shapes[1]).sum(0) if want_y.shape != shapes[1] \
        else want_y
    np.testing.assert_allclose(gy, want_y, rtol=tol)


@pytest.mark.parametrize("scalar", [2.0, 3, np.float32(2.0)])
def test_weak_and_typed_scalars_take_the_same_path(monkeypatch, scalar):
    def build():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        z = fg.sum(x * scalar - scalar / x + fg.exp(scalar - x) + fg.tanh(x) / scalar)
        return x, fg.grad(z, x)
    made = _twins(monkeypatch, build)
    _check_same(made)


def test_scopes_seeds_and_shared_forward_nodes(monkeypatch):
    """Inside a name scope, with a given seed, and a forward that already holds cos(x)
    (the sweep's sin rule shares it): the same graph either way."""
    def build():
        x = fg.placeholder("x", shape=(2,))
        with fg.name_scope("model"):
            y = fg.sin(x) * fg.cos(x) + fg.log(fg.exp(x) / x)
            with fg.name_scope("grads"):
                d = fg.grad(fg.sum(y), x)
                v = fg.vjp(y, x, np.array([1.0, -2.0]))
        return x, d, v
    made = _twins(monkeypatch, build)
    _check_same(made)
    g, (x, d, v) = made[0]
    xv = np.array([0.3, 1.7])
    got = fg.run([d], {x: xv})[0]
    want = np.cos(2 * xv) + 1 - 1 / xv
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_the_drawn_adjoints_are_the_rules(monkeypatch):
    """A gradient's nodes carry the same adjoint marks (whose v̄ each is part of) either way:
    an error at a derivative node names the same adjoint."""
    def build():
        x = fg.placeholder("x")
        return x, fg.grad(fg.tanh(fg.sin(x) * x), x)
    made = _twins(monkeypatch, build)
    _check_same(made)
    from flowgrad.autodiff import adjoint_mark
    (g1, _), (g2, _) = made
    assert [adjoint_mark(n) for n in g1.nodes] == [adjoint_mark(n) for n in g2.nodes]
    assert any(adjoint_mark(n) is not None for n in g1.nodes)
