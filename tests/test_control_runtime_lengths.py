"""Loops whose carry has a run-time length (shape (None,)):

- a loop of zero iterations stacks its outputs as (0, *shape): where the shape has a
  run-time length, it is inferred from the inputs' shapes. The second derivative
  (whose backward loops stack such outputs) failed with "a loop of 0 iterations cannot
  stack an output of shape (None,)" for while_loop, scan over empty xs and
  fori_loop(0, n) at n = 0, in hvp (both modes) and jvp of a gradient too;
- a NumPy tangent or cotangent of a static shape, (3,), seeds a derivative loop whose
  carry is the primal's (None,): jvp, vjp, hvp and check_grads failed to build with
  "scan jvp: carry entry 0 enters the body with shape (3,) ... leaves it with shape
  (None,)". A genuine mismatch names the tangent and the user's carry.

Values against closed forms and central differences (check_grads), on generated code,
the reference interpreter and dask. On dask, too, the gradient of a body that draws
reads the draws the forward's values were made with (it failed, IndexError)."""
import numpy as np
import pytest

import flowgrad as fg

EXECUTORS = [pytest.param({}, id="codegen"), pytest.param({"codegen": False}, id="interp"),
             pytest.param({"backend": "dask"}, id="dask")]
W = np.array([1.0, 2.0])


def _values(outs, feed, how):
    return [fg.to_numpy(v) for v in fg.compile(outs, **how)(feed)]


def _while(w, n):
    # c ← c² + 1 while sum(c) < n: no iteration at n = 0, one at n = 4 (W = [1, 2])
    return fg.while_loop(lambda c: fg.sum(c) < n, lambda c: c * c + 1.0, w)


def _fori(w, n):
    return fg.fori_loop(0, fg.astype(n, "int64"), lambda i, c: c * c + 1.0, w)


@pytest.mark.parametrize("how", EXECUTORS)
@pytest.mark.parametrize("loop", ["while", "fori", "scan"])
def test_second_derivatives_through_a_loop_of_no_iteration(loop, how):
    """L = sum(out²), out = w (no iteration) or w² + 1 (one): ∂²L/∂w_i² summed over
    the gradient's entries is 2, or 12 w² + 4."""
    with fg.Graph():
        w = fg.placeholder("w", (None,))
        n = fg.placeholder("n", ())
        if loop == "while":
            out = _while(w, n)
        elif loop == "fori":
            out = _fori(w, n)
        else:
            xs = fg.placeholder("xs", (None,))
            out, _ = fg.scan(lambda c, x: (c * c + x, None), w, xs)
        L = fg.sum(out * out)
        g = fg.grad(L, w)
        gg = fg.grad(fg.sum(g), w)
        V = np.array([0.5, -1.0])
        outs = [g, gg, fg.hvp(L, w, V), fg.hvp(L, w, V, mode="rev-rev"),
                fg.jvp(fg.sum(g), w, V)]
        for runs, want in [(0, [2 * W, [2.0, 2.0], 2 * V, 2 * V, 2 * np.sum(V)]),
                           (1, [4 * W * (W**2 + 1), 12 * W**2 + 4,
                                (12 * W**2 + 4) * V, (12 * W**2 + 4) * V,
                                np.sum((12 * W**2 + 4) * V)])]:
            feed = {w: W, n: (1.0 if loop == "fori" else 4.0) * runs}
            if loop == "scan":
                feed = {w: W, n: 0.0, xs: np.ones(runs)}
            got = _values(outs, feed, how)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12)
            assert got[1].shape == (2,)


@pytest.mark.parametrize("how", EXECUTORS)
def test_no_iteration_stacks_a_dropout_mask_of_the_run_time_batch(how):
    """A body that draws (its draws are recorded for the derivative loops, stacked like
    the carries): no iteration stacks a (0, 2) mask, not (0, 0)."""
    with fg.Graph():
        w = fg.placeholder("w", (None,))
        xs = fg.placeholder("xs", (None,))
        hT, ys = fg.scan(lambda c, x: (fg.nn.dropout(c, 0.5) * x, fg.sum(c)), w, xs)
        L = fg.sum(hT * hT) + fg.sum(ys)
        g = fg.grad(L, w)
        got = _values([g, fg.grad(fg.sum(g), w)], {w: W, xs: np.zeros(0)}, how)
    np.testing.assert_allclose(got[0], 2 * W, rtol=1e-12)
    np.testing.assert_allclose(got[1], [2.0, 2.0], rtol=1e-12)


def _w4(kind):
    """w⁴ through a loop whose carry has a run-time length: two squarings."""
    w = fg.placeholder("w", (None,))
    if kind == "scan":
        out, _ = fg.scan(lambda c, x: (c * c * x, None), w, fg.constant(np.ones(2)))
    else:
        _, out = fg.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * c[1]),
                               (fg.constant(np.int64(0)), w))
    return w, out


@pytest.mark.parametrize("kind", ["scan", "while"])
def test_numpy_tangents_of_a_run_time_carry(kind):
    P = np.array([0.5, 1.5, -1.25])
    V = np.array([1.0, -2.0, 0.5])
    with fg.Graph():
        w, out = _w4(kind)
        got = fg.run([fg.jvp(out, w, V), fg.vjp(out, w, V), fg.hvp(fg.sum(out), w, V),
                      fg.hvp(fg.sum(out), w, V, mode="rev-rev")], {w: P})
        fg.check_grads(fg.sum(out * out), w, {w: P}, order=2)
    np.testing.assert_allclose(got[0], 4 * P**3 * V, rtol=1e-12)
    np.testing.assert_allclose(got[1], 4 * P**3 * V, rtol=1e-12)
    np.testing.assert_allclose(got[2], 12 * P**2 * V, rtol=1e-12)
    np.testing.assert_allclose(got[3], 12 * P**2 * V, rtol=1e-12)


def test_numpy_tangent_of_a_while_loops_run_time_carry():
    """c ← c² + 1 while sum(c) < 2, from w = [0.5, 0.25, 0.1]: one step, so ∂c/∂w = 2w."""
    P = np.array([0.5, 0.25, 0.1])
    with fg.Graph():
        w, lim = fg.placeholder("w", (None,)), fg.placeholder("lim", ())
        out = _while(w, lim)
        feed = {w: P, lim: 2.0}
        got = fg.run([fg.jvp(out, w, np.ones(3)), fg.vjp(out, w, np.ones(3)),
                      fg.hvp(fg.sum(out), w, np.ones(3))], feed)
        fg.check_grads(fg.sum(out * out), w, feed, order=2)
    np.testing.assert_allclose(got, [2 * P, 2 * P, [2.0, 2.0, 2.0]], rtol=1e-12)


@pytest.mark.parametrize("layer", ["RNN", "LSTM", "GRU"])
def test_check_grads_of_a_recurrent_layer_with_respect_to_a_run_time_batch_state(layer):
    rng = np.random.default_rng(3)
    with fg.Graph():
        x = fg.placeholder("x", (None, 4, 3))
        h0 = fg.placeholder("h0", (None, 5))
        net = getattr(fg.nn, layer)(5)
        out = net(x, initial_state=(h0, h0 * 0.5) if layer == "LSTM" else h0)
        L = fg.sum(out * out)
        feed = {x: rng.standard_normal((2, 4, 3)), h0: rng.standard_normal((2, 5))}
        fg.check_grads(L, h0, feed)
        fg.check_grads(L, h0, feed, order=2)


def test_a_tangent_of_another_rank_than_its_carry_names_both():
    with fg.Graph():
        w = fg.placeholder("w", (None,))
        out, _ = fg.scan(lambda c, x: (c * c * x, None), w, fg.constant(np.ones(2)))
        with pytest.raises(fg.FlowgradError) as err:
            fg.jvp(out, w, fg.placeholder("t", (None, 2)))
    msg = str(err.value)
    assert "tangent" in msg and "'w'" in msg and "(None, 2)" in msg
    assert "carry entry" not in msg


@pytest.mark.parametrize("how", EXECUTORS)
@pytest.mark.parametrize("batch", [None, 2])
def test_the_gradient_of_a_body_that_draws_reads_its_draws_on_every_executor(how, batch):
    """One step h = dropout(w) · x (rate 0.5: each entry 0 or 2w x): ∂sum(h²)/∂w is
    2h²/w whatever the mask drew, in every run. On dask the loop's task gave no draws'
    results (an IndexError); stated, the task could run twice (once for a derivative
    loop run at once, once for the forward's values) and draw two masks."""
    with fg.Graph():
        w = fg.placeholder("w", (batch,))
        xs = fg.placeholder("xs", (None,))
        hT, _ = fg.scan(lambda c, x: (fg.nn.dropout(c, 0.5) * x, None), w, xs)
        prog = fg.compile([hT, fg.grad(fg.sum(hT * hT), w)], **how)
        for _ in range(8):
            h, g = [fg.to_numpy(v) for v in prog({w: W, xs: np.array([1.5])})]
            np.testing.assert_allclose(g, 2 * h * h / W, rtol=1e-12)
            assert set(np.round(h / (2 * 1.5 * W), 12)) <= {0.0, 1.0}
