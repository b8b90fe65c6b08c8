"""Edges of the model vocabulary against independent references (PyTorch, numpy
closed forms): float32 losses at extreme logits, and what the earlier float64
comparisons did not reach."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flowgrad as fg

# rows: one-sided ±1e4, all equal at −1e4, a tie at +1e4, ordinary
EXTREME = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3.0, 1e4, 1e4],
                    [0.5, -0.25, 2.0]], dtype=np.float32)


def _softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("kw", [{}, {"codegen": False}, {"backend": "dask"}])
def test_cross_entropy_gradient_at_extreme_float32_logits(target, kw):
    """The gradient's softmax was exp(z − logsumexp z): at |z| ~ 1e4 in float32 the
    subtraction is off by ~1e-3, so a row of three equal logits got 0.33332 instead
    of 1/3 (relative error 2e-5, torch's 6e-8). Now the softmax of z minus its row
    maximum: within float32 rounding of the float64 closed form softmax − t."""
    labels = np.array([1, 2, 0, 2])
    probs = np.array([[0, 1, 0], [0.2, 0.3, 0.5], [1, 0, 0], [0.1, 0.1, 0.8]], np.float32)
    with fg.Graph():
        z = fg.placeholder("z", (None, 3), dtype="float32")
        t = (fg.placeholder("t", (None,), dtype="int64") if target == "labels"
             else fg.placeholder("t", (None, 3), dtype="float32"))
        loss = fg.softmax_cross_entropy(z, t, reduction="sum")
        gz, = fg.grad(loss, [z])
        T = labels if target == "labels" else probs
        value, grad = (np.asarray(v) for v in fg.compile([loss, gz], **kw)(z=EXTREME, t=T))
    assert value.dtype == grad.dtype == np.float32
    hot = np.eye(3)[labels] if target == "labels" else probs.astype(np.float64)
    want = _softmax64(EXTREME) * hot.sum(-1, keepdims=True) - hot
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7)
    tz = torch.tensor(EXTREME, requires_grad=True)
    tl = F.cross_entropy(tz, torch.tensor(T), reduction="sum")
    tl.backward()
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(value, tl.item(), rtol=1e-6)


def test_cross_entropy_second_order_with_large_logits():
    """The shift by the row maximum is a constant to every derivative (softmax is
    shift-invariant): derivatives of every order still match finite differences."""
    Z = np.array([[40.0, 41.5, 39.0], [-3.0, 0.5, 2.0]])
    with fg.Graph():
        z = fg.placeholder("z", (2, 3))
        loss = fg.softmax_cross_entropy(z, np.array([2, 0]))
        fg.check_grads(loss, [z], {z: Z}, order=3)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_conv_and_pooling_of_an_empty_batch(backend):
    """An empty batch (N = 0) gives empty results and zero kernel gradients, as torch,
    on every backend: on dask the convolution's im2col reshape (an empty axis merged)
    and the pools' adjoints (an empty value set into an empty slice) raised."""
    X = np.zeros((0, 3, 5, 5), np.float32)
    W = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    with fg.Graph():
        x = fg.placeholder("x", (None, 3, 5, 5), dtype="float32")
        w = fg.variable(W, name="w")
        y = fg.conv2d(x, w, padding=1)
        pooled = [fg.max_pool2d(y, 2), fg.max_pool2d(y, 3, 1), fg.avg_pool2d(y, 2)]
        loss = sum(fg.sum(p * p) for p in pooled)
        outs = [y, *pooled, *fg.grad(loss, [x, w]), fg.jvp(pooled[0], [x], [x])]
        got = [np.asarray(v) for v in fg.compile(outs, backend=backend)(x=X)]
    tx = torch.tensor(X, requires_grad=True)
    tw = torch.tensor(W, requires_grad=True)
    ty = F.conv2d(tx, tw, padding=1)
    tp = [F.max_pool2d(ty, 2), F.max_pool2d(ty, 3, 1), F.avg_pool2d(ty, 2)]
    sum((p * p).sum() for p in tp).backward()
    want = [ty, *tp, tx.grad, tw.grad, tp[0]]
    for a, b in zip(got, want):
        assert a.shape == tuple(b.shape) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b.detach().numpy())


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("codegen", [True, False])
def test_a_sequence_of_no_steps_returns_the_initial_state(kind, codegen):
    """T = 0 runs the recurrence zero times (the module's docstring said it stopped with
    a RunError, which no path did): h = h0, every step's output is (N, 0, H), the
    gradient reaches h0 unchanged and the weights not at all."""
    N, D, H = 2, 3, 4
    rng = np.random.default_rng(0)
    H0, C0, G = (rng.standard_normal((N, H)) for _ in range(3))
    with fg.Graph():
        x = fg.placeholder("x", (None, None, D))
        h0, c0 = fg.placeholder("h0", (None, H)), fg.placeholder("c0", (None, H))
        layer = getattr(fg.nn, kind)(H, seed=0)
        seqs = getattr(fg.nn, kind)(H, seed=1, return_sequences=True)
        state = (h0, c0) if kind == "LSTM" else h0
        h, hs = layer(x, state), seqs(x, state)
        grads = fg.grad(fg.sum(h * G), [h0, layer.W, layer.U])
        feed = {x: np.zeros((N, 0, D)), h0: H0, c0: C0}
        out = fg.compile([h, hs, *grads], codegen=codegen)(feed)
    np.testing.assert_array_equal(out[0], H0)
    assert out[1].shape == (N, 0, H)
    np.testing.assert_array_equal(out[2], G)
    np.testing.assert_array_equal(out[3], np.zeros((D, layer.gates * H)))
    np.testing.assert_array_equal(out[4], np.zeros((H, layer.gates * H)))


@pytest.mark.parametrize("bad, error, words", [
    (dict(rate=1.0), ValueError, "rate must be a number in \\[0, 1\\), got 1.0"),
    (dict(rate=-0.1), ValueError, "rate"), (dict(rate="0.5"), ValueError, "rate"),
    (dict(rate=0.5, training="yes"), TypeError, "training"),
    (dict(rate=0.5, seed=-1), TypeError, "seed must be a non-negative int, got -1")])
def test_dropout_layer_refuses_bad_arguments_when_made(bad, error, words):
    """fg.nn.Dropout (and MLP(dropout=…)) stored any rate, training and seed and
    failed first when called, far from the line that made it (torch.nn.Dropout(1.5)
    raises when made); the function fg.nn.dropout refuses the same, with the same
    words. rate 1 is refused (torch zeroes everything); 0.999 is a rate."""
    with pytest.raises(error, match=words) as made:
        fg.nn.Dropout(**bad)
    assert isinstance(made.value, fg.FlowgradError)
    with pytest.raises(error, match=words):
        with fg.Graph():
            fg.nn.dropout(fg.constant(np.ones(2)), **bad)
    if set(bad) == {"rate"}:
        with pytest.raises(error, match=words):
            fg.nn.MLP([2, 1], dropout=bad["rate"])
    layer = fg.nn.Dropout(0.999, seed=0)
    with fg.Graph():
        x = fg.placeholder("x", (None, 4))
        kept = np.asarray(fg.run(layer(x), {x: np.ones((500, 4))}))
    assert set(np.unique(kept)) <= {0.0, np.float64(1 / (1 - 0.999))}


@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4])
def test_float32_softmax_of_large_logits_is_accurate(scale):
    """fg.softmax was exp(x − logsumexp x): in float32 the subtraction of two numbers of
    the logits' size lost ~ulp(|x|) in the exponent (relative 7.5e-6 at |x| ~ 100, 7.7e-4
    at 10⁴). It is now taken of x − max(x) (a constant to derivatives): the entries that
    matter (p > 1e-3) within a few ulp of the float64 closed form, and its vjp too."""
    rng = np.random.default_rng(11)
    Z = (rng.standard_normal((64, 10)) * scale).astype(np.float32)
    C = rng.standard_normal((64, 10)).astype(np.float32)
    Z64 = Z.astype(np.float64)
    e = np.exp(Z64 - Z64.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    dz = p * (C - (p * C).sum(axis=1, keepdims=True))          # ∂ Σ c·softmax(z) / ∂z
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 10), dtype="float32")
        s = fg.softmax(z)
        got_p, got_dz = fg.run([s, fg.grad(fg.sum(s * C), z)], {z: Z})
    assert got_p.dtype == got_dz.dtype == np.float32
    big = p > 1e-3
    assert np.max(np.abs(got_p - p)[big] / p[big]) < 1e-6
    np.testing.assert_allclose(got_dz, dz, rtol=0, atol=2e-6 * np.abs(C).max())
