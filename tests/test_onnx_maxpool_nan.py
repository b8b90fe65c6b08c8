"""max_pool2d's ONNX export with NaN and ±inf in the windows.

onnxruntime's MaxPool skips a NaN that is not first in its window ([1, nan, 2, 3] pools
to 3) and its Indices name another entry than flowgrad's rule (the last NaN); flowgrad,
numpy's maximum and PyTorch give NaN. The export adds a NaN-window mask and moves those
windows' indices, so the value, the adjoint (scatter) and the tangent (gather) match
flowgrad exactly over NaN, +inf and −inf inputs.
"""
import numpy as np
import pytest

import flowgrad as fg

ort = pytest.importorskip("onnxruntime")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _export_and_compare(tmp_path, x_value, size, stride, dtype):
    rng = np.random.default_rng(1)
    with fg.Graph():
        x = fg.placeholder("x", shape=x_value.shape, dtype=dtype)
        t = fg.placeholder("t", shape=x_value.shape, dtype=dtype)
        y = fg.max_pool2d(x, size, stride)
        u = fg.placeholder("u", shape=y.shape, dtype=dtype)
        outs = [y.named("y"), fg.vjp(y, x, u).named("xbar"), fg.jvp(y, x, t).named("ydot")]
        feed = {"x": x_value.astype(dtype),
                "t": rng.standard_normal(x_value.shape).astype(dtype),
                "u": rng.standard_normal(y.shape).astype(dtype)}
        want = fg.run(outs, {x: feed["x"], t: feed["t"], u: feed["u"]})
        path = fg.export_onnx(outs, tmp_path / "mp.onnx")
    got = _session(path).run(None, feed)
    tol = 1e-12 if dtype == "float64" else 1e-6   # overlapping windows add in another order
    for name, w, g in zip(("y", "xbar", "ydot"), want, got):
        assert g.dtype == w.dtype, name
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=name)


def test_the_probe(tmp_path):
    x = np.array([[[[1.0, np.nan], [2.0, 3.0]]]])
    with fg.Graph():
        xp = fg.placeholder("x", shape=(1, 1, 2, 2))
        y = fg.max_pool2d(xp, 2).named("y")
        assert np.isnan(fg.run(y, {xp: x})).all()
        fg.export_onnx(y, tmp_path / "probe.onnx")
    assert np.isnan(_session(tmp_path / "probe.onnx").run(None, {"x": x})[0]).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size, stride", [(2, None), ((2, 3), 1), (3, 2)],
                         ids=["2", "2x3 s1", "3 s2"])
def test_nan_and_infinities_in_windows_match_flowgrad(tmp_path, dtype, size, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8))
    specials = rng.choice([np.nan, np.inf, -np.inf], size=x.shape)
    x = np.where(rng.random(x.shape) < 0.2, specials, x)
    x[0, 0, :3, :3] = np.nan                                  # a window of NaN only
    x[0, 1, :3, :3] = -np.inf                                 # one of −inf only
    x[1, 0, :2, :2] = [[np.inf, np.nan], [-np.inf, np.inf]]   # NaN between infinities
    _export_and_compare(tmp_path, x, size, stride, dtype)


@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_one_nan_in_each_position_of_a_window(tmp_path, first):
    x = np.array([[[[1.0, 5.0], [2.0, 3.0]]]])
    x.reshape(-1)[first] = np.nan
    _export_and_compare(tmp_path, x, 2, None, "float64")


def test_the_export_reads_back_with_nan_windows(tmp_path):
    # the mask's IsNaN has an importer (x ≠ x): the read-back graph pools as flowgrad
    x_value = np.array([[[[1.0, np.nan, 0.5, 2.0], [2.0, 3.0, -np.inf, np.inf]]]])
    with fg.Graph():
        x = fg.placeholder("x", shape=x_value.shape)
        y = fg.max_pool2d(x, 2).named("y")
        want = fg.run(y, {x: x_value})
        fg.export_onnx(y, tmp_path / "mp.onnx")
    g = fg.import_onnx(tmp_path / "mp.onnx")
    got = fg.run(g.by_name("y"), {g.by_name("x"): x_value})
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 0, 0, 0]) and got[0, 0, 0, 1] == np.inf
