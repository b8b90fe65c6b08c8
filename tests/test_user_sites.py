"""Every node records the user's file:line (the innermost frame outside flowgrad) exactly
as the full walk from the node's creation finds it, however the node was built: straight
from user code, through operators, in library helpers (layers, composites), in the
derivative sweeps (whose user site is found once above the sweep), or by a user-defined
op's rule (a frame below the sweep, in the user's file)."""
import sys

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.graph import Graph
from flowgrad.ops.base import Op, _inside, _STOPS


def _full_walk(frame):
    """The site as the original implementation found it: every frame walked."""
    while frame is not None:
        if not _inside(frame.f_code.co_filename):
            return (frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None


@pytest.fixture
def checked_sites(monkeypatch):
    """Graph.add_node, wrapped to compare each recorded site with the full walk."""
    seen = []
    original = Graph.add_node

    def add_node(self, *args, **kwargs):
        ref = _full_walk(sys._getframe(1))   # from add_node's caller, as before
        kwargs.setdefault("where", ref)       # (leaves: the unchanged path)
        assert kwargs["where"] == ref, (kwargs["where"], ref)
        seen.append(ref)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Graph, "add_node", add_node)
    return seen


# a user-defined op: its rules live in this file, below the sweep's frame
def _twice_rule(g, ans, x):
    return g * 2.0          # built in the user's rule: this line is the site


twice = Op("test_user_sites.twice", lambda xp, x: 2.0 * x, lambda x: (x.shape, x.dtype),
           vjp=(_twice_rule,), elementwise=True)


def test_sites_match_the_full_walk_everywhere(checked_sites):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(4, 3))
        y = fg.sin(x) * x + 1.0
        net = fg.nn.MLP([5, 1], activation="tanh", seed=0)
        out = fg.sum(net(x))

        @fg.composite
        def block(a):
            return fg.tanh(a) * a

        z = fg.sum(block(y)) + out + fg.sum(twice(y))
        grads = fg.grad(z, [x, *net.variables])
        v = fg.placeholder("v", shape=(4, 3))
        fg.jvp(z, x, v)
        fg.hvp(z, x, v)
    assert len(checked_sites) == len(g) and not _STOPS
    fname = __file__
    rule_line = _twice_rule.__code__.co_firstlineno + 1
    # the user-op rule's nodes carry the rule's own line, the others grad's call line
    sites = {n.where for n in g.nodes if n.id > grads[0].id - 1}
    assert f"{fname}:{rule_line}" in {n.where for n in g.nodes}
    assert all(s.startswith(fname + ":") for s in sites)


def test_a_shape_error_still_names_the_users_line():
    with fg.Graph():
        a = fg.placeholder("a", shape=(2,))
        b = fg.placeholder("b", shape=(3,))
        line = sys._getframe().f_lineno + 2
        with pytest.raises(fg.ShapeError, match=rf"at {__file__}:{line}"):
            a + b


def test_the_sweep_stops_are_removed_even_when_a_rule_fails():
    bad = Op("test_user_sites.bad", lambda xp, x: x, lambda x: (x.shape, x.dtype),
             vjp=(lambda g, ans, x: 1 / 0,))
    with fg.Graph():
        x = fg.placeholder("x")
        with pytest.raises(ZeroDivisionError):
            fg.grad(bad(x), x)
    assert not _STOPS


def test_nodes_built_by_a_sweep_name_the_grad_call():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = fg.sin(x) * fg.exp(x)
        first = len(g)
        line = sys._getframe().f_lineno + 1
        fg.grad(y, x)
    assert {n.where for n in g.nodes[first:]} == {f"{__file__}:{line}"}
    np.testing.assert_allclose(float(fg.run(fg.grad(y, x), {x: 0.3})),
                               np.exp(0.3) * (np.cos(0.3) + np.sin(0.3)))


def test_sites_cached_per_call_site_stay_exact_across_code_objects(checked_sites):
    """issue 19: a site is looked up by (code, instruction offset), not by reading
    f_lineno (a scan of the line table: µs in a long function). Code objects made and
    dropped one after another (notebook cells) may share an address and the same
    offset: each node still gets its own cell's line, as the full walk finds it."""
    ns = {"fg": fg}
    with fg.Graph() as g:
        ns["x"] = fg.placeholder("x")
        for k in range(40):
            exec(compile("\n" * k + "y = fg.sin(x)", "<cell>", "exec"), ns)
        for _ in range(3):
            exec(compile("y = fg.cos(x)\n\nz = fg.exp(x)", "<cell>", "exec"), ns)
    wheres = [n.where for n in g.nodes[1:]]
    assert wheres == [f"<cell>:{k + 1}" for k in range(40)] + ["<cell>:1", "<cell>:3"] * 3
    assert len(checked_sites) == len(g)


# -- issue 19: a sweep's primitive rules take its site without a walk (ops.base.rule_site) --

@fg.custom_vjp
def _scaled(x):
    return x * 3.0


@_scaled.defvjp
def _scaled_rule(g, ans, x):
    inner = fg.grad(fg.sum(fg.sin(x)), x)     # a sweep inside the user's rule
    return (g * 3.0 + inner * 0.0,)           # built in the user's rule: this line


def test_the_sweep_site_shortcut_ends_where_user_code_begins(checked_sites):
    """Nodes built by a custom rule (user code called by a sweep), by a sweep nested in
    that rule, and by a loop's derivative, get the sites the full walk finds: the
    shortcut is lifted for every rule that is not a primitive op's."""
    from flowgrad.ops.base import plain_rule
    from flowgrad.ops.elementwise import sin
    assert plain_rule(sin.vjp_rules[0]) and not plain_rule(_scaled_rule)
    assert not plain_rule(_twice_rule) and not plain_rule(len)
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))

        def step(c, xt):
            return fg.tanh(c * xt) + c, fg.sin(c)

        c, ys = fg.scan(step, x, xs=fg.stack([x, x * 2.0]))
        z = fg.sum(_scaled(fg.sin(x)) * fg.exp(x)) + fg.sum(c) + fg.sum(ys)
        first = len(g)
        line = sys._getframe().f_lineno + 1
        gx = fg.grad(z, x)
    # (every node checked, the loop bodies' graphs' too)
    assert len(checked_sites) > len(g) and not _STOPS
    assert fg.graph.thread_state.__dict__.get("rule_site") is None
    inner_line = _scaled_rule.__code__.co_firstlineno + 2    # (the decorator's line first)
    wheres = {n.where for n in g.nodes[first:]}
    assert {f"{__file__}:{line}", f"{__file__}:{inner_line}",
            f"{__file__}:{inner_line + 1}"} <= wheres
    X = np.array([0.3, -0.5, 1.1])
    fd = [(fg.run(z, {x: X + e}) - fg.run(z, {x: X - e})) / 2e-6
          for e in np.eye(3) * 1e-6]
    np.testing.assert_allclose(fg.run(gx, {x: X}), fd, rtol=1e-6)


def test_every_op_case_keeps_exact_sites_through_both_sweeps(checked_sites):
    """The shortcut rests on a contract (a rule in ops/ calls no user code); every op
    case's gradient, second derivative and tangent are built under the full-walk check."""
    from op_cases import CASES
    for name, fn, arrays, _ in CASES:
        with fg.Graph():
            xs = [fg.placeholder(f"x{i}", shape=a.shape) for i, a in enumerate(arrays)]
            out = fg.sum(fn(*xs))
            if out.dtype.kind != "f":
                continue
            grads = fg.grad(out, xs)
            fg.grad(fg.sum(grads[0] * grads[0]), xs[0])
            fg.jvp(out, xs[0], fg.placeholder("v", shape=arrays[0].shape))
    assert len(checked_sites) > 10 * len(CASES) and not _STOPS
