"""A loop's reverse mode is ONE backward loop for all its results (issue 20): a loss
reading a scan's final carries and its ys gets one backward scan receiving the sum of
every contribution to each result, first and second order, forward or reversed, for
scan, while_loop and cond, in graph files too. Checked against the same model unrolled
(to 1e-12), hand-written BPTT in numpy, and central finite differences; a custom rule
not linear in its cotangent (a clipped gradient) inside a body sees the sum of the
results' contributions, as the loop written out does."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.loops.loop_op import is_loop
from custom_rules import clip_grad_fn

RNG = np.random.default_rng(7)
FEED = {"W": RNG.normal(size=(3, 3)) * 0.5, "U": RNG.normal(size=(2, 3)),
        "h0": RNG.normal(size=3), "xs": RNG.normal(size=(5, 2))}
WRT = ("W", "U", "h0", "xs")


def _step(W, U):
    """Two carries (h, c) and two per-step outputs."""
    def step(carry, x):
        h, c = carry
        h2 = fg.tanh(h @ W + x @ U)
        return (h2, c + fg.sum(h * h2)), (fg.sum(h * h), h2 * 0.5)
    return step


def _model(reverse, unrolled, T=5):
    W, U = fg.placeholder("W", (3, 3)), fg.placeholder("U", (2, 3))
    h0, xs = fg.placeholder("h0", (3,)), fg.placeholder("xs", (T if unrolled else None, 2))
    step = _step(W, U)
    carry = (h0, fg.constant(0.0))
    if unrolled:
        ys = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            carry, ys[t] = step(carry, xs[t])
        y1, y2 = fg.stack([y[0] for y in ys]), fg.stack([y[1] for y in ys])
    else:
        carry, (y1, y2) = fg.scan(step, carry, xs, reverse=reverse)
    hT, cT = carry
    loss = fg.sum(fg.sin(hT)) + cT * cT + fg.sum(y1 * fg.constant(np.arange(1.0, T + 1))) \
        + fg.sum(fg.exp(y2))
    return loss, [W, U, h0, xs]


def _loops(graph, name):
    return sum(1 for n in graph.nodes if is_loop(n) and n.attrs["spec"].name == name)


@pytest.mark.parametrize("reverse", [False, True])
def test_a_loss_of_every_result_is_one_backward_scan_equal_to_unrolled(reverse):
    results = []
    vs = [RNG.normal(size=s) for s in [(3, 3), (2, 3), (3,)]]
    for unrolled in (False, True):
        with fg.Graph() as g:
            loss, wrt = _model(reverse, unrolled)
            grads = fg.grad(loss, wrt)
            if not unrolled:     # hT, cT, y1 and y2 read: one backward scan, not four
                assert _loops(g, "scan vjp") == 1
            second = fg.grad(fg.sum(grads[0] * grads[0]) + fg.sum(grads[2]), wrt[:3])
            if not unrolled:     # the backward scan's own: one; the forward's again: one
                assert _loops(g, "scan vjp vjp") == 1 and _loops(g, "scan vjp") == 2
            hv = fg.hvp(loss, wrt[:3], [fg.constant(v) for v in vs])
            jv = fg.jvp(loss, wrt, [np.ones((3, 3)), np.ones((2, 3)), np.ones(3),
                                    np.ones((5, 2))])
            results.append(fg.compile([loss, *grads, *second, *hv, jv])(FEED))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_loss_of_every_result_checks_against_finite_differences_to_second_order():
    with fg.Graph():
        loss, wrt = _model(True, False)
        fg.check_grads(loss, wrt, FEED, modes=("rev", "fwd"), order=2, rtol=1e-6)


# -- a rule not linear in its cotangent sees the sum --------------------------------------

WC = np.array([0.5, 2.0])


def _hand_clipped(reverse=False, T=3):
    """∂/∂w of 3·Σh_T + Σ_t Σh_t (h_t entering step t), h ← clip_grad(tanh(h w + 1)):
    BPTT by hand, the clip applied to each h's whole adjoint."""
    hs = [np.zeros(2)]
    for _ in range(T):
        hs.append(np.tanh(hs[-1] * WC + 1.0))
    dh, dw = np.full(2, 3.0), np.zeros(2)
    for t in range(T - 1, -1, -1):
        da = np.clip(dh, -0.1, 0.1) * (1.0 - hs[t + 1] ** 2)
        dw += da * hs[t]
        dh = da * WC + 1.0
    return dw


@pytest.mark.parametrize("reverse", [False, True])
def test_a_clipped_rule_in_a_scan_sees_hT_and_ys_summed(reverse):
    clip_grad = clip_grad_fn()
    with fg.Graph():
        w = fg.placeholder("w", (2,))
        hT, ys = fg.scan(lambda h, x: (clip_grad(fg.tanh(h * w + x)), fg.sum(h)),
                         fg.constant(np.zeros(2)), fg.constant(np.ones((3, 2))),
                         reverse=reverse)
        got = fg.compile(fg.grad(fg.sum(hT * 3.0) + fg.sum(ys), w))(w=WC)
    np.testing.assert_allclose(got, _hand_clipped(), rtol=1e-12)
    # one backward loop a result gave clip(3) + clip(1) at the last step: [0.03646, 0.003]
    assert not np.allclose(got, [0.03646, 0.00300], rtol=1e-3)


def test_a_clipped_rule_in_a_while_loop_sees_both_carries_summed():
    clip_grad = clip_grad_fn()
    with fg.Graph():
        w = fg.placeholder("w", (2,))

        def body(c):
            i, h, s = c
            return i + 1, clip_grad(fg.tanh(h * w + 1.0)), s + fg.sum(h)

        _, hT, sT = fg.while_loop(lambda c: c[0] < 3, body,
                                  (fg.constant(np.int64(0)), fg.constant(np.zeros(2)),
                                   fg.constant(0.0)))
        got = fg.compile(fg.grad(fg.sum(hT * 3.0) + sT, w))(w=WC)
    np.testing.assert_allclose(got, _hand_clipped(), rtol=1e-12)


@pytest.mark.parametrize("x", [0.7, -0.7])
def test_a_clipped_rule_in_a_cond_sees_both_outputs_summed(x):
    clip_grad = clip_grad_fn()
    with fg.Graph():
        w, xv = fg.placeholder("w", ()), fg.placeholder("x", ())

        def then(v):
            a = clip_grad(fg.tanh(v * w))
            return a * 3.0, a

        def other(v):
            return v * w * 3.0, v * w

        o1, o2 = fg.cond(xv > 0.0, then, other, xv)
        got = fg.compile(fg.grad(o1 + o2, w))(w=0.4, x=x)
    # taken: ā = 3 + 1 clipped to 0.1 once (one backward cond; two gave 0.1 + 0.1)
    want = 0.1 * (1.0 - np.tanh(0.4 * x) ** 2) * x if x > 0 else 4.0 * x
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_remat_block_reading_two_results_of_a_loop_gets_one_backward_loop():
    """remat's replay copies a loop's results onto other inputs: those results are
    gathered together, apart from the original's, so the clip sees their sum too."""
    clip_grad = clip_grad_fn()
    got = []
    for wrap in (fg.remat, lambda f: f):
        with fg.Graph():
            w = fg.placeholder("w", (2,))

            def block(v):
                hT, ys = fg.scan(lambda h, x: (clip_grad(fg.tanh(h * v + x)), fg.sum(h)),
                                 fg.constant(np.zeros(2)), fg.constant(np.ones((3, 2))))
                return fg.sum(hT * 3.0) + fg.sum(ys)

            got.append(fg.compile(fg.grad(wrap(block)(w), w))(w=WC))
    np.testing.assert_allclose(got[0], _hand_clipped(), rtol=1e-12)
    np.testing.assert_allclose(got[1], _hand_clipped(), rtol=1e-12)


# -- graph files ---------------------------------------------------------------------------

def test_a_gradient_program_of_every_result_saves_and_loads(tmp_path):
    with fg.Graph() as g:
        loss, wrt = _model(False, False)
        grads = [d.named(f"d{x.name}") for x, d in zip(wrt, fg.grad(loss, wrt))]
        want = fg.compile(grads)(FEED)
        path = fg.save_graph(tmp_path / "grad.fg", grads)
    loaded = fg.load_graph(path)
    assert _loops(loaded, "scan vjp") == 1
    got = fg.compile([loaded.by_name(f"d{n}") for n in WRT])(FEED)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


# -- while_loop and cond: both results read, to second order -------------------------------

def _while_or_cond(kind, unrolled, w):
    h0 = fg.constant(np.array([0.3, -0.4]))

    def body(h, s):
        h2 = fg.sin(h * w) + 0.5
        return h2, s + fg.sum(h * h2)

    if kind == "while":
        if unrolled:
            h, s = h0, fg.constant(0.0)
            for _ in range(3):
                h, s = body(h, s)
            return h, s
        _, h, s = fg.while_loop(lambda c: c[0] < 3,
                                lambda c: (c[0] + 1, *body(c[1], c[2])),
                                (fg.constant(np.int64(0)), h0, fg.constant(0.0)))
        return h, s
    if unrolled:
        return body(h0, fg.constant(1.0))
    return fg.cond(fg.sum(w) > 0.0, lambda h, s: body(h, s), lambda h, s: (h * w, s * 2.0),
                   h0, fg.constant(1.0))


@pytest.mark.parametrize("kind", ["while", "cond"])
def test_while_loop_and_cond_of_both_results_equal_unrolled_to_second_order(kind):
    got = []
    for unrolled in (False, True):
        with fg.Graph() as g:
            w = fg.placeholder("w", (2,))
            h, s = _while_or_cond(kind, unrolled, w)
            loss = fg.sum(fg.cos(h)) + s * s
            d = fg.grad(loss, w)
            if not unrolled:
                assert _loops(g, f"{'while_loop' if kind == 'while' else 'cond'} vjp") == 1
            outs = [loss, d, fg.grad(fg.sum(d * d), w), fg.hvp(loss, w, np.array([1.0, -2.0]))]
            got.append(fg.compile(outs)(w=np.array([0.7, 1.3])))
            if not unrolled:
                fg.check_grads(loss, w, {w: np.array([0.7, 1.3])}, order=2, rtol=1e-6)
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
