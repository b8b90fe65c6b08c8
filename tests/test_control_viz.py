"""Loops drawn and stepped through (issue 20): ``draw(tr, unroll=True)`` draws one copy of
the body per iteration with the run's own values and the adjoints of BPTT,
walkthroughs step through each iteration, formulas write a scan as its recurrence.
Every drawn number is checked against a hand-written numpy loop or PyTorch float64."""
import numpy as np
import pytest
import torch

import flowgrad as fg
from flowgrad.loops.loop_op import recording_loops
from flowgrad.viz.unroll import RECORD_LIMIT, UnrollError, UnrolledTrace, unroll
from custom_rules import clip_grad_fn

W0 = np.array([[0.5, -0.3, 0.1], [0.2, 0.4, -0.6], [0.7, -0.1, 0.3]])
X = np.array([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6], [-0.7, 0.8, 0.9], [1.0, -1.1, 0.2]])
H0 = np.array([0.3, -0.2, 0.1])


def rnn(T=None):
    """An Elman RNN scan: h_t = tanh(h_{t−1} W + x_t), y_t = Σ h_t², loss Σ y + Σ h_T."""
    W = fg.variable(W0, name="W")
    xs = fg.placeholder("xs", (None, 3))
    h0 = fg.constant(H0).named("h0")

    def step(h, x):
        h = fg.tanh(h @ W + x)
        return h, fg.sum(h * h)

    hT, ys = fg.scan(step, h0, xs)
    loss = (fg.sum(ys) + fg.sum(hT)).named("loss")
    return W, xs, hT, ys, loss


def hand_rnn(X):
    hs = [H0]
    for x in X:
        hs.append(np.tanh(hs[-1] @ W0 + x))
    return hs


def torch_bptt(X):
    """(dloss/dW, [dloss/dh_t for t = 1..T]) by PyTorch float64 autograd."""
    W = torch.tensor(W0, requires_grad=True)
    h = torch.tensor(H0)
    hs, loss = [], 0
    for x in torch.tensor(X):
        h = torch.tanh(h @ W + x)
        h.retain_grad()
        hs.append(h)
        loss = loss + (h * h).sum()
    loss = loss + h.sum()
    loss.backward()
    return W.grad.numpy(), [h.grad.numpy() for h in hs]


def test_unrolled_values_and_adjoints_are_the_runs_and_bptts():
    with fg.Graph():
        W, xs, hT, ys, loss = rnn()
        tr = fg.compile(loss).trace(xs=X)
        ut = unroll(tr)
        assert isinstance(ut, UnrolledTrace) and ut.original is tr
        copies = ut.iterations[hT.inputs[0].id]
        assert len(copies) == 4
        body = hT.inputs[0].attrs["spec"].bodies[0]
        carry_out = body.outs[0].id
        hand = hand_rnn(X)
        gW, gh = torch_bptt(X)
        for t, m in enumerate(copies):
            h_t = m[carry_out]
            assert h_t.name.endswith(f"h_{t + 1}")       # named as the textbook does
            np.testing.assert_allclose(ut[h_t], hand[t + 1], rtol=0, atol=1e-15)
            np.testing.assert_allclose(ut.adjoint(h_t), gh[t], rtol=1e-12, atol=1e-15)
        # W's adjoint summed over the copies is the loop's own backward scan's, and torch's
        np.testing.assert_allclose(ut.adjoint(ut.node_for[W.id]), gW, rtol=1e-12)
        np.testing.assert_allclose(tr.adjoint(W), gW, rtol=1e-12)
        np.testing.assert_allclose(ut[ut.node_for[loss.id]], tr[loss], rtol=0, atol=0)


def test_unrolled_adjoints_equal_a_python_unrolled_graph():
    """The same RNN written as a Python loop (the graph grows with T): each h_t's v̄."""
    with fg.Graph():
        W = fg.variable(W0, name="W")
        xs = fg.placeholder("xs", (4, 3))
        h, hs, total = fg.constant(H0), [], 0
        for t in range(4):
            h = fg.tanh(h @ W + xs[t])
            hs.append(h)
            total = total + fg.sum(h * h)
        tr_py = fg.compile(total + fg.sum(h)).trace(xs=X)
        py_adj = [tr_py.adjoint(n) for n in hs]
    with fg.Graph():
        _, _, hT, _, loss = rnn()
        ut = unroll(fg.compile(loss).trace(xs=X))
        out = hT.inputs[0].attrs["spec"].bodies[0].outs[0].id
        for t, m in enumerate(ut.iterations[hT.inputs[0].id]):
            np.testing.assert_allclose(ut.adjoint(m[out]), py_adj[t], rtol=1e-12, atol=1e-15)


def test_draw_unroll_shows_each_iterations_numbers():
    """A scalar carry: each copy's box shows that iteration's value and v̄ (4 digits)."""
    xs_v = np.array([0.5, -1.0, 2.0])
    with fg.Graph():
        w = fg.variable(0.8, name="w")
        xs = fg.placeholder("xs", (None,))
        hT, _ = fg.scan(lambda h, x: (fg.tanh(w * h + x), None), fg.constant(0.25).named("h0"),
                        xs)
        tr = fg.compile((hT * hT).named("loss")).trace(xs=xs_v)
        src = fg.viz.draw(tr, unroll=True).source
    h, hs = 0.25, []
    for x in xs_v:
        h = np.tanh(0.8 * h + x)
        hs.append(h)
    # v̄ of h_t: 2 h_T at the end, times ∂h_{t+1}/∂h_t = w (1 − h_{t+1}²) back through time
    bars = [2 * hs[-1]]
    for t in (2, 1):
        bars.insert(0, bars[0] * 0.8 * (1 - hs[t] ** 2))
    for t in range(3):
        assert f"scan · iteration {t + 1} of 3" in src
        assert f"h_{t + 1}" in src
        assert f">{hs[t]:.4g}<" in src, (t, hs[t])
        assert f"v̄ {bars[t]:.4g}<" in src, (t, bars[t])
    assert "scan × T" not in src                 # the loop box is replaced by its copies


def test_unroll_keeps_the_runs_own_draws():
    """A body drawing random values: the copies show the values the run drew (kept
    while tracing), not fresh draws of a replay."""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 2))
        _, ys = fg.scan(lambda c, x: (c, x + fg.random.normal((2,), seed=3)),
                        fg.constant(0.0), xs)
        tr = fg.compile(ys).trace(xs=np.zeros((3, 2)))
        ut = unroll(tr)
        spec = ys.inputs[0].attrs["spec"]
        y_out = spec.bodies[0].outs[1].id
        got = np.stack([ut[m[y_out]] for m in ut.iterations[ys.inputs[0].id]])
        np.testing.assert_array_equal(got, tr[ys])
        assert len({tuple(r) for r in got}) == 3       # fresh draws every iteration
        np.testing.assert_array_equal(ut[ut.node_for[ys.id]], tr[ys])


def test_a_random_draw_outside_the_loop_refuses_adjoints_it_cannot_reproduce():
    """Adjoints come from the written-out graph: with a dropout mask drawn again, they
    would be another run's — a typed error, never a silently different picture. (64
    entries: with 4, the fresh copy's mask equalled the trace's once in 16 runs.)"""
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 64))
        w = fg.variable(np.full(64, 0.5), name="w")
        hT, _ = fg.scan(lambda h, x: (fg.tanh(h * w + x), None), fg.constant(np.zeros(64)), xs)
        loss = fg.sum(fg.nn.dropout(hT, 0.5, training=True))
        prog = fg.compile(loss)
        prog(xs=np.ones((3, 64)))          # the mask's stream moves on: the trace's differs
        tr = prog.trace(xs=np.ones((3, 64)))  # from a fresh copy's first draw
        with pytest.raises(UnrollError, match="another value .* not be this run's"):
            fg.viz.draw(tr, unroll=True)
        tr_values = fg.compile([fg.nn.dropout(hT, 0.5, training=True)]).trace(
            xs=np.ones((3, 64)))
        assert fg.viz.draw(tr_values, unroll=True).source   # values only: the run's own


def _clipped_scan():
    """A custom rule clipping its cotangent, in a body whose two results (hT, ys) a loss
    reads."""
    clip_grad = clip_grad_fn()
    xs = fg.placeholder("xs", (None, 2))
    w = fg.variable(np.array([0.5, 2.0]), name="w")
    hT, ys = fg.scan(lambda h, x: (clip_grad(fg.tanh(h * w + x)), fg.sum(h)),
                     fg.constant(np.zeros(2)), xs)
    return xs, w, hT, ys


def test_a_rule_nonlinear_in_its_cotangent_sees_every_results_sum_and_is_drawn():
    """The loop's one backward pass gives the clipping rule the sum of what hT and ys
    contribute, as the written-out graph and a hand BPTT do (each result's own backward
    loop gave [0.03646, 0.00300]: clip(a) + clip(b), not clip(a + b))."""
    with fg.Graph():
        xs, w, hT, ys = _clipped_scan()
        one = fg.compile(fg.sum(hT * 3.0)).trace(xs=np.ones((3, 2)))
        ut = unroll(one)                           # one result read: the two agree
        np.testing.assert_allclose(ut.adjoint(ut.node_for[w.id]), one.adjoint(w),
                                   rtol=1e-12)
        two = fg.compile(fg.sum(hT * 3.0) + fg.sum(ys)).trace(xs=np.ones((3, 2)))
        ut = unroll(two)
        np.testing.assert_allclose(ut.adjoint(ut.node_for[w.id]), two.adjoint(w),
                                   rtol=1e-12)
        assert fg.viz.draw(two, unroll=True) is not None
    wv, hs = np.array([0.5, 2.0]), [np.zeros(2)]          # BPTT by hand
    for _ in range(3):
        hs.append(np.tanh(hs[-1] * wv + 1.0))
    dh, dw = np.full(2, 3.0), np.zeros(2)
    for t in (2, 1, 0):
        da = np.clip(dh, -0.1, 0.1) * (1.0 - hs[t + 1] ** 2)   # clip of the whole adjoint
        dw += da * hs[t]
        dh = da * wv + 1.0                                     # + ∂sum(h_t)/∂h_t
    np.testing.assert_allclose(two.adjoint(w), dw, rtol=1e-12)
    np.testing.assert_allclose(dw, [0.0347497, 0.00295947], rtol=1e-5)


def test_a_drawing_with_another_gradient_than_the_runs_is_refused(monkeypatch):
    """The check stays: were the trace's adjoint not the written-out graph's, the
    drawing would refuse, naming the input (the adjoint shifted by hand here)."""
    from flowgrad.tracing import Trace
    with fg.Graph():
        xs, w, hT, ys = _clipped_scan()
        two = fg.compile(fg.sum(hT * 3.0) + fg.sum(ys)).trace(xs=np.ones((3, 2)))
        real = Trace.adjoint
        monkeypatch.setattr(Trace, "adjoint", lambda self, n: real(self, n) + (
            1e-6 if n is w else 0.0))
        with pytest.raises(UnrollError, match="w's adjoint .*, the loops' own"):
            fg.viz.draw(two, unroll=True)


def test_unroll_limit_is_a_typed_error_at_the_first_iteration_too_many():
    with fg.Graph():
        _, xs, hT, _, loss = rnn()
        prog = fg.compile(loss)
        fine = prog.trace(xs=np.ones((RECORD_LIMIT, 3)) * 0.1)
        assert len(unroll(fine).iterations) == 1
        long = prog.trace(xs=np.ones((RECORD_LIMIT + 1, 3)) * 0.1)
        run = long.loop_run(hT.inputs[0])
        assert run.count == RECORD_LIMIT + 1 and not run.complete and not run.values
        with pytest.raises(UnrollError, match=r"scan built at .*test_control_viz.* ran 13 "
                                              r"iterations; unroll=True draws at most 12"):
            fg.viz.draw(long, unroll=True)
        # a long loop still walks through, as one step
        assert len(fg.viz.walkthrough(long).frames) > 3
        with pytest.raises(UnrollError, match="needs a Trace"):
            fg.viz.draw(loss, unroll=True)
        assert isinstance(UnrollError("x"), fg.FlowgradError)


def test_a_long_loop_keeps_only_its_first_twelve_iterations(monkeypatch):
    """Past the limit a traced loop counts its iterations and runs the plain body."""
    from flowgrad.loops.body import Body
    calls = []
    real = Body.call_values

    def counting(self, *a):
        calls.append(1)
        return real(self, *a)

    monkeypatch.setattr(Body, "call_values", counting)
    with fg.Graph():
        _, xs, hT, _, loss = rnn()
        tr = fg.compile(loss).trace(xs=np.ones((40, 3)) * 0.1)
        assert len(calls) == RECORD_LIMIT and tr.loop_run(hT.inputs[0]).count == 40
        assert tr.loop_run(loss) is None            # not a loop node


def test_plain_runs_record_nothing(monkeypatch):
    """Only a trace keeps iterations: a call never runs the keep-all body."""
    from flowgrad.loops.body import Body

    def refuse(*a, **k):
        raise AssertionError("a plain run recorded an iteration")

    with fg.Graph():
        _, xs, _, _, loss = rnn()
        prog = fg.compile(loss)
        monkeypatch.setattr(Body, "call_values", refuse)
        prog(xs=X)
        fg.compile(loss, codegen=False)(xs=X)
        with recording_loops([]):             # nothing asked for: nothing kept
            prog(xs=X)


def test_walkthrough_steps_through_each_iteration_forward_and_backward():
    with fg.Graph():
        _, xs, _, _, loss = rnn()
        tr = fg.compile(loss).trace(xs=X[:3])
        caps = fg.viz.walkthrough(tr).captions()
    fw = [c for c in caps if c.startswith("Forward pass: step")]
    bw = [c for c in caps if c.startswith("Backward pass: step")]
    heads = [c.splitlines()[0] for c in fw]
    for t in (1, 2, 3):
        assert any(h.endswith(f"scan, iteration {t} of 3") for h in heads)
    # forward visits the iterations 1, 2, 3; backward 3, 2, 1 (through time)
    order_fw = [int(h.split("iteration ")[1][0]) for h in heads if "iteration" in h]
    order_bw = [int(c.splitlines()[0].split("iteration ")[1][0]) for c in bw
                if "iteration" in c.splitlines()[0]]
    assert order_fw == sorted(order_fw) and order_bw == sorted(order_bw, reverse=True)
    h2 = hand_rnn(X[:3])[2]
    h2_frame = next(c for c in fw if "v_" in c and ": h_2 = tanh" in c)
    assert h2_frame.splitlines()[-1] == "= [" + " ".join(f"{v:.4g}" for v in h2) + "]"
    _, gh = torch_bptt(X[:3])
    bar = next(c for c in bw if c.splitlines()[-1].startswith("v̄[h_1] = "))
    assert bar.splitlines()[-1] == "v̄[h_1] = [" + " ".join(f"{v:.4g}" for v in gh[0]) + "]"
    with fg.Graph():
        _, xs, _, _, loss = rnn()
        tr = fg.compile(loss).trace(xs=X[:3])
        flat = fg.viz.walkthrough(tr, unroll=False).captions()
    assert not any("iteration" in c for c in flat) and len(flat) < len(caps)


def test_while_loop_unrolled_is_newtons_iteration():
    with fg.Graph():
        a = fg.placeholder("a", ())
        r = fg.while_loop(lambda x: fg.abs(x * x - a) > 1e-12 * a,
                          lambda x: 0.5 * (x + a / x), a)
        tr = fg.compile(r).trace(a=2.0)
        ut = unroll(tr)
        out = r.inputs[0].attrs["spec"].bodies[0].outs[0].id
        copies = ut.iterations[r.inputs[0].id]
        x, hand = 2.0, []
        while abs(x * x - 2.0) > 2e-12:
            x = 0.5 * (x + 2.0 / x)
            hand.append(x)
        assert len(copies) == len(hand)
        for m, v in zip(copies, hand):
            assert ut[m[out]] == v
        # d√a/da through the written-out iterations: the loop's own reverse mode
        np.testing.assert_allclose(ut.adjoint(ut.node_for[a.id]), tr.adjoint(a), rtol=1e-13)
        np.testing.assert_allclose(tr.adjoint(a), 0.5 / np.sqrt(2.0), rtol=1e-12)
        assert "while_loop · iteration 1 of" in fg.viz.draw(tr, unroll=True).source


def test_cond_and_reverse_scan_unrolled():
    with fg.Graph():
        x = fg.placeholder("x", ())
        y = fg.cond(x > 0, lambda v: fg.log(v), lambda v: v * v, x)
        tr = fg.compile(y).trace(x=-3.0)
        src = fg.viz.draw(tr, unroll=True).source
        assert "cond · else branch taken" in src and "then branch" not in src
        ut = unroll(tr)   # (one unrolled graph: another unroll's node is refused)
        assert ut[ut.node_for[y.id]] == 9.0
    with fg.Graph():
        xs = fg.placeholder("xs", (None,))
        hT, ys = fg.scan(lambda h, x: (h * 0.5 + x, h), fg.constant(1.0), xs, reverse=True)
        tr = fg.compile(fg.sum(ys) + hT).trace(xs=np.array([1.0, 2.0, 4.0]))
        ut = unroll(tr)
        body = hT.inputs[0].attrs["spec"].bodies[0]
        copies = ut.iterations[hT.inputs[0].id]
        # runs t = 3, 2, 1: h entering is 1, then 4.5, then 4.25; h_1 = 3.125
        assert [float(ut[m[body.outs[0].id]]) for m in copies] == [4.5, 4.25, 3.125]
        np.testing.assert_array_equal(ut[ut.node_for[ys.id]], tr[ys])
        np.testing.assert_array_equal(tr[ys], [4.25, 4.5, 1.0])


def test_nested_loop_stays_one_box_in_its_copies():
    with fg.Graph():
        xs = fg.placeholder("xs", (None,))
        hT, _ = fg.scan(lambda h, x: (fg.fori_loop(0, 2, lambda i, c: c * 0.5 + x, h), None),
                        fg.constant(1.0), xs)
        tr = fg.compile(hT).trace(xs=np.array([1.0, 2.0]))
        ut = unroll(tr)
        assert ut[ut.node_for[hT.id]] == tr[hT]
        src = fg.viz.draw(tr, unroll=True).source
        assert "fori_loop × 2" in src and "scan · iteration 2 of 2" in src


def test_formula_writes_the_recurrence():
    with fg.Graph():
        W = fg.placeholder("W", (3, 3))
        xs = fg.placeholder("xs", (None, 3))
        hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h)),
                         fg.constant(np.zeros(3)), xs)
        f = fg.viz.formula(hT)
        assert f.text == "h_T   where h_0 = 0, h_t = tanh(h_{t−1} W + x_t), x_t = xs[t − 1]"
        assert r"h_{t} = \tanh\left(h_{t-1} W + x_{t}\right)" in f.latex
        assert fg.viz.formula(ys).text.startswith("(y_1, …, y_T)   where")
        assert "y_t = Σ h_{t−1}" in fg.viz.formula(ys).text
        back, _ = fg.scan(lambda h, x: (h * 2.0 + x, None),
                          fg.constant(np.ones(3)).named("s0"), xs, reverse=True)
        assert fg.viz.formula(back).text == \
            "s_1   where s_{T+1} = 1, s_t = 2 s_{t+1} + x_t, x_t = xs[t − 1]"
        t = fg.placeholder("t", (3,))        # a leaf named t: the step is written s
        ht, _ = fg.scan(lambda h, x: (h * t + x, None), fg.constant(np.zeros(3)), xs)
        assert fg.viz.formula(ht).text == \
            "h_S   where h_0 = 0, h_s = h_{s−1} ⊙ t + x_s, x_s = xs[s − 1]"
        n = fg.placeholder("n", (), dtype="int64")   # and a bound named n: N iterations
        d = fg.fori_loop(0, n, lambda i, c: c * 0.5, fg.constant(1.0))
        assert fg.viz.formula(d).text.endswith("N = the first k ≥ 0 where not (i_k < n)")
        a = fg.placeholder("a", ())
        r = fg.while_loop(lambda v: v > 1.0, lambda v: v * 0.5, a)
        assert fg.viz.formula(r).text == \
            "a_n   where a_0 = a, a_k = ½ a_{k−1}, n = the first k ≥ 0 where not (a_k > 1)"


def test_unroll_refuses_a_loop_whose_recorded_draws_a_derivative_reads():
    # (a body's random draws are extra results read by the derivative loops)
    with fg.Graph():
        W = fg.placeholder("W", (3, 3))
        xs = fg.placeholder("xs", (None, 3))

        def step(h, x):
            h = fg.tanh(h @ W + x) * fg.random.bernoulli((3,), 0.5)
            return h, fg.sum(h)
        _, ys = fg.scan(step, fg.constant(np.zeros(3)), xs)
        loss = fg.sum(ys)
        tr = fg.compile([loss, fg.grad(loss, W)]).trace(W=np.eye(3) * 0.5, xs=np.ones((4, 3)))
        with pytest.raises(fg.viz.UnrollError, match="draws random values"):
            fg.viz.draw(tr, unroll=True)
        assert "scan × T" in fg.viz.draw(tr).source
