"""fg.nn.RNN, LSTM and GRU (issue 22): values and gradients against torch.nn.RNN / LSTM /
GRU in float64 with the weights copied over, against the same cell unrolled step by step
in flowgrad, finite differences (check_grads), and the refusals at their boundaries."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")

N, D, H = 3, 4, 5
KINDS = ("RNN", "LSTM", "GRU")


def _layer(kind, **kw):
    return getattr(fg.nn, kind)(H, seed=0, **kw)


def _randomise(layer, rng):
    """Non-trivial values for every variable (the biases start at zero or one)."""
    for v in layer.variables:
        v.value = 0.5 * rng.standard_normal(v.shape)


def _torch_twin(kind, layer, activation="tanh"):
    """torch's layer with the flowgrad layer's weights: W = weight_ihᵀ, U = weight_hhᵀ;
    RNN/LSTM: the bias all in bias_ih (bias_hh zero); GRU: b's rows are the two biases."""
    kw = {"nonlinearity": activation} if kind == "RNN" else {}
    t = getattr(torch.nn, kind)(D, H, batch_first=True, dtype=torch.float64, **kw)
    W, U, b = (v.value for v in layer.variables)
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.tensor(W.T))
        t.weight_hh_l0.copy_(torch.tensor(U.T))
        if kind == "GRU":
            t.bias_ih_l0.copy_(torch.tensor(b[0]))
            t.bias_hh_l0.copy_(torch.tensor(b[1]))
        else:
            t.bias_ih_l0.copy_(torch.tensor(b))
            t.bias_hh_l0.zero_()
    return t


def _torch_grads(kind, t):
    """The gradients of torch's parameters in the flowgrad layout (W, U, b)."""
    gW, gU = t.weight_ih_l0.grad.numpy().T, t.weight_hh_l0.grad.numpy().T
    gi, gh = t.bias_ih_l0.grad.numpy(), t.bias_hh_l0.grad.numpy()
    if kind == "GRU":
        return gW, gU, np.stack([gi, gh])
    np.testing.assert_allclose(gi, gh, rtol=1e-12, atol=1e-14)   # b = b_ih + b_hh
    return gW, gU, gi


def _build(kind, seq, with_state, static_T=None, activation=None):
    """Compile y and the gradients of sum(y · G) w.r.t. x, W, U, b (and h0, c0)."""
    rng = np.random.default_rng(7)
    kw = {"activation": activation} if activation else {}
    x = fg.placeholder("x", (N, static_T, D))
    G = fg.placeholder("G", (N, static_T, H) if seq else (N, H))
    layer = _layer(kind, return_sequences=seq, **kw)
    states = []
    if with_state:
        states = [fg.placeholder(f"s{k}", (N, H)) for k in range(2 if kind == "LSTM" else 1)]
        y = layer(x, tuple(states) if kind == "LSTM" else states[0])
    else:
        y = layer(x)
    _randomise(layer, rng)
    wrt = [x, *layer.variables, *states]
    prog = fg.compile([y, *fg.grad(fg.sum(y * G), wrt)])
    return layer, prog, states


def _torch_run(kind, t, X, Gv, seq, S, activation="tanh"):
    tx = torch.tensor(X, requires_grad=True)
    ts = [torch.tensor(s[None], requires_grad=True) for s in S]
    if kind == "LSTM" and ts:
        out, _ = t(tx, tuple(ts))
    else:
        out, _ = t(tx, *ts)
    ty = out if seq else out[:, -1]
    (ty * torch.tensor(Gv)).sum().backward()
    return ty.detach().numpy(), tx.grad.numpy(), _torch_grads(kind, t), \
        [s.grad.numpy()[0] for s in ts]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_torch_values_and_every_gradient_at_any_runtime_length(kind, seq,
                                                                      with_state):
    with fg.Graph():
        layer, prog, states = _build(kind, seq, with_state)
        t = _torch_twin(kind, layer)
        rng = np.random.default_rng(1)
        for T in (1, 5):                     # one compiled program serves every T
            X = rng.standard_normal((N, T, D))
            Gv = rng.standard_normal((N, T, H) if seq else (N, H))
            S = [0.5 * rng.standard_normal((N, H)) for _ in states]
            feed = {"x": X, "G": Gv, **{f"s{k}": s for k, s in enumerate(S)}}
            y, gx, gW, gU, gb, *gs = prog(feed)
            t.zero_grad()
            ty, tgx, (tW, tU, tb), tgs = _torch_run(kind, t, X, Gv, seq, S)
            assert y.shape == ((N, T, H) if seq else (N, H))
            np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
            for a, b in zip([gx, gW, gU, gb, *gs], [tgx, tW, tU, tb, *tgs]):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_static_length_matches_torch_too(kind):
    with fg.Graph():
        layer, prog, _ = _build(kind, True, False, static_T=5)
        t = _torch_twin(kind, layer)
        rng = np.random.default_rng(2)
        X, Gv = rng.standard_normal((N, 5, D)), rng.standard_normal((N, 5, H))
        y, gx, gW, gU, gb = prog(x=X, G=Gv)
        ty, tgx, (tW, tU, tb), _ = _torch_run(kind, t, X, Gv, True, [])
        np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
        for a, b in zip([gx, gW, gU, gb], [tgx, tW, tU, tb]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_rnn_with_relu_matches_torch():
    with fg.Graph():
        layer, prog, _ = _build("RNN", True, False, activation="relu")
        t = _torch_twin("RNN", layer, activation="relu")
        rng = np.random.default_rng(3)
        X, Gv = rng.standard_normal((N, 6, D)), rng.standard_normal((N, 6, H))
        y, gx, gW, gU, gb = prog(x=X, G=Gv)
        ty, tgx, (tW, tU, tb), _ = _torch_run("RNN", t, X, Gv, True, [], "relu")
        assert (y == 0).any() and (y > 0).any()           # both sides of the kink
        np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
        for a, b in zip([gx, gW, gU, gb], [tgx, tW, tU, tb]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# -- against the same cell unrolled in flowgrad ---------------------------------------

def _cell(kind, W, U, b):
    """One step written out from the formulas, on one time slice (N, D)."""
    def sl(z, j):
        return z[:, j * H:(j + 1) * H]

    def rnn(state, x):
        return fg.tanh(x @ W + b + state @ U)

    def lstm(state, x):
        h, c = state
        z = x @ W + b + h @ U
        c = fg.sigmoid(sl(z, 1)) * c + fg.sigmoid(sl(z, 0)) * fg.tanh(sl(z, 2))
        return fg.sigmoid(sl(z, 3)) * fg.tanh(c), c

    def gru(h, x):
        zi, zh = x @ W + b[0], h @ U + b[1]
        r = fg.sigmoid(sl(zi, 0) + sl(zh, 0))
        z = fg.sigmoid(sl(zi, 1) + sl(zh, 1))
        n = fg.tanh(sl(zi, 2) + r * sl(zh, 2))
        return (1 - z) * n + z * h
    return {"RNN": rnn, "LSTM": lstm, "GRU": gru}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_equals_the_cell_unrolled_in_flowgrad(kind):
    T = 6
    rng = np.random.default_rng(4)
    X = rng.standard_normal((N, T, D))
    with fg.Graph():
        x = fg.placeholder("x", (N, T, D))
        layer = _layer(kind, return_sequences=True)
        ys = layer(x)
        _randomise(layer, rng)
        cell = _cell(kind, *layer.variables)
        zero = fg.constant(np.zeros((N, H)))
        state, outs = ((zero, zero) if kind == "LSTM" else zero), []
        for t in range(T):
            state = cell(state, x[:, t, :])
            outs.append(state[0] if kind == "LSTM" else state)
        unrolled = fg.stack(outs, axis=1)
        G = rng.standard_normal((N, T, H))
        wrt = [x, *layer.variables]
        a = fg.run([ys, *fg.grad(fg.sum(ys * G), wrt)], {x: X})
        b = fg.run([unrolled, *fg.grad(fg.sum(unrolled * G), wrt)], {x: X})
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


# -- finite differences ---------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_first_order(kind):
    rng = np.random.default_rng(5)
    with fg.Graph():
        x = fg.placeholder("x", (2, None, 3))
        layer = getattr(fg.nn, kind)(2, seed=1, return_sequences=True)
        y = layer(x)
        _randomise(layer, rng)
        loss = fg.sum(y * rng.standard_normal((2, 3, 2)))
        fg.check_grads(loss, [x, *layer.variables], {x: rng.standard_normal((2, 3, 3))},
                       order=1, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_second_order_on_a_tiny_layer(kind):
    rng = np.random.default_rng(6)
    with fg.Graph():
        x = fg.placeholder("x", (1, 2, 2))
        h0 = fg.placeholder("h0", (1, 2))
        layer = getattr(fg.nn, kind)(2, seed=2)
        c0 = fg.constant(0.3 * np.ones((1, 2)))
        y = layer(x, (h0, c0) if kind == "LSTM" else h0)
        _randomise(layer, rng)
        loss = fg.sum(y * np.array([[0.7, -1.3]]))
        fg.check_grads(loss, [x, h0, *layer.variables], {x: rng.standard_normal((1, 2, 2)),
                                                h0: rng.standard_normal((1, 2))},
                       order=2, rtol=1e-5, atol=1e-7)


# -- layers, variables, scopes, initialisers ------------------------------------------

def test_variables_scopes_and_sequential():
    with fg.Graph() as g:
        x = fg.placeholder("x", (None, None, D))
        model = fg.nn.Sequential([fg.nn.LSTM(H, return_sequences=True, seed=0),
                                  fg.nn.GRU(3, seed=1), fg.nn.Dense(2, seed=2)])
        y = model(x)
        assert y.shape == (None, 2)
        assert [v.name for v in model.variables] == [
            "lstm/W", "lstm/U", "lstm/b", "gru/W", "gru/U", "gru/b", "dense/W", "dense/b"]
        assert [v.shape for v in model.layers[1].variables] == [(H, 9), (3, 9), (2, 9)]
        loops = [n for n in g.nodes if n.op is not None and n.op.name == "loop"]
        assert sorted(n.name.split("/")[0] for n in loops) == ["gru", "lstm"]
        assert "LSTM 5, sequences (lstm, 200 parameters)" in repr(model)
        out = fg.run(y, {x: np.ones((2, 7, D))})
        assert out.shape == (2, 2) and np.isfinite(out).all()


def test_initialisers_seed_dtype_and_forget_bias():
    def values(**kw):
        with fg.Graph():
            layer = fg.nn.LSTM(H, **kw)
            layer(fg.placeholder("x", (None, None, D), dtype=np.float32))
            return [v.value for v in layer.variables]
    W, U, b = values(seed=3)
    for a, c in zip(values(seed=3), (W, U, b)):
        np.testing.assert_array_equal(a, c)
    assert W.dtype == U.dtype == b.dtype == np.float32          # the input's float dtype
    assert W.shape == (D, 4 * H) and U.shape == (H, 4 * H)
    np.testing.assert_allclose(U @ U.T, np.eye(H), atol=1e-6)   # orthogonal rows
    np.testing.assert_array_equal(b, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    _, _, b0 = values(seed=3, unit_forget_bias=False, dtype="float64")
    assert b0.dtype == np.float64 and not b0.any()


def test_float32_runs_in_float32():
    with fg.Graph():
        x = fg.placeholder("x", (None, None, D), dtype=np.float32)
        layer = fg.nn.GRU(H, seed=0, return_sequences=True)
        y = layer(x)
        gU = fg.grad(fg.sum(y), layer.U)
        out, g = fg.run([y, gU], {x: np.ones((2, 3, D), np.float32)})
    assert out.dtype == g.dtype == np.float32 and out.shape == (2, 3, H)


# -- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_refuses_an_input_that_is_not_3d(kind):
    with fg.Graph():
        layer = _layer(kind)
        with pytest.raises(fg.ShapeError, match=f"{kind} '{kind.lower()}'.*3-d.*got 2-d"):
            layer(fg.placeholder("x", (N, D)))
        y = layer(fg.placeholder("x3", (N, 2, D)))                  # 3-d: accepted
        assert y.shape == (N, H)
        with pytest.raises(fg.ShapeError, match="3-d.*got 4-d"):
            layer(fg.placeholder("x4", (N, 2, D, 1)))


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_a_feature_count_other_than_the_built_one(kind):
    with fg.Graph():
        layer = _layer(kind)
        layer(fg.placeholder("x", (None, None, D)))
        with pytest.raises(fg.ShapeError, match=f"{kind} '{kind.lower()}'.*built for 4 "
                                                f"features.*has 5"):
            layer(fg.placeholder("x5", (None, None, D + 1)))
        assert layer(fg.placeholder("x4", (2, 3, D))).shape == (2, H)
        with pytest.raises(fg.ShapeError, match="features .* must be known"):
            _layer(kind)(fg.placeholder("xn", (None, None, None)))


def test_refuses_a_bad_initial_state():
    with fg.Graph():
        x = fg.placeholder("x", (None, None, D))
        with pytest.raises(fg.ShapeError, match=r"GRU 'gru'.*initial state must be "
                                                r"\(batch, 5\)"):
            fg.nn.GRU(H)(x, np.zeros((2, H + 1)))
        with pytest.raises(fg.ShapeError, match="initial h must be float64, not float32"):
            fg.nn.LSTM(H)(x, (np.zeros((2, H), np.float32), np.zeros((2, H))))
        with pytest.raises(TypeError, match="LSTM 'lstm_1'.*pair"):
            fg.nn.LSTM(H)(x, np.zeros((2, H)))
    with pytest.raises(ValueError, match="units must be a positive int"):
        fg.nn.LSTM(0)
