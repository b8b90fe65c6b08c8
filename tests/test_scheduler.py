"""compile/Program: pruning, a flat plan that never consults networkx, freeing, traces."""
import numpy as np
import pytest

import flowgrad as fg


def test_compile_prunes_to_what_the_outputs_need():
    x = fg.placeholder("x", shape=(3,))
    t = fg.placeholder("t", shape=(3,))
    used = fg.exp(x)
    fg.log(t) * 100  # not needed by `used`
    prog = fg.compile(used)
    assert prog.n_steps == 1
    assert set(prog.placeholders.values()) == {x}
    assert prog(x=np.zeros(3)).tolist() == [1.0, 1.0, 1.0]  # t need not be fed


def test_running_a_plan_never_touches_networkx():
    x = fg.placeholder("x", shape=(2,))
    w = fg.variable(np.array([0.5, 2.0]))
    loss = fg.sum(fg.tanh(x * w))
    prog = fg.compile([loss, fg.grad(loss, w)])
    x.graph.nx = None  # any networkx lookup at run time would now fail
    loss_v, g_v = prog(x=np.array([1.0, -1.0]))
    assert loss_v == pytest.approx(np.tanh(0.5) + np.tanh(-2.0))
    np.testing.assert_allclose(g_v, (1 - np.tanh([0.5, -2.0]) ** 2) * [1.0, -1.0])


def test_outputs_are_kept_and_intermediates_freed():
    x = fg.placeholder("x", shape=(4,))
    a = fg.exp(x)
    b = fg.sin(a)
    c = fg.cos(b)
    prog = fg.compile([a, c])
    vals = prog.run_reference(prog.bind((), {"x": np.zeros(4)}))
    alive = {nid for nid, s in prog.slot_of.items() if vals[s] is not None}
    assert alive == {a.id, c.id}


def test_variables_are_read_at_call_time():
    w = fg.variable(1.0)
    prog = fg.compile(w * 3)
    assert prog() == 3.0
    w.value = 2.0
    assert prog() == 6.0


def test_run_caches_the_compiled_program():
    x = fg.placeholder("x")
    y = x * 2
    assert fg.run(y, {x: 1.0}) == 2.0
    assert fg.run(y, {x: 4.0}) == 8.0
    from flowgrad.engine.program import run_cache
    assert len(run_cache(x.graph)) == 1


def test_trace_holds_every_value_and_adjoint():
    x = fg.placeholder("x")
    w = fg.variable(3.0)
    h = fg.tanh(w * x)
    loss = h * h
    other = fg.exp(x)
    prog = fg.compile([loss, other])
    tr = prog.trace(x=0.2)
    assert tr[h] == pytest.approx(np.tanh(0.6))
    assert tr[other] == pytest.approx(np.exp(0.2))
    assert tr.adjoint(loss) == 1.0
    assert tr.adjoint(h) == pytest.approx(2 * np.tanh(0.6))
    assert tr.adjoint(w) == pytest.approx(2 * np.tanh(0.6) * (1 - np.tanh(0.6) ** 2) * 0.2)
    assert not tr.has_adjoint(other) and tr.adjoint(other) == 0.0
    assert [n.id for n in tr.nodes] == sorted(n.id for n in tr.nodes)


def test_trace_of_a_non_scalar_output_has_values_only():
    x = fg.placeholder("x", shape=(2,))
    tr = fg.compile(fg.exp(x)).trace(x=np.zeros(2))
    assert tr[x].tolist() == [0.0, 0.0]
    with pytest.raises(fg.UsageError, match="not a scalar"):
        tr.adjoint(x)


def test_a_trace_refuses_a_node_it_does_not_hold_naming_it():
    # a node of another graph with the same id used to read this trace's value silently
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        tr = fg.compile(fg.sum(fg.exp(x))).trace(x=np.array([0.0, 1.0]))
    with fg.Graph():
        other = fg.placeholder("other", shape=(2,))
    assert other.id == x.id and other not in tr and x in tr
    with pytest.raises(fg.NodeLookupError, match="'other' belongs to another graph"):
        tr[other]
    with pytest.raises(KeyError):   # (still a KeyError, as before)
        tr.adjoint(other)
    np.testing.assert_allclose(tr.adjoint(x), np.exp([0.0, 1.0]), rtol=1e-15)
    with pytest.raises(fg.UsageError, match="indexed by a node of its graph, got int 0"):
        tr[0]


def test_unknown_backend_is_a_backend_error():
    x = fg.placeholder("x")
    with pytest.raises(fg.BackendError, match="unknown backend 'tpu'"):
        fg.compile(x, backend="tpu")
