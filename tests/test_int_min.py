"""fg.min of integers: −max(−x) overflowed at an int's lowest value and folded every
unsigned value but 0 (min of uint8 [0, 3] was 3, of int8 [-128, 5] was 5). Checked
against numpy's own min on each executor, first and later call, edge values included."""
import numpy as np
import pytest

import flowgrad as fg

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def _cases(dt):
    i = np.iinfo(dt)
    yield np.array([[i.min, 5, i.max], [i.max, i.max, i.max - 1]], dt)
    yield np.array([[0, 3, 1], [2, 2, 7]], dt)                  # the reports' values
    yield np.array([[i.max, i.max, i.max], [i.min, i.min, i.min]], dt)


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("dt", INTS)
def test_min_of_integers_is_numpys_min_at_every_edge(dt, codegen):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3), dtype=dt)
        outs = [fg.min(x), fg.min(x, axis=1), fg.min(x, axis=0, keepdims=True)]
        prog = fg.compile(outs, codegen=codegen)
    for a in _cases(dt):
        want = [a.min(), a.min(axis=1), a.min(axis=0, keepdims=True)]
        for _ in range(2):                                         # first and later call
            for got, w in zip(prog(x=a), want):
                assert np.asarray(got).dtype == w.dtype
                np.testing.assert_array_equal(got, w)


def test_min_of_a_run_time_length_and_of_a_batch():
    a = np.array([7, 0, 255, 1], np.uint8)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,), dtype="uint8")
        m = fg.min(x)
        assert fg.run(m, {x: a}) == 0 and fg.run(m, {x: a[2:]}) == 1
    b = np.array([[-128, 4], [3, -7]], np.int8)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype="int8")
        xs = fg.placeholder("xs", shape=(None, 2), dtype="int8")
        got = fg.vectorize(fg.min(x), {x: xs})
        np.testing.assert_array_equal(fg.run(got, {xs: b}), [-128, -7])


def test_min_of_floats_keeps_signed_zeros_and_its_derivative():
    a = np.array([0.0, -0.0, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        m = fg.min(x)
        g = fg.grad(m, x)
        v, d = fg.run([m, g], {x: np.array([3.0, -1.0, 2.0])})
        assert v == -1.0
        np.testing.assert_array_equal(d, [0.0, 1.0, 0.0])
        assert np.signbit(fg.run(m, {x: a}))                   # min(0, -0) is -0 here


@pytest.mark.parametrize("dt", ["int8", "uint8", "int32", "int64"])
def test_an_exported_integer_min_is_numpys_in_onnxruntime(dt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    i = np.iinfo(dt)
    a = np.array([i.min, 5, i.max], dt)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype=dt)
        fg.export_onnx(fg.min(x), tmp_path / "m.onnx")
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": a})[0]
    assert got.dtype == a.dtype and got == a.min()
