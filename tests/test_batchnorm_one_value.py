"""fg.nn.BatchNorm refuses to train on one value per channel, as torch.nn.BatchNorm does
("Expected more than 1 value per channel when training"): a batch of 1 for (N, C), a
batch of 1 with 1x1 images for (N, C, H, W). With a static shape and ``training=True``
it was refused when built already; with a run-time batch length (a ``None`` axis), or a
``training`` placeholder fed True, it trained silently: the variance 0, every output 0,
the running variance moved toward 0. Now the count of values a channel averages is a
checked node (``batch_norm_count``): a RunError that is also a ShapeError, naming the
node and the user's line, on every executor, first call and later; evaluating such a
batch stays fine, and two values a channel train as torch does (float64)."""
import numpy as np
import pytest
import torch

import flowgrad as fg

C = 3


def _x(shape, n, hw=()):
    rng = np.random.default_rng(len(hw) * 10 + n)
    return rng.standard_normal((n, C) + hw) * np.arange(1, C + 1).reshape(
        (1, C) + (1,) * len(hw)) + 5.0


def _build(shape, training):
    x = fg.placeholder("x", shape=shape)
    t = fg.placeholder("training", dtype="bool") if training == "placeholder" else True
    bn = fg.nn.BatchNorm(C, training=t)
    y = bn(x)                                            # the line a refusal names
    return x, bn, y


CASES = [((None, C), ()), ((None, C, 1, 1), (1, 1)), ((None, C, None, None), (1, 1)),
         ((1, C), ()), ((1, C, 1, 1), (1, 1))]
EXECUTORS = [{"codegen": True}, {"codegen": False}, {"verify": True}]


# a static shape with training=True is refused when built (below): not a run-time case
RUN_TIME_CASES = [(shape, hw, training) for shape, hw in CASES
                  for training in (True, "placeholder")
                  if None in shape or training is not True]


@pytest.mark.parametrize("shape, hw, training", RUN_TIME_CASES)
@pytest.mark.parametrize("flags", EXECUTORS)
def test_one_value_per_channel_is_refused_while_training(shape, hw, training, flags):
    with fg.Graph():
        x, bn, y = _build(shape, training)
        prog = fg.compile([y, fg.grad(fg.sum(y), x)], **flags)
        feed = {"x": _x(shape, 1, hw)}
        if training == "placeholder":
            feed["training"] = True
        before = [v.value.copy() for v in bn.state]
        for _ in range(2):                               # first call and later alike
            with pytest.raises(fg.RunError) as info:
                prog(**feed)
            assert isinstance(info.value, fg.ShapeError)
            msg = str(info.value)
            assert "batch_norm_count" in msg and "more than one value per channel" in msg
            assert "got 1 per channel" in msg
            assert f"test_batchnorm_one_value.py:{_LINE}" in msg
            assert info.value.node.op.name == "batch_norm_count"
        for v, b in zip(bn.state, before):               # a refused run writes no state
            np.testing.assert_array_equal(v.value, b)
        if training == "placeholder":                    # evaluating one value is fine
            feed["training"] = False
            got = prog(**feed)[0]
            want = (feed["x"] - 0.0) / np.sqrt(1.0 + 1e-5)   # running stats 0 and 1
            np.testing.assert_allclose(got, want, rtol=1e-14)


_LINE = 29   # the line of ``y = bn(x)`` in _build


def test_the_line_constant_is_the_build_line():
    import inspect
    src, start = inspect.getsourcelines(_build)
    assert "y = bn(x)" in src[_LINE - start]


@pytest.mark.parametrize("shape", [(1, C), (1, C, 1, 1)])
def test_a_static_lone_value_with_training_true_is_refused_when_built(shape):
    with fg.Graph():
        with pytest.raises(fg.ShapeError, match=r"more than one value per channel .*; got 1 per channel"):
            fg.nn.BatchNorm(C)(fg.placeholder("x", shape=shape))


def _torch_train(X, steps=1):
    cls = torch.nn.BatchNorm1d if X.ndim == 2 else torch.nn.BatchNorm2d
    t = cls(C, momentum=0.1, eps=1e-5, dtype=torch.float64).train()
    tx = torch.tensor(X, requires_grad=True)
    y = t(tx)
    (y ** 3).sum().backward()
    return (y.detach().numpy(), tx.grad.numpy(), t.running_mean.numpy(),
            t.running_var.numpy())


@pytest.mark.parametrize("shape, n, hw", [((None, C), 2, ()), ((None, C, None, None), 1, (1, 2)),
                                          ((None, C, None, None), 2, (1, 1))])
@pytest.mark.parametrize("training", [True, "placeholder"])
@pytest.mark.parametrize("flags", EXECUTORS)
def test_two_values_per_channel_train_as_torch(shape, n, hw, training, flags):
    # the boundary: two values a channel (a batch of 2, or one image of 1x2) train
    X = _x(shape, n, hw)
    with fg.Graph():
        x, bn, y = _build(shape, training)
        prog = fg.compile([y, fg.grad(fg.sum(y ** 3), x)], **flags)
        feed = {"x": X} if training is True else {"x": X, "training": True}
        got_y, got_g = prog(**feed)
        running = [v.value for v in bn.state]
    want_y, want_g, rm, rv = _torch_train(X)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(running[0], rm, rtol=1e-13)
    np.testing.assert_allclose(running[1], rv, rtol=1e-13)   # unbiased: n/(n − 1) = 2


def test_the_dask_backend_refuses_alike():
    pytest.importorskip("dask")
    for training in (True, "placeholder"):
        with fg.Graph():
            x, bn, y = _build((None, C), training)
            prog = fg.compile(y, backend="dask")
            feed = {"x": _x((None, C), 1)}
            if training == "placeholder":
                feed["training"] = True
            with pytest.raises(fg.RunError, match="more than one value per channel") as info:
                prog(**feed)
            assert isinstance(info.value, fg.ShapeError)
            feed["x"] = _x((None, C), 2)
            np.testing.assert_allclose(prog(**feed), _torch_train(feed["x"])[0], rtol=1e-12)


def test_vectorize_counts_per_example():
    # per-example batch norm over (None, C) examples: the count is each example's rows
    X = _x((None, C), 4).reshape(2, 2, C)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, C))
        y = fg.nn.BatchNorm(C)(x)
        xs = fg.placeholder("xs", shape=(2, 2, C))
        got = fg.run(fg.vectorize(y, {x: xs}), xs=X)
    for k in range(2):
        np.testing.assert_allclose(got[k], _torch_train(X[k])[0], rtol=1e-12, atol=1e-12)


def test_an_exported_training_graph_refuses_alike(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    with fg.Graph():
        x, bn, y = _build((None, C), True)
        path = fg.export_onnx(y, tmp_path / "bn.onnx")
        X = _x((None, C), 2)
        want = _torch_train(X)[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": X})[0], want, rtol=1e-12, atol=1e-12)
    with pytest.raises(Exception, match="one_value_per_channel_while_training"):
        sess.run(None, {"x": X[:1]})      # ONNX has no assert: a Gather named for the check
