"""Special values (±0, ±inf, NaN, subnormals, the extremes) on every executor, bit for bit
against the raw graph evaluated node by node with each op's own numpy kernel
(tests/special_values.py): what the QA probe on special values found, one section each,
then the fuzzed property itself."""
import warnings

import numpy as np
import pytest

import flowgrad as fg
from special_values import difference, raw_eval

EXECUTORS = {"generated": {}, "interpreter": {"codegen": False},
             "checked": {"check_numerics": True}, "verify": {"verify": True}}


def _calls(prog, feed, n=10):
    """The 1st, 2nd and ``n``th call's outputs (numba regions compile on the second call,
    the scalar tier's source is written on the second)."""
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(1, n + 1):
            out = prog(feed)
            if k in (1, 2, n):
                got.append(out)
    return got


def _finite(values):
    return all(np.all(np.isfinite(v)) for v in values
               if np.asarray(v).dtype.kind in "fc")


def assert_bitwise(outs, feed, executors=EXECUTORS):
    """Every executor's outputs (1st, 2nd and 10th call) are the raw graph's, bit for
    bit, with the nodes' dtypes; the checked interpreter may refuse a NaN or ±inf."""
    want = raw_eval(outs, feed)
    for name, kw in executors.items():
        prog = fg.compile(outs, **kw)
        if name == "checked" and not _finite(list(feed.values()) + want):
            with pytest.raises(fg.NumericsError):
                _calls(prog, feed)
            continue
        for call, got in enumerate(_calls(prog, feed)):
            for o, g, w in zip(outs, got, want):
                d = difference(g, w)
                assert d is None, (name, call, o, d)
                assert np.asarray(g).dtype == o.dtype, (name, call, o)


# -- 1. the scalar path's int zero: −relu(−1) is −0.0 -----------------------------------------

@pytest.mark.parametrize("make", [
    lambda x: -fg.relu(x), lambda x: -fg.clip(x, 0, 1), lambda x: -fg.where(x > 0, x, 0),
    lambda x: -fg.maximum(x, 0), lambda x: -fg.where(x > 0, x, False)],
    ids=["relu", "clip", "where_int", "maximum_int", "where_bool"])
def test_scalar_path_keeps_the_sign_of_a_zero_from_an_int_constant(make):
    """The scalar code kept weak int (and bool) constants, and relu's max(x, 0), as Python
    ints: −0 is 0, where numpy's float64 gives −0.0."""
    with fg.Graph():
        x = fg.placeholder("x")
        y = make(x)
    for v in (-1.0, -0.0, 0.0, 2.0):
        assert_bitwise([y], {x: np.array(v)})


# -- 2. a negation of integers is not absorbed into a float reader ------------------------------

@pytest.mark.parametrize("make", [
    lambda a, b: a + (-b), lambda a, b: a - (-b), lambda a, b: (-b) * (-a),
    lambda a, b: -((-b) * a)],
    ids=["add_neg", "sub_neg", "neg_mul_neg", "neg_of_neg_mul"])
@pytest.mark.parametrize("int_dtype", ["int32", "int64"])
def test_integer_negation_is_promoted_after_it_is_taken(make, int_dtype):
    """a + (−b) → a − b (and the other negation rewrites) took −b as exact. For an
    integer b read by a float op it is not: −0 is +0.0 once promoted (−0.0 + (−0) is
    +0.0, −0.0 − 0 is −0.0), and −INT_MIN wraps to INT_MIN (1 + (−b) is 1 − 2³¹, where
    1 − b is 1 + 2³¹)."""
    info = np.iinfo(int_dtype)
    with fg.Graph():
        a = fg.placeholder("a", shape=(3,))
        b = fg.placeholder("b", shape=(3,), dtype=int_dtype)
        y = make(a, b)
    feed = {a: np.array([-0.0, 1.0, 0.0]), b: np.array([0, info.min, 0], dtype=int_dtype)}
    assert_bitwise([y], feed)


# -- 3. a fill of fills computed with numpy's weak Python numbers --------------------------------

def test_fill_arithmetic_with_a_python_number_rounds_as_numpy_does():
    """A static fill too large to fold into a constant (a ``full`` step) had its value
    computed from 0-d arrays: the weak 2.345 became a float64 array, so float32 fill ·
    2.345 was float64 arithmetic rounded once (220.43, not numpy's 220.43001); an int8
    fill + 100 was computed in int64 and the compile crashed on 200 with OverflowError."""
    n = 300                                  # 90 000 entries > simplify.FOLD_MAX
    with fg.Graph():
        x = fg.placeholder("x", shape=(n, n), dtype="float32")
        i = fg.placeholder("i", shape=(n, n), dtype="int8")
        outs = [(fg.zeros_like(x) + 94.0) * 2.345, (fg.zeros_like(x) + 1.0) / 3.0,
                (fg.zeros_like(i) + 100) + 100, fg.ones_like(x) * 1e-30 * 1e-20]
    feed = {x: np.ones((n, n), np.float32), i: np.ones((n, n), np.int8)}
    want = raw_eval(outs, feed)
    assert want[0][0, 0] == np.float32(94.0) * np.float32(2.345)
    assert want[2][0, 0] == -56
    assert_bitwise(outs, feed, {"generated": {}, "interpreter": {"codegen": False}})


# -- 4. generated code's lean mean sums as np.mean does ------------------------------------------

def test_lean_mean_of_integers_and_float16_sums_as_numpy_mean():
    """The generated code's lean ``mean`` kernel summed with add.reduce in x's own dtype;
    np.mean (the op's kernel) sums integers and bools in float64 and float16 in float32:
    the mean of [2⁶², …] came out −1.5e18 (int64 wrapped) and of float16 60000s inf."""
    with fg.Graph():
        i = fg.placeholder("i", shape=(2, 3), dtype="int64")
        b = fg.placeholder("b", shape=(2, 3), dtype="bool")
        h = fg.placeholder("h", shape=(2, 3), dtype="float16")
        outs = [fg.mean(i), fg.mean(i, axis=0), fg.mean(i, axis=1, keepdims=True),
                fg.mean(b), fg.mean(h), fg.mean(h, axis=1)]
    feed = {i: np.full((2, 3), 2 ** 62, np.int64), b: np.ones((2, 3), bool),
            h: np.full((2, 3), 60000, np.float16)}
    want = raw_eval(outs, feed)
    assert want[0] == 2.0 ** 62 and want[4] == np.float16(60000)
    assert_bitwise(outs, feed, {"generated": {}, "interpreter": {"codegen": False}})


# -- 5. the scalar path's bools ------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda x, p: (p + p) * x, lambda x, p: ((x > 0) + (x > 1)) * 1.0,
    lambda x, p: fg.maximum(p, x > 1) * x, lambda x, p: (p * (x > 0)) + x,
    lambda x, p: fg.where(x > 0, x > 1, x), lambda x, p: fg.where(x > 0, x > 1, 2.0) * x,
    lambda x, p: p * x + fg.where(p, x, 1.0)],
    ids=["bool_add", "comparison_add", "bool_maximum", "bool_mul", "where_bool_out",
         "where_bool_branch", "mixed_ok"])
def test_scalar_path_computes_bools_as_numpy(make):
    """The scalar code took every bool for a Python number: numpy's True + True is True
    (bool arithmetic stays bool), the scalar code's 1.0 + 1.0 was 2.0; and a where
    picking a comparison's bool handed back a bool array for a float64 node."""
    with fg.Graph():
        x = fg.placeholder("x")
        p = fg.placeholder("p", dtype="bool")
        y = make(x, p)
    for xv in (3.0, 0.5, -0.0, np.nan):
        assert_bitwise([y], {x: np.array(xv), p: np.array(True)})


def test_scalar_warm_up_loop_hands_back_float64_where_a_where_picks_a_bool():
    """The first call of a long scalar plan runs scalar_tier's loop: its arrays are the
    node's float64 too."""
    from flowgrad.engine import scalar_plan
    with fg.Graph():
        x = fg.placeholder("x")
        h = x
        for _ in range(scalar_plan.LAZY_LINES // 2 + 1):
            h = h * 1.0001 + 0.5
        y = fg.where(h > 0, h > 1, h)
    prog = fg.compile(y)
    assert prog.generated.scalar is not None and len(prog.plan.steps) > scalar_plan.LAZY_LINES
    assert_bitwise([y], {x: np.array(2.0)}, {"generated": {}})


# -- 6. pow's C-level kernel is numpy's ufunc -----------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pow_of_a_numpy_scalar_is_the_ufunc(dtype):
    """The interpreter and the array code ran pow as ``operator.pow``; a 0-d step hands
    on a numpy scalar, whose ``**`` is numpy's scalar power (C's pow): (−0.0) ** 0.5 was
    +0.0 and (−inf) ** 0.5 inf there, where the op's kernel np.power (and the scalar
    path's sqrt) give −0.0 and nan."""
    with fg.Graph():
        x = fg.placeholder("x", dtype=dtype)
        y = (-x) ** 0.5
        outs = [y, fg.grad(y, [x])[0]]
    for v in (0.0, np.inf, -4.0, 4.0):
        feed = {x: np.array(v, dtype)}
        want = raw_eval(outs, feed)
        assert np.isnan(want[0]) == (v > 0)
        assert v != 0.0 or (want[0] == 0 and np.signbit(want[0]))      # sqrt(−0.0) = −0.0
        assert_bitwise(outs, feed)


# -- 7. int and bool logits computed in the declared float dtype ----------------------------------

@pytest.mark.parametrize("z_dtype,t_dtype,want_dtype", [
    ("int8", "int8", "float64"), ("uint8", "float64", "float64"), ("int16", "int16", "float64"),
    ("int16", "float32", "float32"), ("bool", "float64", "float64"), ("uint8", "float32", "float32")])
def test_bce_with_logits_of_integer_logits_is_the_declared_float(z_dtype, t_dtype, want_dtype):
    """bce_with_logits' kernel took exp(−|z|) of z as given: an int8 z in float16 (the
    node declares float64), −|z| of a uint8 wrapped (−|2| = 254, so the loss was inf),
    of a bool raised TypeError. The fused σ kernel beside it (and softplus's) too."""
    zv = np.array([1, 2, 0, 1], dtype=z_dtype)
    tv = np.array([1, 0, 1, 1], dtype=t_dtype)
    with fg.Graph():
        z = fg.placeholder("z", shape=(4,), dtype=z_dtype)
        t = fg.placeholder("t", shape=(4,), dtype=t_dtype)
        outs = [fg.bce_with_logits(z, t, reduction="none"), fg.bce_with_logits(z, t),
                fg.bce_with_logits(z, t) + fg.sum(fg.sigmoid(z)),
                fg.softplus(z) + fg.sigmoid(z)]
    z64, t64 = zv.astype(np.float64), tv.astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(-z64))
    loss = np.logaddexp(0.0, z64) - z64 * t64
    want = [loss, loss.mean(), loss.mean() + sig.sum(), np.logaddexp(0.0, z64) + sig]
    dtypes = [want_dtype, want_dtype, "float64", "float64"]
    for kw in ({}, {"codegen": False}):
        got = fg.compile(outs, **kw)({z: zv, t: tv})
        for g, w, d, o in zip(got, want, dtypes, outs):
            assert np.asarray(g).dtype == np.dtype(d) == o.dtype, (kw, o)
            np.testing.assert_allclose(g, w, rtol=1e-6 if want_dtype == "float32" else 1e-14)



# -- 8. (−1)·x of an unsigned x is numpy's error, not a negation -----------------------------------

@pytest.mark.parametrize("make", [lambda u: u * -1, lambda u: -1 * u], ids=["x_times", "times_x"])
def test_times_minus_one_of_unsigned_integers_is_refused_as_numpy_refuses(make):
    """(−1)·x → −x applied to a uint8 x: numpy refuses x · (−1) (OverflowError: −1 is
    out of uint8's range); the simplified program handed back −x wrapped ([255, 254]).
    The node is now refused when it is built, before any executor or rewrite sees it."""
    with pytest.raises(OverflowError):
        make(np.array([1, 2], np.uint8))
    with fg.Graph():
        u = fg.placeholder("u", shape=(2,), dtype="uint8")
        with pytest.raises(fg.ArgumentError, match="-1 is out of bounds for uint8"):
            make(u)
    with fg.Graph():                 # a signed x: the rewrite stands, and wraps as numpy does
        i = fg.placeholder("i", shape=(2,), dtype="int8")
        y = i * -1
    assert_bitwise([y], {i: np.array([-128, 5], np.int8)})

# -- the property: random graphs of special values, every executor, every call ------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402

from flowgrad.engine import simplify  # noqa: E402
from fuzz_graphs import special_programs  # noqa: E402
from test_fuzz import PROFILE  # noqa: E402

#: the scalar path computes exp, log, tanh … with Python's math, within a few ulps of
#: numpy's each (engine/executors/generated.py), which later steps may amplify; its NaNs,
#: infinities and signs of zero are still numpy's exactly
SCALAR_SLACK = 1 << 20


def _run_all(outs, feed):
    """{(executor, simplified?, call): outputs or the exception}, and the slack per key."""
    got, slack = {}, {}
    for simplified in (True, False):
        for name, kw in EXECUTORS.items():
            if simplified:
                prog = fg.compile(outs, **kw)
            else:
                with simplify.disabled():
                    prog = fg.compile(outs, **kw)
            scalar = prog.generated is not None and prog.generated.scalar is not None
            try:
                calls = _calls(prog, feed)
            except Exception as exc:         # every call raises alike (checked below)
                calls = [exc] * 3
            for call, out in enumerate(calls):
                got[(name, simplified, call)] = out
                slack[(name, simplified, call)] = SCALAR_SLACK if scalar and \
                    name in ("generated", "verify") else 0
    return got, slack


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 2, 10),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(special_programs())
def test_special_values_agree_on_every_executor_and_call(program):
    """The unsimplified program, on every executor, is the raw graph bit for bit (the
    scalar path: its NaNs, infinities and zeros' signs exactly); the simplified one (whose
    symbolic conventions — x·0, x − x, 0/x → 0 — may differ from the raw graph) is
    the same on every executor and call as on the reference interpreter. An input the
    raw graph's kernels refuse is a FlowgradError on every executor."""
    graph, feed, outs = program
    try:
        want = raw_eval(outs, feed)
    except Exception:
        want = None
    got, slack = _run_all(outs, feed)
    for key, out in got.items():
        name, simplified, call = key
        if isinstance(out, Exception) or want is None:
            if name == "checked" and isinstance(out, fg.NumericsError):
                continue
            assert want is None and isinstance(out, fg.FlowgradError), (key, out)
            continue
        ref = got[("interpreter", True, call)] if simplified else want
        for o, g, w in zip(outs, out, ref):
            d = difference(g, w, slack[key])
            assert d is None, (key, o, d)
            assert np.asarray(g).dtype == o.dtype, (key, o)
