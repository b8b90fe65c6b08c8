"""Integer and bool inputs at their dtype's edges (min, max, 0, ±1), checked against
numpy's (or scipy's / sklearn's) own answer on the reference interpreter and generated
code, first and later call. Each case below was silently wrong before its fix:

* ``norm`` of ints computed x·x, |x| and the sums in the int's own dtype (‖int8
  [−128, 127]‖ was 5.83; ‖·‖∞ 127 of dtype int8): numpy.linalg.norm takes them as float64;
* ``clip`` with one bound missing used the end of x's dtype, not of the result's (an
  int8 x clipped below by a uint8 node was cut at 127); a Python-int bound past x's
  range, which numpy.clip leaves out, failed at run time;
* ``softmax``/``log_softmax`` of large ints skipped the max shift (softmax of uint64
  [2⁶⁴−2, 2⁶⁴−1] was [1, 1]);
* ``mse`` of two ints subtracted them in their own dtype (uint8 0 − 1 = 255: a loss of
  65025, not 1), and of two bools failed;
* a Python int fed to an unsigned placeholder was refused even when it fits.
"""
import numpy as np
import pytest
import scipy.special

import flowgrad as fg

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def edges(dt):
    if dt == "bool":
        return np.array([False, True, True])
    i = np.iinfo(dt)
    vals = {int(i.min), int(i.max), 0, 1, int(i.min) + 1, int(i.max) - 1}
    if i.min < 0:
        vals.add(-1)
    return np.array(sorted(vals), dt)


def assert_numpys(prog, feed, want):
    for _ in range(2):                               # first and later call
        got = prog(**feed)
        for g, w in zip(got, want):
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=0)


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("dt", INTS + ["bool"])
def test_norm_of_ints_is_numpys_in_float64(dt, codegen):
    a = edges(dt)
    m = np.stack([a, a[::-1]])
    with fg.Graph():
        x = fg.placeholder("x", shape=a.shape, dtype=dt)
        y = fg.placeholder("y", shape=m.shape, dtype=dt)
        outs = [fg.norm(x), fg.norm(x, 1), fg.norm(x, np.inf), fg.norm(y, axis=1),
                fg.norm(y, "fro"), fg.norm(y, 1), fg.norm(y, np.inf), fg.norm(y, 2)]
        prog = fg.compile(outs, codegen=codegen)
    n = np.linalg.norm
    want = [n(a), n(a, 1), n(a, np.inf), n(m, axis=1), n(m, "fro"), n(m, 1), n(m, np.inf),
            n(m, 2)]
    assert_numpys(prog, {"x": a, "y": m}, want)


@pytest.mark.parametrize("codegen", [False, True])
def test_clip_by_a_node_of_another_dtype_has_no_other_bound(codegen):
    a = edges("int8")
    lo = np.array([0, 200, 255, 3, 128, 1, 2], np.uint8)      # 200 > int8's 127
    hi = np.array([-129, 5, 300, -1, 0, 7, 1000], np.int16)
    with fg.Graph():
        x = fg.placeholder("x", shape=(7,), dtype="int8")
        lo_ = fg.placeholder("lo", shape=(7,), dtype="uint8")
        hi_ = fg.placeholder("hi", shape=(7,), dtype="int16")
        b = fg.placeholder("b", shape=(3,), dtype="bool")
        outs = [fg.clip(x, lo_), fg.clip(x, None, hi_), fg.clip(x, fg.astype(lo_, "float64")),
                fg.clip(b, 1.5)]
        prog = fg.compile(outs, codegen=codegen)
    bools = edges("bool")
    want = [np.clip(a, lo, None), np.clip(a, None, hi), np.clip(a, lo.astype(float), None),
            np.clip(bools, 1.5, None)]
    assert want[0][1] == 200 and want[3][0] == 1.5
    assert_numpys(prog, {"x": a, "lo": lo, "hi": hi, "b": bools}, want)


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("dt", INTS)
def test_clip_by_python_ints_past_the_range_binds_nothing(dt, codegen):
    a = edges(dt)
    i = np.iinfo(dt)
    bounds = [(int(i.min) - 1, None), (None, int(i.max) + 1), (int(i.min) - 1, int(i.max) + 1),
              (-(2 ** 70), 2), (1, 2 ** 64)]
    with fg.Graph():
        x = fg.placeholder("x", shape=a.shape, dtype=dt)
        prog = fg.compile([fg.clip(x, lo, hi) for lo, hi in bounds], codegen=codegen)
    assert_numpys(prog, {"x": a}, [np.clip(a, lo, hi) for lo, hi in bounds])


def test_clip_by_a_python_int_that_would_bind_past_the_range_is_refused():
    # numpy raises OverflowError for np.clip(uint8, 256, None): flowgrad a typed error
    a = edges("uint8")
    with pytest.raises(OverflowError):
        np.clip(a, 256, None)
    with fg.Graph():
        x = fg.placeholder("x", shape=a.shape, dtype="uint8")
        ok = fg.run(fg.clip(x, 255, None), {x: a})            # the last bound that fits
        np.testing.assert_array_equal(ok, np.clip(a, 255, None))
        with pytest.raises(fg.FlowgradError):
            fg.run(fg.clip(x, 256, None), {x: a})


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("dt", INTS + ["bool"])
def test_softmax_of_ints_is_scipys_in_float64(dt, codegen):
    a = edges(dt)
    m = np.stack([a, a[::-1]])
    with fg.Graph():
        x = fg.placeholder("x", shape=m.shape, dtype=dt)
        prog = fg.compile([fg.softmax(x), fg.log_softmax(x), fg.softmax(x, axis=0)],
                          codegen=codegen)
    f = m.astype(np.float64)
    want = [scipy.special.softmax(f, axis=-1), scipy.special.log_softmax(f, axis=-1),
            scipy.special.softmax(f, axis=0)]
    if dt == "uint64":   # 2⁶⁴−2 and 2⁶⁴−1 are one float64: half each
        np.testing.assert_allclose(want[0][0, -2:], [0.5, 0.5])
    assert_numpys(prog, {"x": m}, want)


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("dt", INTS + ["bool"])
def test_mse_of_ints_subtracts_in_float64(dt, codegen):
    from sklearn.metrics import mean_squared_error
    a = edges(dt)
    b = a[::-1].copy()
    with fg.Graph():
        y = fg.placeholder("y", shape=a.shape, dtype=dt)
        t = fg.placeholder("t", shape=a.shape, dtype=dt)
        outs = [fg.mse(y, t), fg.mse(y, t, reduction="sum"), fg.mse(y, t, reduction="none"),
                fg.mse(y, 1), y - t if dt != "bool" else y]   # a later y − t: shared residual
        prog = fg.compile(outs, codegen=codegen)
    d = a.astype(np.float64) - b.astype(np.float64)
    want = [mean_squared_error(a, b), np.sum(d * d), d * d,
            np.mean((a.astype(np.float64) - 1) ** 2), a - b if dt != "bool" else a]
    assert_numpys(prog, {"y": a, "t": b}, want)


def test_mse_of_uint8_images_off_by_one():
    with fg.Graph():
        y = fg.placeholder("y", shape=(3,), dtype="uint8")
        t = fg.placeholder("t", shape=(3,), dtype="uint8")
        got = fg.run(fg.mse(y, t), {y: np.array([0, 1, 2], np.uint8),
                                    t: np.array([1, 1, 1], np.uint8)})
        assert got == pytest.approx(2 / 3)                   # was 65026/3


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("dt", INTS)
def test_a_python_int_feeds_any_int_placeholder_it_fits(dt, codegen):
    i = np.iinfo(dt)
    with fg.Graph():
        x = fg.placeholder("x", shape=(), dtype=dt)
        prog = fg.compile([x + 0, x > 0], codegen=codegen)
    for v in (int(i.min), 0, 1, 3, int(i.max)):
        for _ in range(2):
            got, pos = prog(x=v)
            want = np.array(v, dt)
            assert got.dtype == want.dtype and got == want and pos == (want > 0)
    for bad in (int(i.min) - 1, int(i.max) + 1):             # the first values past the range
        with pytest.raises(fg.FeedError):
            prog(x=bad)
    if dt.startswith("u"):                                  # a numpy int stays strongly typed
        with pytest.raises(fg.FeedError):
            prog(x=np.int64(3))


@pytest.mark.parametrize("dt", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                "uint64"])
def test_a_python_int_out_of_the_dtypes_bounds_is_refused_when_built_as_numpy_2_refuses(dt):
    # numpy 2 raises OverflowError for uint8 + 300; flowgrad used to build the node and
    # fail only when it ran. The boundary: the dtype's max and min are taken, one past
    # them is refused, and a comparison (which numpy 2 allows) is still built.
    info = np.iinfo(dt)
    a = np.array([0, 1], dt)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype=dt)
        for value in (int(info.max), int(info.min)):
            got = fg.run(fg.maximum(x, value), {x: a})
            np.testing.assert_array_equal(got, np.maximum(a, value))
            assert got.dtype == np.maximum(a, value).dtype
        for value in (int(info.max) + 1, int(info.min) - 1):
            with pytest.raises(OverflowError):
                np.maximum(a, value)
            with pytest.raises(fg.ArgumentError, match=f"Python integer {value} is out "
                                                       f"of bounds for {dt}"):
                fg.maximum(x, value)
            with pytest.raises(fg.ArgumentError, match="out of bounds"):
                value + x
            np.testing.assert_array_equal(fg.run(fg.less(x, value), {x: a}), a < value)
