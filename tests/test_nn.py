"""fg.nn: layers, initialisers and dropout."""
import numpy as np
import pytest

import flowgrad as fg


# -- initialisers -----------------------------------------------------------------------

@pytest.mark.parametrize("name,var", [
    ("glorot_uniform", lambda i, o: 2 / (i + o)), ("glorot_normal", lambda i, o: 2 / (i + o)),
    ("xavier_uniform", lambda i, o: 2 / (i + o)), ("xavier_normal", lambda i, o: 2 / (i + o)),
    ("he_uniform", lambda i, o: 2 / i), ("he_normal", lambda i, o: 2 / i),
])
def test_variance_scaling_initialisers(name, var):
    fan_in, fan_out = 1000, 300
    w = getattr(fg.nn.init, name)((fan_in, fan_out), seed=0)
    assert w.shape == (fan_in, fan_out) and w.dtype == np.float64
    # 300 000 draws: the sample variance is within 1 % of the target (≈ 5 standard errors)
    assert w.var() == pytest.approx(var(fan_in, fan_out), rel=0.01)
    assert abs(w.mean()) < 0.01 * np.sqrt(var(fan_in, fan_out))


def test_uniform_bounds_are_exact():
    fan_in, fan_out = 400, 200
    a = np.sqrt(6 / (fan_in + fan_out))
    w = fg.nn.init.glorot_uniform((fan_in, fan_out), seed=1)
    assert -a <= w.min() and w.max() < a and w.min() < -0.99 * a and w.max() > 0.99 * a
    a = np.sqrt(6 / fan_in)
    w = fg.nn.init.he_uniform((fan_in, fan_out), seed=1)
    assert -a <= w.min() and w.max() < a and w.max() > 0.99 * a
    u = fg.nn.init.uniform((1000,), low=2.0, high=3.0, seed=0)
    assert 2.0 <= u.min() and u.max() < 3.0


def test_initialisers_seeds_and_generators():
    init = fg.nn.init
    np.testing.assert_array_equal(init.he_normal((3, 4), seed=5), init.he_normal((3, 4), seed=5))
    gen = np.random.default_rng(5)
    a, b = init.normal((3,), seed=gen), init.normal((3,), seed=gen)
    assert not np.array_equal(a, b)                    # one stream, drawn in sequence
    gen = np.random.default_rng(5)
    np.testing.assert_array_equal(a, gen.standard_normal(3))
    assert init.zeros((2, 2)).sum() == 0 and init.ones(3).sum() == 3
    np.testing.assert_array_equal(init.constant((2,), 1.5), [1.5, 1.5])
    assert init.glorot_uniform((5, 5), dtype="float32").dtype == np.float32
    assert init.fans((3, 4, 5)) == (12, 15) and init.fans((7,)) == (7, 7)
    assert init.get("he") is init.he_normal and init.get("glorot") is init.glorot_uniform
    with pytest.raises(ValueError, match="unknown initialiser"):
        init.get("kaiming_magic")
    with pytest.raises(TypeError, match="seed"):
        init.normal((2,), seed="zero")


# -- Dense, Sequential, MLP ---------------------------------------------------------------

def test_dense_builds_in_a_scope_sized_from_the_input():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 5))
        layer = fg.nn.Dense(3, activation=fg.tanh, seed=0)
        assert layer.variables == [] and not layer.built
        y = layer(x)
        assert y.shape == (None, 3)
        W, b = layer.variables
        assert (W.name, W.shape, b.name, b.shape) == ("dense/W", (5, 3), "dense/b", (3,))
        assert layer.scope == ("dense",) and y.scope == ("dense",)
        assert np.all(b.value == 0)
        X = np.random.default_rng(0).normal(size=(4, 5))
        np.testing.assert_allclose(fg.run(y, {x: X}), np.tanh(X @ W.value + b.value),
                                   rtol=1e-14)
        # a second call reuses the variables; a second layer gets the next scope
        y2 = layer(x * 2.0)
        assert len(layer.variables) == 2 and y2.scope == ("dense",)
        other = fg.nn.Dense(2, use_bias=False)
        other(y)
        assert [v.name for v in other.variables] == ["dense_1/W"]
        with fg.name_scope("encoder"):
            inner = fg.nn.Dense(2, name="proj")
            inner(x)
        assert inner.variables[0].name == "encoder/proj/W"
        assert "dense" in repr(layer) and "18 parameters" in repr(layer)
        assert g.by_name("dense/W") is W


def test_dense_errors_and_dtypes():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, None))
        with pytest.raises(fg.ShapeError, match="last dimension"):
            fg.nn.Dense(2)(x)
        with pytest.raises(fg.ShapeError, match="feature axis"):
            fg.nn.Dense(2)(fg.placeholder("s", shape=()))
        with pytest.raises(ValueError, match="units"):
            fg.nn.Dense(0)
        with pytest.raises(ValueError, match="activation"):
            fg.nn.Dense(2, activation="swishy")
        f32 = fg.placeholder("f", shape=(None, 4), dtype="float32")
        layer = fg.nn.Dense(2, activation="relu")
        assert layer(f32).dtype == np.float32 and layer.W.dtype == np.float32
    with fg.Graph():
        layer = fg.nn.Dense(2)
        layer(fg.placeholder("x", shape=(None, 3)))
    with fg.Graph():
        with pytest.raises(fg.GraphError, match="built in"):
            layer(fg.placeholder("x", shape=(None, 3)))


def _mlp_weights(seed):
    with fg.Graph():
        model = fg.nn.MLP([8, 8, 3], activation=fg.relu, seed=seed)
        model(fg.placeholder("x", shape=(None, 4)))
        return [v.value for v in model.variables]


def test_a_model_built_twice_with_one_seed_has_identical_weights():
    a, b, c = _mlp_weights(3), _mlp_weights(3), _mlp_weights(4)
    assert len(a) == 6
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0][:, :4], a[2][:4, :4])   # layers draw from one stream


def test_mlp_shapes_init_and_summary():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 64))
        model = fg.nn.MLP([32, 10], activation=fg.relu, seed=0)
        z = model(x)
        assert z.shape == (None, 10)
        assert [v.shape for v in model.variables] == [(64, 32), (32,), (32, 10), (10,)]
        assert model.layers[0].init is fg.nn.init.he_normal     # ReLU → He
        assert model.n_params == 64 * 32 + 32 + 32 * 10 + 10
        s = fg.summary(g)
        assert s.total == model.n_params == fg.summary(z).total == fg.summary(model).total
        assert s.scopes == {"dense": 64 * 32 + 32, "dense_1": 32 * 10 + 10}
        assert [r[0] for r in s.rows] == ["dense/W", "dense/b", "dense_1/W", "dense_1/b"]
        text = str(s)
        assert "dense/W" in text and "(64, 32)" in text and "2,080" in text
        assert "total: 2,410 parameters in 4 variables, 2 scopes" in text
        html = s._repr_html_()
        assert html.startswith("<table>") and "<b>dense_1</b>" in html and "2,410" in html
        seq = fg.nn.Sequential([fg.nn.Dense(4), fg.relu, fg.nn.Dense(1)], name="head")
        seq(z)
        assert [v.name for v in seq.variables] == ["head/dense/W", "head/dense/b",
                                                   "head/dense_1/W", "head/dense_1/b"]
        only = fg.summary(g)
        assert only.scopes["head/dense"] == 44 and only.total == s.total + 44 + 5


def test_layers_draw_as_collapsible_scopes():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,), dtype="int64")
        model = fg.nn.MLP([4, 2], activation=fg.relu, seed=0)
        loss = fg.softmax_cross_entropy(model(x), t)
        tr = fg.compile(loss).trace(x=np.ones((2, 3)), t=np.array([0, 1]))
        src = fg.viz.draw(tr).source
        assert "cluster_dense" in src and "cluster_dense_1" in src
        boxed = fg.viz.draw(tr, collapse=True).source
        assert "s_dense" in boxed and "s_dense_1" in boxed
        # the parameters live inside the boxes: no separate node for dense/W
        W = model.layers[0].W
        assert f"n{W.id} " not in boxed and f"n{W.id}" in src


# -- dropout --------------------------------------------------------------------------------

def test_dropout_false_is_the_input_itself():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 3))
        n = len(g)
        assert fg.nn.dropout(x, 0.5, training=False) is x
        assert fg.nn.dropout(x, 0.0, training=True) is x
        assert len(g) == n


def test_dropout_gradient_uses_the_forward_mask():
    rate = 0.25
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 50))
        y = fg.nn.dropout(x, rate, training=True, seed=0)
        mask = g.by_name("dropout/mask")
        loss = fg.sum(y * y)
        gx = fg.grad(loss, x)
        X = np.random.default_rng(1).normal(size=(40, 50))
        prog = fg.compile([y, gx, mask])
        for _ in range(2):                           # a fresh mask per run, shared in it
            yv, gv, mv = prog(x=X)
            assert set(np.unique(mv)) == {0.0, 1.0}
            np.testing.assert_array_equal(yv, X * (mv * (1 / (1 - rate))))
            np.testing.assert_allclose(gv, 2 * X * mv / (1 - rate) ** 2, rtol=1e-14)
            assert 0.2 < 1 - mv.mean() < 0.3
        tr = fg.compile([loss, mask]).trace(x=X)   # adjoints of the scalar loss
        m = tr[mask]
        np.testing.assert_array_equal(tr[y] == 0, m == 0)
        np.testing.assert_allclose(tr.adjoint(x), 2 * X * m / (1 - rate) ** 2, rtol=1e-14)


def test_dropout_with_a_training_placeholder():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1000))
        training = fg.placeholder("training", shape=(), dtype="bool")
        y = fg.nn.dropout(x, 0.5, training=training, seed=0)
        gx = fg.grad(fg.sum(y), x)
        X = np.ones((20, 1000))
        yv, gv = fg.compile([y, gx])(x=X, training=False)
        np.testing.assert_array_equal(yv, X)
        np.testing.assert_array_equal(gv, np.ones_like(X))
        yv, gv = fg.compile([y, gx])(x=X, training=True)
        assert set(np.unique(yv)) == {0.0, 2.0}
        np.testing.assert_array_equal(gv, yv)          # x = 1: the scaled mask
        assert abs(yv.mean() - 1.0) < 0.02             # expectation preserved
        with pytest.raises(fg.ShapeError, match="0-d bool"):
            fg.nn.dropout(x, 0.5, training=fg.placeholder("f", shape=()))
        with pytest.raises(ValueError, match="rate"):
            fg.nn.dropout(x, 1.0)
        with pytest.raises(TypeError, match="training"):
            fg.nn.dropout(x, 0.5, training="yes")


def test_mlp_with_dropout_layers():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 6))
        training = fg.placeholder("training", shape=(), dtype="bool")
        model = fg.nn.MLP([16, 2], activation="tanh", dropout=0.5, training=training, seed=0)
        z = model(x)
        assert isinstance(model.layers[1], fg.nn.Dropout)
        X = np.ones((3, 6))
        prog = fg.compile(z)
        np.testing.assert_array_equal(prog(x=X, training=False), prog(x=X, training=False))
        assert not np.array_equal(prog(x=X, training=True), prog(x=X, training=True))
