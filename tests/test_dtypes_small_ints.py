"""Integer and bool inputs to float ops and reductions: the node's declared dtype is the
contract on every path.

numpy computes a float ufunc of int8/uint8/bool in float16 and of int16/uint16 in
float32, while flowgrad declares float64 (``float_dtype``): the kernels cast such an
input to float64 first (``Op(floating=True)``, ops/base.py ``computes_in_float``).
Sums, products and running sums follow numpy's accumulator (``sum_dtype``: unsigned
→ uint64, bool and signed → int64). Each case runs on the interpreter, the generated
code (numba regions and numexpr chains fed by the op), ``verify=True``, 0-d feeds (the
scalar path) and dask, three calls each (loops compile after the first), against numpy
computed in the declared dtype.
"""
import itertools
import math
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen, fusion

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32"]
N = 100   # above regions.MIN_SIZE: the float arithmetic after the op runs as a numba loop

_erf = np.vectorize(math.erf)
_erfc = np.vectorize(math.erfc)

#: the float functions of one input, and numpy (float64) references for each
UNARY = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "tanh": np.tanh,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "erf": _erf,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "gelu": lambda x: x * 0.5 * _erfc(-x / math.sqrt(2.0)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
}

#: reductions over every axis: (flowgrad op, numpy reference of the float64 or int input)
REDUCTIONS = {
    "sum": np.sum, "prod": np.prod, "cumsum": np.cumsum, "max": np.max, "min": np.min,
    "mean": lambda x: np.mean(x.astype(np.float64)),
    "var": lambda x: np.var(x.astype(np.float64)),
    "std": lambda x: np.std(x.astype(np.float64)),
    "logsumexp": lambda x: np.log(np.sum(np.exp(x.astype(np.float64)))),
    "softmax": lambda x: np.exp(x - np.log(np.sum(np.exp(x.astype(np.float64))))),
}


def _data(dtype, n=N):
    """Small positive values (log and sqrt defined), with repeats; bools mixed."""
    if dtype == "bool":
        return np.arange(n) % 3 == 0
    return (np.arange(n) % 5 + 1).astype(dtype)


def _numexpr(m):
    """numexpr chains instead of numba regions, on small arrays."""
    m.setattr(codegen, "REGIONS", False)
    m.setattr(fusion, "NUMEXPR_MIN", 16)


#: (name, compile keywords, setup of a monkeypatch context) of every execution path
PATHS = [("interpreter", dict(codegen=False), None), ("generated", {}, None),
         ("numexpr", {}, _numexpr), ("verify", dict(verify=True), None),
         ("dask", dict(backend="dask"), None)]


def _check(build, reference, monkeypatch, shapes=((None,), ())):
    """``build(x)`` → node, on every path, dtype and shape: the declared dtype and numpy's
    value computed in it, for three calls. The op's result also feeds float arithmetic
    (a numba region, a numexpr chain), which must keep that dtype."""
    for dtype, shape, (path, kw, setup) in itertools.product(DTYPES, shapes, PATHS):
        data = _data(dtype) if shape else _data(dtype)[3]
        with monkeypatch.context() as m:
            if setup is not None:
                setup(m)
            with fg.Graph():
                x = fg.placeholder("x", shape=shape, dtype=dtype)
                y = build(x)
                declared = y.dtype
                outs = [y] + ([y * 1.0001 - 0.5] if declared.kind == "f" else [])
                prog = fg.compile(outs, **kw)
                want = np.asarray(reference(np.asarray(data))).astype(declared)
                for call in range(3):
                    got = [fg.to_numpy(v) for v in prog(x=data)]
                    where = f"{dtype} {path} shape {shape} call {call}"
                    for g in got:
                        assert np.asarray(g).dtype == declared, where
                    np.testing.assert_allclose(np.asarray(got[0], dtype=np.float64),
                                               want.astype(np.float64), rtol=1e-12, atol=0,
                                               err_msg=where)
                    if len(got) > 1:
                        np.testing.assert_allclose(got[1], want * 1.0001 - 0.5, rtol=1e-12,
                                                   err_msg=where)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@pytest.mark.parametrize("name", sorted(UNARY))
def test_float_function_of_ints_and_bools_is_float64_on_every_path(name, monkeypatch):
    op = getattr(fg, name)
    reference = UNARY[name]

    def build(x):
        y = op(x)
        assert y.dtype == np.float64
        return y
    _check(build, lambda v: reference(v.astype(np.float64)), monkeypatch)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions_of_ints_and_bools_keep_their_declared_dtype(name, monkeypatch):
    op = getattr(fg, name)
    shapes = ((None,),) if name in ("cumsum", "softmax") else ((None,), ())
    _check(op, REDUCTIONS[name], monkeypatch, shapes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_prod_cumsum_declare_numpys_accumulator(dtype):
    """Unsigned ints sum in uint64 (numpy's rule; int64 was declared), the rest in int64."""
    data = _data(dtype)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,), dtype=dtype)
        for op, ref in [(fg.sum, np.sum), (fg.prod, np.prod), (fg.cumsum, np.cumsum)]:
            assert op(x).dtype == ref(data).dtype
        assert fg.trace(fg.reshape(x, (10, 10))).dtype == np.trace(data.reshape(10, 10)).dtype


def test_the_reported_sqrt_and_log_of_int16_stay_float64_across_calls():
    """The QA repro: float32 on the first call and float64 later (a loop compiled), and
    verify=True raising VerifyError."""
    X = np.arange(100, dtype=np.int16)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,), dtype="int16")
        for y, ref in [(fg.sqrt(x) * 1.0001 - 0.5, np.sqrt(X.astype(np.float64)) * 1.0001 - 0.5),
                       (fg.log(x + 1) * 2.0 + 1.0, np.log(X.astype(np.float64) + 1) * 2.0 + 1.0)]:
            assert y.dtype == np.float64
            progs = [fg.compile(y, codegen=False), fg.compile(y), fg.compile(y, verify=True)]
            for call in range(3):
                for prog in progs:
                    got = prog(x=X)
                    assert got.dtype == np.float64
                    np.testing.assert_allclose(got, ref, rtol=1e-15)


def test_relu_and_min_of_bools_stay_bool():
    data = np.array([True, False, True])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype=bool)
        outs = [fg.relu(x), fg.min(x), fg.max(x), fg.min(fg.equal(x, True))]
        assert [o.dtype for o in outs] == [np.dtype(bool)] * 4
        for kw in (dict(codegen=False), {}, dict(backend="dask")):
            got = [fg.to_numpy(v) for v in fg.compile(outs, **kw)(x=data)]
            assert [np.asarray(g).dtype for g in got] == [np.dtype(bool)] * 4
            assert got[0].tolist() == [True, False, True]
            assert [bool(g) for g in got[1:]] == [False, True, False]
        assert bool(fg.compile(fg.min(x))(x=np.array([True, True, True]))) is True


# -- bools have no subtraction, negative or sign (numpy's rule): refused when built --------

def test_bool_minus_bool_negative_and_sign_are_refused_when_built():
    with fg.Graph():
        a = fg.placeholder("a", shape=(3,), dtype=bool)
        b = fg.placeholder("b", shape=(3,), dtype=bool)
        cases = [("sub", lambda: a - b), ("sub", lambda: a - True), ("sub", lambda: True - a),
                 ("sub", lambda: fg.sub(a, b)), ("neg", lambda: -a), ("neg", lambda: fg.neg(a)),
                 ("sign", lambda: fg.sign(a)), ("pow", lambda: a ** 2), ("pow", lambda: a ** b),
                 ("pow", lambda: fg.pow(a, 3.0))]
        for name, make in cases:
            with pytest.raises(fg.UsageError) as info:
                make()
            message = str(info.value)
            assert isinstance(info.value, TypeError)      # numpy's kind of error
            assert message.startswith(f"{name}: ")
            assert "not supported" in message
            assert f"{__file__}:" in message               # the user's line


def test_the_nearest_allowed_bool_arithmetic_still_builds_and_runs():
    """The boundary: a bool minus an int, a bool plus a bool, the abs of a bool, the
    negative of an int8 and an int8 to a bool power are numpy's, and run."""
    data = np.array([True, False, True])
    with fg.Graph():
        a = fg.placeholder("a", shape=(3,), dtype=bool)
        i = fg.placeholder("i", shape=(3,), dtype="int8")
        outs = [a - 1, a + a, fg.abs(a), -i, fg.sign(i), a - i, i ** a]
        for kw in (dict(codegen=False), {}):
            got = fg.compile(outs, **kw)(a=data, i=np.array([1, -2, 0], np.int8))
            want = [data - 1, data + data, np.abs(data), np.array([-1, 2, 0], np.int8),
                    np.array([1, -1, 0], np.int8), data - np.array([1, -2, 0], np.int8),
                    np.power(np.array([1, -2, 0], np.int8), data)]
            for g, w, o in zip(got, want, outs):
                assert g.dtype == w.dtype == o.dtype
                np.testing.assert_array_equal(g, w)
