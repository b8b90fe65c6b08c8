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
