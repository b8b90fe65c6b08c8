"""The compile passes build exactly the plan of the straightforward construction.

``Program._build_plan`` fuses liveness, last-use frees and slot numbering into one
backward sweep, and simplify's driver settles most nodes without its rule engine. Here
both are checked against the plain construction, written out below as it stood before:
the rule engine on every node (``simplify(..., dispatch=False)``), a depth-first
liveness pass, slots numbered by ascending id, and frees found by a forward last-use
scan. Same steps, same kernels' ops and attributes, same slots, same frees, same
constants, on random graphs, gradients, higher derivatives and traces.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings, HealthCheck

import flowgrad as fg
from flowgrad.engine import simplify as simp_mod
from flowgrad.engine.simplify import simplify
from flowgrad.engine import FlatSteps, verify
from flowgrad.engine.executors.interp import instructions
from random_graphs import build, programs
from fuzz_graphs import valid_graphs


def ancestors(outs):
    """The plain depth-first search (Graph.ancestors sweeps ids instead)."""
    data = outs[0].graph.nx.nodes
    seen, stack = set(), [o.id for o in outs]
    while stack:
        nid = stack.pop()
        if nid not in seen:
            seen.add(nid)
            stack.extend(data[nid]["inputs"])
    return sorted(seen)


def reference_plan(prog):
    """(kept, slot map, [(op, attrs, input slots, out slot, frees)], consts) built the
    plain way from the program's graph and outputs."""
    g, outs = prog.graph, prog.outputs
    order = ancestors(outs)
    s = simplify(g, order, [o.id for o in outs], prog.keep_all, dispatch=False)
    kept = sorted(set(s.leaves) | set(s.consts) | {st[0] for st in s.steps})
    own = {nid: k for k, nid in enumerate(kept)}
    slot = {nid: own[s.rep.get(nid, nid)] for nid in order if s.rep.get(nid, nid) in own}
    out_slots = [slot[o.id] for o in outs]
    steps = [(op, attrs, tuple(own[i] for i in ins), own[nid]) for nid, op, attrs, ins
             in s.steps]
    last = {}
    for k, (_, _, ins, _) in enumerate(steps):
        for i in ins:
            last[i] = k
    frees = [set() for _ in steps]
    if not prog.keep_all:
        for i, k in last.items():
            if i not in out_slots:
                frees[k].add(i)
    plan = [(op, attrs, ins, out, fr) for (op, attrs, ins, out), fr in zip(steps, frees)]
    consts = {own[nid]: v for nid, v in s.consts.items()}
    return kept, slot, out_slots, plan, consts, s


def assert_same_plan(prog):
    kept, slot, out_slots, plan, consts, s = reference_plan(prog)
    verify(prog.plan)
    assert list(prog.plan.slots) == kept
    assert prog.slot_of == slot
    assert list(prog.plan.outputs) == out_slots
    got = [(st.op, st.attrs, st.ins, st.out, set(st.frees)) for st in prog.plan.steps]
    assert len(got) == len(plan)
    for (op, attrs, ins, out, fr), want in zip(got, plan):
        assert (op, ins, out, fr) == (want[0], want[2], want[3], want[4])
        assert attrs == want[1]
    assert [st.node for st in prog.plan.steps] == [st[0] for st in s.steps]
    for step in instructions(prog.plan, np):  # the arity-specialised fields agree with ins
        n, _, a, b, ins = step[:5]
        assert n == len(ins) and a == (ins[0] if n else None) and \
            b == (ins[1] if n > 1 else None)
    for k, v in enumerate(prog.plan.consts):
        assert (k in consts) == (v is not None)
        if k in consts:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(consts[k]))
    # the driver's shortcuts settle every node as the rule engine does
    fast = simplify(prog.graph, ancestors(prog.outputs), [o.id for o in prog.outputs],
                    prog.keep_all)
    assert fast.rep == s.rep
    assert [st[:2] + st[3:] for st in fast.steps] == [st[:2] + st[3:] for st in s.steps]
    for t in (s, fast):
        assert_sparse_storage(prog.graph, t)


def assert_sparse_storage(g, s):
    """simplify's maps hold only what the graph does not: ``rep`` no identity entry (and
    only representatives as values), ``defs`` every constant and only the op steps that
    differ from their graph node; anything else is the graph's node as is."""
    data = g.nx.nodes
    assert all(r != nid and r not in s.rep for nid, r in s.rep.items())
    for r, d in s.defs.items():
        assert r not in s.rep
        if d[0] == "op":
            nd = data[r]
            assert (d[1], d[2], d[3]) != (nd["op"], nd["attrs"], nd["inputs"]) or \
                d[2] is not nd["attrs"] or d[3] is not nd["inputs"]
        else:
            assert d[0] == "const"
    for r in s.roots:
        d = s.definition(r)
        if r not in s.defs:
            nd = data[r]
            assert nd["kind"] != "constant"
            assert d == (("op", nd["op"], nd["attrs"], nd["inputs"]) if nd["op"] is not None
                         else ("leaf",))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
def test_random_graphs_and_gradients_build_the_reference_plan(program):
    g, xs, outs, arrays = build(program)
    with g:
        for prog in (fg.compile(outs), fg.compile(outs, codegen=False),
                     fg.compile(outs[:1]), fg.compile(outs[1:] + outs[1:])):
            assert_same_plan(prog)
        prog = fg.compile(outs)
        feed = {f"p{i}": a for i, a in enumerate(arrays)}
        for a, b in zip(prog(**feed), fg.compile(outs, codegen=False)(**feed)):
            np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_graphs())
def test_fuzzed_graphs_build_the_reference_plan(case):
    with case.graph:
        outs = [case.out]
        if case.out.dtype.kind == "f":
            outs += fg.grad(fg.sum(case.out * case.out), case.inputs)
        assert_same_plan(fg.compile(outs))


@pytest.mark.parametrize("seed", range(6))
def test_sign_and_constant_graphs_build_the_reference_plan(seed):
    """add/sub/mul/neg with constants 0, ±1 and plain ones, CSE repeats, fills and a
    trace (keep_all): the paths of the driver and of the rule engine all meet here."""
    r = np.random.default_rng(seed)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        s = fg.placeholder("s")
        pool = [x, s, fg.zeros_like(x), fg.ones_like(x)]
        for _ in range(40):
            a, b = (pool[r.integers(len(pool))] for _ in range(2))
            k = r.integers(12)
            c = [0.0, 1.0, -1.0, 2.5][r.integers(4)]
            node = [a + b, a - b, a * b, -a, a * c, c * a + b, fg.sin(a), a / (2.0 + b * b),
                    fg.abs(a), fg.exp(-a), fg.tanh(a) * -b, a / -b][k]
            pool.append(node)
        y = fg.sum(pool[-1] * pool[-1]) + fg.sum(pool[-2])
        outs = [y, *fg.grad(y, [x, s]), x]          # a fed leaf as an output: a copy step
        prog = fg.compile(outs)
        assert_same_plan(prog)
        prog.trace(x=np.arange(3.0), s=0.5)
        assert_same_plan(prog._trace_program)       # keep_all: nothing freed
        with simp_mod.disabled():
            assert_same_plan(fg.compile(outs))


def test_the_scalar_chain_builds_the_reference_plan():
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(60):
            y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
        outs = [y, fg.grad(y, x)]
        assert_same_plan(fg.compile(outs))
        assert_same_plan(fg.compile([outs[1]], codegen=False))


def test_a_chain_that_simplifies_little_stores_little():
    """The sin chain and its gradient: every step but the lecture notes' is its graph node as
    is, so simplify's maps stay a few entries long whatever the chain's length."""
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = x
        for _ in range(300):
            y = fg.sin(y)
        outs = [y, fg.grad(y, x)]
        order = ancestors(outs)
        for dispatch in (True, False):
            s = simplify(g, order, [o.id for o in outs], dispatch=dispatch)
            assert len(s.rep) + len(s.defs) < 10
            assert len(s.steps) > 890
            assert_sparse_storage(g, s)
        with simp_mod.disabled():
            s = simplify(g, order, [o.id for o in outs])
            assert s.rep == {} and all(d[0] == "const" for d in s.defs.values())
        prog = fg.compile(outs)
        assert_same_plan(prog)
        np.testing.assert_array_equal(prog(x=0.3), fg.compile(outs, codegen=False)(x=0.3))


def test_length_checks_need_a_placeholder_with_a_none_axis():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        b = fg.placeholder("b", shape=(None,))
        c = fg.placeholder("c", shape=(3,))
        assert fg.compile(a * b).check_lengths is not None
        assert fg.compile(c * 2.0).check_lengths is None
        with pytest.raises(fg.FeedError):
            fg.compile(a * b)(a=np.ones(2), b=np.ones(3))


def test_the_slot_map_is_complete_for_every_reader():
    """Compile enters only the leaves' and outputs' slots; any other read completes
    the map first, so every way of reading it sees all of the program's ids."""
    import copy
    import pickle
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        h = fg.sin(x) * 2.0
        y = fg.sum(h * h)
        outs = [y, fg.grad(y, x)]
        full = reference_plan(fg.compile(outs))[1]
        readers = [lambda m: dict(m.items()), lambda m: {k: m[k] for k in list(m)},
                   lambda m: {k: m.get(k) for k in m.keys()}, lambda m: dict(m),
                   lambda m: {**m}, lambda m: m.copy(), lambda m: copy.deepcopy(m),
                   lambda m: pickle.loads(pickle.dumps(m)),
                   lambda m: dict(zip(m.keys(), m.values()))]
        for read in readers:
            m = fg.compile(outs).slot_of
            assert read(m) == full
        m = fg.compile(outs).slot_of
        assert len(m) == len(full) and h.id in m and m[h.id] == full[h.id]
        m = fg.compile(outs).slot_of
        assert m[h.id] == full[h.id] and m == full and full == m
        with pytest.raises(KeyError):
            fg.compile(outs).slot_of[10 ** 9]


# -- flat plans (large programs: scheduler.FLAT_STEPS) --------------------------------------

@pytest.fixture
def flat_plans(monkeypatch):
    """Every plan stored flat, whatever its size."""
    from flowgrad.engine import program as scheduler
    monkeypatch.setattr(scheduler, "FLAT_STEPS", 0)
    return scheduler


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
# a pruned step that simplifies away above the last kept id: its slot-map entry read
# past the end of the dense slot array (an IndexError when the map completed)
@example(program=(1, [(True, 0, 0, 0), (True, 1, 0, 1)]))
def test_flat_plans_read_as_the_tuple_plans(program):
    """A flat plan reads (index, iteration, slices) as the very tuples of the list plan;
    it builds the reference plan and runs to the same values, on either loop."""
    from flowgrad.engine import program as scheduler
    g, xs, outs, arrays = build(program)
    feed = {f"p{i}": a for i, a in enumerate(arrays)}
    with g:
        plain = fg.compile(outs, codegen=False)
        saved = scheduler.FLAT_STEPS
        scheduler.FLAT_STEPS = 0
        try:
            flat = [fg.compile(outs, codegen=False), fg.compile(outs),
                    fg.compile(outs[1:] + outs[1:])]
        finally:
            scheduler.FLAT_STEPS = saved
        for prog in flat:
            assert isinstance(prog.plan.made_steps(), FlatSteps)
            assert_same_plan(prog)
        prog = flat[0]
        def same(steps):     # a kernel with attributes is a new partial each compile
            return [(n, getattr(fn, "func", fn), getattr(fn, "keywords", None), *rest)
                    for n, fn, *rest in steps]
        want = same(instructions(plain.plan, np))
        assert same(instructions(prog.plan, np)) == want
        steps, plain_steps = prog.plan.steps, plain.plan.steps
        assert list(steps) == list(plain_steps) == [steps[k] for k in range(len(steps))]
        assert steps[-1:] == plain_steps[-1:] and steps[:] == plain_steps[:]
        assert dict(prog.slot_of) == dict(plain.slot_of)
        for a, b in zip(prog(**feed), plain(**feed)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(flat[1](**feed), plain(**feed)):
            np.testing.assert_array_equal(a, b)


def test_flat_plan_columns_hold_slots_in_4_bytes_and_switch_to_8_beyond_2_31(flat_plans,
                                                                              monkeypatch):
    """issue 19: a flat plan's slot columns are 4-byte ints while the slots fit, 8-byte
    ones from 2^31 - 1 slots or ids on; the plan reads and runs the same either way."""
    import numpy as np
    assert flat_plans._slot_type(2 ** 31 - 2) == ("i", np.int32)
    assert flat_plans._slot_type(2 ** 31 - 1) == ("q", np.int64)

    def build():
        with fg.Graph():
            x = fg.placeholder("x", shape=(4,))
            y = x
            for _ in range(20):
                y = fg.tanh(y) * 1.5 + fg.sin(y)
            loss = fg.sum(y * y)
            return fg.compile([loss, fg.grad(loss, x)], codegen=False)
    narrow = build()
    monkeypatch.setattr(flat_plans, "_slot_type", lambda n: ("q", np.int64))
    wide = build()
    a, b = narrow.plan.made_steps(), wide.plan.made_steps()
    assert a.out.typecode == a.a.typecode == a.frees.typecode == "i"
    assert b.out.typecode == b.a.typecode == b.frees.typecode == "q"
    assert list(a) == list(b)
    X = np.array([-1.0, 0.25, 0.5, 2.0])
    for u, v in zip(narrow(x=X), wide(x=X)):
        np.testing.assert_array_equal(u, v)


def test_flat_plans_on_sparse_ids_and_wide_steps(flat_plans):
    """Ids far apart (a dict, not an array, maps them to slots), a three-input step and a
    step with no input, values(), numerics checks and a trace, all on the flat loop."""
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        for _ in range(300):
            fg.sin(fg.cos(x))              # ids the program never uses
        y = fg.where(x > 0.0, fg.exp(x), x * x) + fg.sum(fg.stack([x, x * 2.0, -x]), 0)
        z = fg.sum(y * y)
        outs = [z, fg.grad(z, x)]
        prog = fg.compile(outs, codegen=False)
        assert isinstance(prog.plan.made_steps(), FlatSteps)
        assert isinstance(flat_plans._slot_index(prog.plan.slots, True), dict)  # sparse ids
        assert_same_plan(prog)
        X = np.array([-1.0, 0.5, 2.0])
        got = prog(x=X)
        flat_plans.FLAT_STEPS = 10 ** 9
        ref = fg.compile(outs, codegen=False)
        assert type(ref.plan.made_steps()) is list
        for a, b in zip(got, ref(x=X)):
            np.testing.assert_array_equal(a, b)
        flat_plans.FLAT_STEPS = 0
        checked = fg.compile(outs, check_numerics=True, codegen=False)
        for a, b in zip(checked(x=X), ref(x=X)):
            np.testing.assert_array_equal(a, b)
        tr = prog.trace(x=X)
        assert isinstance(prog._trace_program.plan.made_steps(), FlatSteps)
        assert float(tr[z]) == float(got[0])


def test_flat_plan_errors_name_the_node(flat_plans):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        y = fg.sin(x)
        bad = fg.matmul(fg.reshape(y, (-1, 1)), fg.reshape(x, (1, -1)))  # noqa: F841
        z = fg.sum(fg.log(x) * y)                          # this line is named
        prog = fg.compile([z], codegen=False)
        assert isinstance(prog.plan.made_steps(), FlatSteps)
        with pytest.raises(fg.NumericsError) as err:
            fg.compile([z], check_numerics=True, codegen=False)(x=np.array([-1.0, 2.0]))
        assert "test_compile_plan.py" in str(err.value)


@pytest.mark.parametrize("seed", range(8))
def test_graph_ancestors_match_a_depth_first_search(seed):
    """Graph.ancestors (a budgeted search, then a sweep down the ids) on random DAGs:
    small ancestor sets inside a large graph (the search alone) and large ones (the
    sweep), several outputs, repeated ones, and the compile's and grad's callers."""
    rng = np.random.default_rng(seed)
    with fg.Graph() as g:
        nodes = [fg.placeholder("x", shape=()), fg.constant(2.0)]
        for _ in range(3000):
            k = int(rng.integers(len(nodes)))
            if rng.random() < 0.9:          # mostly local: long chains, small early sets
                k = max(0, len(nodes) - 1 - int(rng.integers(min(len(nodes), 4))))
            a = nodes[k]
            if rng.random() < 0.5:
                nodes.append(fg.sin(a))
            else:
                nodes.append(a * nodes[int(rng.integers(len(nodes)))])
    from flowgrad import autodiff
    from flowgrad.engine import program as scheduler
    for _ in range(20):
        outs = [nodes[int(rng.integers(len(nodes)))] for _ in range(int(rng.integers(1, 4)))]
        want = ancestors(outs)
        assert g.ancestors([o.id for o in outs]) == want
        assert autodiff.ancestors(outs) == want == scheduler._pruned(outs)
    assert g.ancestors([nodes[5].id]) == ancestors([nodes[5]])
    assert g.ancestors([nodes[-1].id, nodes[-1].id]) == ancestors([nodes[-1]])


def _graph_kinds(tmp_path):
    """(graph, outputs) built every way a graph comes about: plain, under name scopes,
    composites, nn layers with dropout (a stateful draw), and loaded from a file."""
    rng = np.random.default_rng(0)
    out = []
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 3))
        w = fg.variable(rng.standard_normal(3), name="w")
        with fg.name_scope("model"):
            z = fg.tanh(x * w) * 2.0 - (-fg.sin(x)) * 0.0
            loss = fg.sum(z * z).named("loss")
        out.append((g, [loss, *fg.grad(loss, [w])]))

    @fg.composite("affine")
    def affine(a, v):
        return a * v + 1.0

    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(4, 3))
        layer = fg.nn.Dense(2, activation=fg.tanh, seed=0)
        h = fg.nn.dropout(layer(affine(x, 0.5)), 0.5, seed=1)
        loss = fg.sum(h * h)
        out.append((g, [loss, *fg.grad(loss, layer.variables)]))
    g0, outs0 = out[0]
    fg.save_graph(tmp_path / "m.fg", outs0)
    g2 = fg.load_graph(tmp_path / "m.fg")
    loss2 = g2.by_name("model/loss")
    out.append((g2, [loss2, *fg.grad(loss2, [g2.by_name("w")])]))
    return out


def test_build_time_inputs_and_ancestors_hold_for_every_kind_of_graph(tmp_path):
    """Graph._inputs (recorded by add_node) is every node's own inputs tuple, whichever
    way the graph was built, and compiles over it build the reference plan."""
    for g, outs in _graph_kinds(tmp_path):
        data = g.nx._node
        assert len(g._inputs) == len(g) == len(data)
        assert all(g._inputs[i] is data[i]["inputs"] for i in range(len(g)))
        for k in range(len(outs)):
            assert g.ancestors([o.id for o in outs[k:]]) == ancestors(outs[k:])
        assert_same_plan(fg.compile(outs))
        assert_same_plan(fg.compile(outs, codegen=False))
