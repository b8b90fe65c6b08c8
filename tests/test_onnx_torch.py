"""ONNX export and import checked against PyTorch (float64, autograd) and onnxruntime:
programs with run-time (None) dims exported whole, models torch.onnx writes read back
with their values and gradients."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.io.onnx_export import OnnxExportError

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
torch = pytest.importorskip("torch")


def run_onnx(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_conv2d_with_a_run_time_output_channel_count_exports(tmp_path):
    """A float64 conv2d (im2col form) whose kernel's output channels are a placeholder's
    None: the export wrote that None into its reshapes (a bare TypeError); now the
    reshapes infer it, and the conv, its input and kernel gradients equal torch's."""
    rng = np.random.default_rng(3)
    X, W, B = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), \
        rng.standard_normal(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 6, 5))
        w = fg.placeholder("w", shape=(None, 2, 3, 3))
        b = fg.placeholder("b", shape=(None,))
        y = fg.conv2d(x, w, b, stride=2, padding=(1, 0))
        gx, gw, gb = fg.grad(fg.sum(y * y), [x, w, b])
        path = fg.export_onnx([y, gx, gw, gb], tmp_path / "conv.onnx")
    got = run_onnx(path, {"x": X, "w": W, "b": B})
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (X, W, B))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=(1, 0))
    (ty * ty).sum().backward()
    for g, t in zip(got, [ty.detach(), tx.grad, tw.grad, tb.grad]):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-12, atol=1e-12)


def test_float64_avg_pool_of_run_time_height_is_refused_by_name(tmp_path):
    """float64 average pooling is written as window slices whose ends need the output's
    height: with it unknown the export raised a bare TypeError; now OnnxExportError."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3, None, 7))
        y = fg.avg_pool2d(x, 3, 2)
        with pytest.raises(OnnxExportError, match="avg_pool2d.*height and width"):
            fg.export_onnx(y, tmp_path / "pool.onnx")
