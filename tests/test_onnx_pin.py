"""export_onnx(outputs, path, feed={training: False}): placeholders pinned to constants at
export, and a where on a pinned 0-d condition keeps only the branch it takes (issue 22)."""
import numpy as np
import pytest

import flowgrad as fg

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run_onnx(path, **feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds), [i.name for i in sess.get_inputs()]


def _op_types(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture
def dropout_mlp():
    with fg.Graph() as g:
        x = fg.placeholder("x", (None, 4))
        training = fg.placeholder("training", (), dtype=bool)
        y = fg.nn.MLP([8, 3], activation=fg.relu, seed=0, dropout=0.5, training=training)(x)
        yield g, x, training, y


def test_a_model_with_dropout_exports_in_inference_mode(dropout_mlp, tmp_path):
    g, x, training, y = dropout_mlp
    X = np.random.default_rng(0).normal(size=(5, 4))
    path = fg.export_onnx(y, tmp_path / "m.onnx", feed={training: False})
    (got,), inputs = _run_onnx(path, x=X)
    assert inputs == ["x"]                                  # training is no input any more
    assert not any("Random" in t for t in _op_types(path))  # the dropout branch is gone
    np.testing.assert_allclose(got, fg.run(y, {x: X, training: False}), rtol=1e-13, atol=0)


def test_unpinned_or_pinned_true_dropout_is_refused(dropout_mlp, tmp_path):
    g, x, training, y = dropout_mlp
    with pytest.raises(fg.io.onnx_export.OnnxExportError, match="random_bernoulli"):
        fg.export_onnx(y, tmp_path / "a.onnx")
    with pytest.raises(fg.io.onnx_export.OnnxExportError, match="random_bernoulli"):
        fg.export_onnx(y, tmp_path / "b.onnx", feed={"training": True})


def test_a_pinned_placeholder_becomes_a_constant(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        s = fg.placeholder("scale", ())
        y = fg.sin(x) * s
        path = fg.export_onnx(y, tmp_path / "s.onnx", feed={"scale": 2.5})
        X = np.array([0.1, -2.0, 3.0])
        (got,), inputs = _run_onnx(path, x=X)
        assert inputs == ["x"]
        np.testing.assert_allclose(got, 2.5 * np.sin(X), rtol=1e-15)


def test_a_where_on_a_pinned_array_is_kept_and_right(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        c = fg.placeholder("c", (3,), dtype=bool)
        y = fg.where(c, x * 2, -x)
        mask = np.array([True, False, True])
        path = fg.export_onnx(y, tmp_path / "w.onnx", feed={c: mask})
        X = np.array([1.0, 2.0, 3.0])
        (got,), _ = _run_onnx(path, x=X)
        np.testing.assert_array_equal(got, [2.0, -2.0, 6.0])


def test_an_output_that_is_a_folded_where(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        t = fg.placeholder("t", (), dtype=bool)
        y = fg.where(t, fg.exp(x), x + 1)
        path = fg.export_onnx(y, tmp_path / "o.onnx", feed={t: True})
        (got,), inputs = _run_onnx(path, x=np.array([0.0, 1.0]))
        assert inputs == ["x"]
        np.testing.assert_allclose(got, np.exp([0.0, 1.0]), rtol=1e-15)


def test_bad_pins_are_feed_errors(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        w = fg.variable(np.ones(3), name="w")
        t = fg.placeholder("t", (), dtype=bool)
        y = fg.where(t, x * w, x)
        with pytest.raises(fg.FeedError, match="pins placeholders; 'w' is a variable"):
            fg.export_onnx(y, tmp_path / "a.onnx", feed={w: np.zeros(3)})
        with pytest.raises(fg.FeedError, match="unknown feed 'nope'"):
            fg.export_onnx(y, tmp_path / "b.onnx", feed={"nope": 1.0})
        with pytest.raises(fg.FeedError, match=r"'x' expects shape \(3,\), got \(4,\)"):
            fg.export_onnx(y, tmp_path / "c.onnx", feed={x: np.ones(4)})
        assert not (tmp_path / "a.onnx").exists()
