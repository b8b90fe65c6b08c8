"""fg.nn's model-script defaults and the layers of issue 22 (conv, pooling, norms,
embedding), each checked against PyTorch in float64."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")


# -- MLP: hidden layers default to relu (issue 18 §5) -----------------------------------

def _mlp_out(X, **kw):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        model = fg.nn.MLP([8, 8, 2], seed=0, **kw)
        z = model(x)
        W = [v.value for v in model.variables]
        return fg.run(z, {x: X}), W, model


def test_mlp_hidden_layers_default_to_relu_and_output_stays_linear():
    X = np.random.default_rng(0).standard_normal((5, 3))
    out, (W0, b0, W1, b1, W2, b2), model = _mlp_out(X)
    h = np.maximum(X @ W0 + b0, 0)
    h = np.maximum(h @ W1 + b1, 0)
    np.testing.assert_allclose(out, h @ W2 + b2, rtol=1e-13, atol=1e-13)
    assert [layer.activation for layer in model.layers] == [fg.relu, fg.relu, None]
    assert model.layers[0].init is fg.nn.init.he_normal          # ReLU → He


@pytest.mark.parametrize("linear", [None, "linear", "identity"])
def test_mlp_linear_hidden_layers_are_asked_for_by_name(linear):
    X = np.random.default_rng(1).standard_normal((4, 3))
    out, (W0, b0, W1, b1, W2, b2), model = _mlp_out(X, activation=linear)
    np.testing.assert_allclose(out, ((X @ W0 + b0) @ W1 + b1) @ W2 + b2, rtol=1e-13,
                               atol=1e-13)
    assert all(layer.activation is None for layer in model.layers)


def test_dense_takes_linear_as_a_name_and_refuses_unknown_names():
    assert fg.nn.Dense(2, activation="identity").activation is None
    with pytest.raises(ValueError, match="'linear', 'identity'"):
        fg.nn.Dense(2, activation="lin")


# -- Conv2D, pooling layers, Flatten ------------------------------------------------------

def _tt(a, grad=True):
    return torch.tensor(a, requires_grad=grad)


def test_conv2d_layer_matches_torch_conv2d_with_the_same_weights():
    X = np.random.default_rng(2).standard_normal((3, 2, 9, 8))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 9, 8))
        layer = fg.nn.Conv2D(4, (3, 2), stride=2, padding="same", activation="relu", seed=0)
        y = layer(x)
        assert [v.name for v in layer.variables] == ["conv2d/W", "conv2d/b"]
        assert layer.W.shape == (4, 2, 3, 2) and layer.b.shape == (4,)
        assert y.shape == (None, 4, 5, 4)
        G = np.random.default_rng(3).standard_normal((3, 4, 5, 4))
        layer.b.value = np.random.default_rng(4).standard_normal(4)
        yv, gW, gb, gx = fg.run([y, *fg.grad(fg.sum(y * G), [layer.W, layer.b, x])], {x: X})
        W, b = layer.W.value, layer.b.value
    tconv = torch.nn.Conv2d(2, 4, (3, 2), stride=2, dtype=torch.float64)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(W))         # PyTorch's layout, as it is
        tconv.bias.copy_(torch.tensor(b))
    tx = _tt(X)
    ty = torch.relu(tconv(torch.nn.functional.pad(tx, (0, 1, 1, 1))))  # SAME_UPPER pads
    (ty * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(yv, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gW, tconv.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, tconv.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_init_scales_by_fan_in_and_refuses_bad_arguments():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 8, 20, 20))
        layer = fg.nn.Conv2D(64, 5, activation=fg.relu, seed=1)
        layer(x)
        # he_normal: std = √(2 / fan_in), fan_in = C·kh·kw = 200
        assert abs(layer.W.value.std() - np.sqrt(2 / 200)) < 0.01
        assert layer.init is fg.nn.init.he_normal
    with pytest.raises(ValueError, match="filters"):
        fg.nn.Conv2D(0, 3)
    with pytest.raises(ValueError, match="padding"):
        fg.nn.Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        fg.nn.Conv2D(2, (3, 0))
    with fg.Graph():
        with pytest.raises(fg.ShapeError, match="4-d"):
            fg.nn.Conv2D(2, 3)(fg.placeholder("v", shape=(None, 8)))


@pytest.mark.parametrize("init", ["glorot", "glorot_normal"])
def test_conv2d_glorot_counts_the_receptive_field_in_fan_out_as_torch(init):
    """Glorot's fans for a (filters, C, kh, kw) kernel are C·kh·kw and filters·kh·kw
    (torch.nn.init.xavier_*, Keras, jax.nn.initializers): fan_out was filters alone,
    which drew a 3×5 kernel of 16 → 32 channels with 1.6× torch's spread."""
    F, C, kh, kw = 32, 16, 3, 5
    with fg.Graph():
        layer = fg.nn.Conv2D(F, (kh, kw), init=init, seed=0)
        layer(fg.placeholder("x", shape=(None, C, 9, 9)))
        W = layer.W.value
    ref = torch.empty(F, C, kh, kw, dtype=torch.float64)
    if init == "glorot":
        torch.nn.init.xavier_uniform_(ref)
        bound = np.sqrt(6 / ((C + F) * kh * kw))   # torch's U(-a, a)
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound
        assert ref.abs().max().item() <= bound
    else:
        torch.nn.init.xavier_normal_(ref)
    want_std = np.sqrt(2 / ((C + F) * kh * kw))
    assert W.std() == pytest.approx(want_std, rel=0.03)
    assert ref.std().item() == pytest.approx(want_std, rel=0.03)


def test_pooling_layers_and_flatten_match_torch():
    X = np.random.default_rng(5).standard_normal((2, 3, 7, 6))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3, 7, 6))
        model = fg.nn.Sequential([fg.nn.MaxPool2D(2), fg.nn.AvgPool2D((2, 1), stride=1),
                                  fg.nn.Flatten()])
        y = model(x)
        assert y.shape == (None, 3 * 2 * 3) and model.variables == []
        yv, gx = fg.run([y, fg.grad(fg.sum(y * y), x)], {x: X})
    tx = _tt(X)
    F = torch.nn.functional
    ty = torch.flatten(F.avg_pool2d(F.max_pool2d(tx, 2), (2, 1), 1), 1)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(yv, ty.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12, atol=1e-13)
    with fg.Graph():
        with pytest.raises(fg.ShapeError, match="known lengths"):
            fg.nn.Flatten()(fg.placeholder("x", shape=(None, 3, None)))


# -- LayerNorm -----------------------------------------------------------------------------

@pytest.mark.parametrize("features", [5, (4, 5)])
def test_layer_norm_matches_torch_values_and_gradients(features):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3, 4, 5)) * 3 + 100.0   # a large offset: two-pass variance
    shape = (features,) if isinstance(features, int) else features
    Gam, Bet = rng.standard_normal(shape), rng.standard_normal(shape)
    G = rng.standard_normal(X.shape)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 4, 5))
        ln = fg.nn.LayerNorm(features, eps=1e-5)
        y = ln(x)
        assert [v.name for v in ln.variables] == ["layer_norm/gamma", "layer_norm/beta"]
        np.testing.assert_array_equal(ln.gamma.value, np.ones(shape))
        ln.gamma.value, ln.beta.value = Gam, Bet
        out = fg.run([y, *fg.grad(fg.sum(y * G), [x, ln.gamma, ln.beta])], {x: X})
    tln = torch.nn.LayerNorm(features, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        tln.weight.copy_(torch.tensor(Gam))
        tln.bias.copy_(torch.tensor(Bet))
    tx = _tt(X)
    ty = tln(tx)
    (ty * torch.tensor(G)).sum().backward()
    for got, want in zip(out, [ty, tx.grad, tln.weight.grad, tln.bias.grad]):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-11)


def test_layer_norm_second_order_check_grads_and_refusals():
    X = np.random.default_rng(7).standard_normal((2, 4))
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 4))
        ln = fg.nn.LayerNorm(4)
        y = ln(x)
        ln.gamma.value = np.array([1.0, -2.0, 0.5, 3.0])
        fg.check_grads(fg.sum(fg.sin(y)), [x], feed={x: X}, order=2, modes=("rev", "fwd"))
        with pytest.raises(fg.ShapeError, match=r"trailing shape must be \(4,\)"):
            ln(fg.placeholder("z", shape=(2, 3)))
    with pytest.raises(ValueError, match="features"):
        fg.nn.LayerNorm(0)
    with pytest.raises(ValueError, match="eps"):
        fg.nn.LayerNorm(4, eps=-1e-5)


# -- Embedding -----------------------------------------------------------------------------

def test_embedding_matches_torch_and_repeated_indices_accumulate():
    idx = np.array([[1, 3, 1], [0, 1, 4]])
    G = np.random.default_rng(8).standard_normal((2, 3, 2))
    with fg.Graph():
        t = fg.placeholder("t", shape=(None, 3), dtype="int64")
        emb = fg.nn.Embedding(5, 2, seed=0)
        h = emb(t)
        assert h.shape == (None, 3, 2)
        assert [v.name for v in emb.variables] == ["embedding/table"]
        hv, gt = fg.run([h, fg.grad(fg.sum(h * G), emb.table)], {t: idx})
        table = emb.table.value
    temb = torch.nn.Embedding(5, 2, dtype=torch.float64)
    with torch.no_grad():
        temb.weight.copy_(torch.tensor(table))
    th = temb(torch.tensor(idx))
    (th * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(hv, th.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(gt, temb.weight.grad.numpy(), rtol=1e-14, atol=1e-15)
    # row 1 is read three times: its gradient is the sum of the three adjoints
    np.testing.assert_allclose(gt[1], G[0, 0] + G[0, 2] + G[1, 1], rtol=1e-14)
    np.testing.assert_array_equal(gt[2], [0.0, 0.0])


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("bad,value,pos", [([0, 4, 5, 7], 5, "(2,)"),
                                          ([0, -1, 9], -1, "(1,)")])
def test_embedding_refuses_the_first_index_out_of_range(bad, value, pos, codegen):
    with fg.Graph():
        t = fg.placeholder("t", shape=(None,), dtype="int64")
        emb = fg.nn.Embedding(5, 2, seed=0)
        h = emb(t)
        prog = fg.compile(h, codegen=codegen)
        prog(t=np.array([0, 4]))                         # 4 = num − 1: the last valid row
        with pytest.raises(fg.RunError, match=f"index {value} at position "
                                              f"{pos.replace('(', '[(]').replace(')', '[)]')}"
                                              ".*5 rows") as err:
            prog(t=np.array(bad))
        assert isinstance(err.value, IndexError)
        with pytest.raises(fg.ShapeError, match="integers"):
            emb(fg.placeholder("f", shape=(3,)))
        checked = h.inputs[1]                     # the index check is its own node
        assert checked.op.name == "embedding_index"
        fed = np.array([1, 2])
        out = fg.compile(checked, codegen=codegen)(t=fed)
        assert out is not fed and not np.shares_memory(out, fed)


def test_embedding_and_conv_layers_export_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    idx = np.array([[1, 3], [0, 4]])
    with fg.Graph():
        t = fg.placeholder("t", shape=(None, 2), dtype="int64")
        h = fg.nn.Embedding(5, 4, seed=0)(t)                      # (N, 2, 4)
        h = fg.reshape(h, (-1, 1, 2, 4))
        y = fg.nn.Flatten()(fg.nn.Conv2D(2, 2, padding="same", seed=1)(h))
        want = fg.run(y, {t: idx})
        path = fg.export_onnx(y, tmp_path / "emb.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"t": idx})[0], want, rtol=1e-13, atol=1e-13)
    with pytest.raises(Exception, match="invalid index"):   # ONNX has no run-time check:
        sess.run(None, {"t": np.array([[0, -1]])})          # a negative index fails in Gather


def test_a_graph_with_the_new_layers_round_trips_through_a_graph_file(tmp_path):
    rng = np.random.default_rng(9)
    X, idx = rng.standard_normal((2, 1, 6, 6)), np.array([[1, 0], [2, 2]])
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(None, 1, 6, 6))
        t = fg.placeholder("t", shape=(None, 2), dtype="int64")
        h = fg.nn.Conv2D(3, 3, stride=2, padding="same", activation="relu", seed=0)(x)
        h = fg.nn.Flatten()(fg.nn.AvgPool2D(1)(fg.nn.MaxPool2D(2, stride=1)(h)))
        e = fg.nn.Flatten()(fg.nn.Embedding(3, 2, seed=1)(t))
        y = fg.nn.LayerNorm(16)(fg.concatenate([h, e], axis=1))
        s = fg.sum(y * y)
        outs = [y, *fg.grad(s, [x])]
        before = fg.run(outs, {x: X, t: idx})
        path = fg.save_graph(tmp_path / "layers.fg", g)
    g2 = fg.load_graph(path)
    after = fg.run([g2.by_name(n.name) for n in outs], {"x": X, "t": idx})
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
