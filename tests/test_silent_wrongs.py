"""Silent wrong results found by the wave-3 probe (issue 18: part 1, and from part 3
the non-finite region constants and the keyword feeds), one section each: every
executor (generated array code, the interpreter, the scalar path, numba regions,
numexpr chains, the checked loop, dask) gives the reference's answer, dtype and
errors, on every call."""
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import regions
from flowgrad.backends.dask_backend import DaskBackend

needs_numba = pytest.mark.skipif(not regions.available(), reason="numba is not installed")


# -- 1. outputs never alias user storage, after simplification ----------------------------

EXECUTORS = [("codegen", {}, None), ("interpreter", {"codegen": False}, None),
             ("checked", {"check_numerics": True}, None), ("dask", {}, DaskBackend())]


def _feed(prog, **values):
    names = {p.name for p in prog.placeholders.values()}
    return {k: v for k, v in values.items() if k in names}


@pytest.mark.parametrize("name,kw,backend", EXECUTORS, ids=[e[0] for e in EXECUTORS])
def test_simplified_views_of_leaves_are_copied(name, kw, backend):
    X0, W0 = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3) + 10
    Y0 = np.arange(6.0).reshape(3, 2) - 5
    with fg.Graph():
        x = fg.placeholder("x", (2, 3))
        y = fg.placeholder("y", (3, 2))
        w = fg.variable(W0.copy(), name="w")
        c = fg.constant(np.ones((2, 3)))
        outs = [fg.reshape(x * 1.0, (3, 2)), fg.transpose(w * 1.0), (w + 0.0)[1:],
                fg.expand_dims(x / 1.0, 0), fg.reshape(x - 0.0, (6,))[::2], c * 1.0]
        outs += fg.grad(fg.sum(fg.transpose(w) * y), [y, w])   # w.T and y.T
    for o in outs:
        prog = fg.compile(o, backend=backend, **kw)
        X, Y = X0.copy(), Y0.copy()
        for call in range(3):    # first call and later ones (lazy kernels, regions)
            got = np.asarray(prog(_feed(prog, x=X, y=Y)))
            want = got.copy()
            got[...] = -99.0     # in-place clipping of a gradient, say
            assert (X == X0).all() and (Y == Y0).all(), (o, call)
            assert (w.value == W0).all() and (c.value == 1.0).all(), (o, call)
            again = np.asarray(prog(_feed(prog, x=X, y=Y)))
            np.testing.assert_array_equal(again, want)


def test_scalar_path_outputs_never_alias_a_constant_or_feed():
    with fg.Graph():
        s = fg.placeholder("s")
        c = fg.constant(np.array(2.0))
        outs = [s * 1.0, c * 1.0, fg.reshape(s + 0.0, ())]
        for o in outs:
            for kw in ({}, {"codegen": False}):
                prog = fg.compile(o, **kw)
                S = np.array(3.0)
                got = prog(s=S)
                if isinstance(got, np.ndarray):
                    want = got.copy()
                    got[...] = -1.0
                    assert S == 3.0 and c.value == 2.0
                    np.testing.assert_array_equal(prog(s=S), want)


def test_only_real_aliases_are_copied():
    """The copy is decided at compile time and only for outputs that may alias."""
    with fg.Graph():
        x = fg.placeholder("x", (2, 3))
        w = fg.variable(np.ones((2, 3)), name="w")
        prog = fg.compile([fg.sum(x * w), fg.transpose(x * w), fg.reshape(x * 1.0, (6,))])
    assert prog.copy_outputs == (2,)


# -- 2. numpy scalars and dask arrays get the feed range check ------------------------------

def _feed_ways(prog, node, value):
    """Every binder a feed may go through: keywords (the generated binder), a dict by
    name and by node (the generic fast binder), and the general binder (codegen=False)."""
    yield lambda: prog(**{node.name: value})
    yield lambda: prog({node.name: value})
    yield lambda: prog({node: value})


RANGE_CASES = [  # (dtype, shape, the last value that fits, the first that does not)
    ("int32", (), np.int64(2**31 - 1), np.int64(2**31)),
    ("int32", (), np.int64(-2**31), np.int64(-2**31 - 1)),
    ("int32", (), np.uint32(2**31 - 1), np.uint32(2**31)),
    ("uint8", (), np.uint16(255), np.uint16(256)),
    ("float32", (), np.float64(np.finfo(np.float32).max), np.float64(2.0**128)),
    ("float32", (), np.float64(-np.finfo(np.float32).max), np.float64(-2.0**128)),
    ("int32", (3,), np.array([1, 2**31 - 1, 3]), np.array([1, 2**31, 3])),
]


@pytest.mark.parametrize("dtype,shape,ok,bad", RANGE_CASES)
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask-array"])
@pytest.mark.parametrize("backend", [None, "dask"])
@pytest.mark.parametrize("codegen", [True, False])
def test_every_binder_range_checks_numpy_scalars_and_dask_arrays(
        dtype, shape, ok, bad, as_dask, backend, codegen):
    import dask.array as da
    with fg.Graph():
        p = fg.placeholder("p", shape, dtype=dtype)
        prog = fg.compile(p * 1, backend=DaskBackend() if backend else None, codegen=codegen)
    wrap = (lambda v: da.from_array(np.asarray(v), chunks=1 if shape else ())) \
        if as_dask else (lambda v: v)
    for run in _feed_ways(prog, p, wrap(ok)):
        got = np.asarray(run())
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, np.asarray(ok).astype(dtype))
    for run in _feed_ways(prog, p, wrap(bad)):
        with pytest.raises(fg.FeedError, match="'p' has dtype " + dtype):
            run()


# -- 3. a region's first call has the dtype and bits of every later call --------------------

def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _region_programs(dtype):
    """Programs whose numba region reads a 0-d value inside a ``where`` with a Python
    number branch (or beside Python-number constants)."""
    with fg.Graph():
        x = fg.placeholder("x", (200,), dtype=dtype)
        s = fg.placeholder("s", (), dtype=dtype)
        flag = fg.placeholder("flag", (), dtype=bool)
        w = fg.variable(np.asarray(0.7, dtype), name="w")
        outs = [fg.where(x > 0, s, 2.0) * x + s,
                fg.where(x > s, 0.5, s) - x * s,
                fg.maximum(x, s) * 3.0 + fg.where(x < 0, 1.0, s),
                fg.where(flag, s, 3.0) * x - w,
                fg.where(x > 0, 0.1, w) * (x + 0.1)]
    feed = {"x": np.linspace(-2, 2, 200).astype(dtype), "s": np.asarray(0.3, dtype),
            "flag": np.asarray(True)}
    return outs, feed


@needs_numba
@pytest.mark.filterwarnings("ignore:flowgrad. a pointwise loop could not be compiled")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("corrupt", [False, True], ids=["cache-ok", "cache-corrupt"])
def test_first_and_later_calls_agree_bit_for_bit_with_the_reference(dtype, corrupt, monkeypatch):
    from flowgrad.engine import region_kernels
    monkeypatch.setattr(region_kernels, "_compiled", {})   # the first call: numpy steps
    if corrupt:        # an unreadable cache entry: every call runs the steps' fallback
        def broken(source, key):
            raise EOFError("truncated cache entry")
        monkeypatch.setattr(region_kernels, "get_kernel", broken)
    outs, feed = _region_programs(dtype)
    for o in outs:
        prog = fg.compile(o)
        assert "float(" in prog._generated.source or "bool(" in prog._generated.source
        want = _bits(fg.compile(o, codegen=False)(_feed(prog, **feed)))
        assert want[0] == np.dtype(dtype)
        for call in range(3):
            assert _bits(prog(_feed(prog, **feed))) == want, (o, call)
        loops = [v for k, v in prog._generated.array_fn.__globals__.items()
                 if k[0] == "r" and k[1:].isdigit()]
        assert loops and all(hasattr(f, "py_func") != corrupt for f in loops)
        assert _bits(fg.run(o, _feed(prog, **feed))) == want


# -- 4. numpy's error state: one behaviour on every call, on every path ----------------------

def _fpe_cases():
    """(name, call, reference call, the error kind) — a numba region (x / y at y = 0), a
    numexpr chain (a large exp overflow), the scalar path (s / (s − 1) at s = 1), the
    interpreter, the checked loop, and an optimizer's step (its own dispatch)."""
    from flowgrad.engine import fusion
    n = fusion.NUMEXPR_MIN
    with fg.Graph():
        x = fg.placeholder("x", (1000,))
        y = fg.placeholder("y", (1000,))
        region = (x / y) * x + y
        big = fg.placeholder("big", (n,))
        chain = fg.exp(big * 2.0) + big
        s = fg.placeholder("s")
        scalar = (s / (s - 1.0)) * s
        w = fg.variable(np.zeros(1000), name="w")
        loss = fg.sum(x / y * x) + fg.sum(w * w)     # an inf loss, a finite gradient
        train = fg.compile([loss, fg.grad(loss, w)])
    xy = {"x": np.ones(1000), "y": np.zeros(1000)}
    sgd = fg.optim.SGD([w], lr=0.1)

    def case(name, outs, feed, kind, **kw):
        prog = fg.compile(outs, **kw)
        ref = fg.compile(outs, codegen=False)
        return name, (lambda: prog(**feed)), (lambda: ref(**feed)), kind

    yield case("region", region, xy, "divide")
    yield case("interpreter", region, xy, "divide", codegen=False)
    yield case("checked", region, xy, "divide", check_numerics=True)
    yield case("numexpr", chain, {"big": np.full(n, 400.0)}, "over")
    yield case("scalar", scalar, {"s": 1.0}, "divide")
    reference = fg.compile(loss, codegen=False)
    yield "optimizer", (lambda: sgd.step(train, **xy)), (lambda: reference(**xy)), "divide"


@pytest.mark.parametrize("case", list(_fpe_cases()), ids=lambda c: c[0])
def test_errstate_raise_holds_on_every_call(case):
    name, call, reference, kind = case
    for k in range(3):           # first call (numpy steps), later ones (loops, numexpr)
        with np.errstate(**{kind: "raise"}):
            with pytest.raises(fg.RunError) as info:
                call()
        assert isinstance(info.value.__cause__, FloatingPointError), (name, k)
    # with the error ignored: numpy's inf/nan, the same bits on every call
    with np.errstate(all="ignore"):
        if name == "checked":    # (the checked loop stops at the inf it finds)
            for _ in range(3):
                with pytest.raises(fg.NumericsError, match="div"):
                    call()
            return
        want = _bits(reference())
        assert [_bits(call()) for _ in range(3)] == [want] * 3


# -- 5. a division by a literal is numpy's at every size --------------------------------------

@pytest.mark.parametrize("regions_on", [True, False], ids=["regions", "numexpr-only"])
@pytest.mark.parametrize("static", [True, False], ids=["static", "None-length"])
def test_division_by_a_literal_zero_at_every_size(regions_on, static, monkeypatch):
    from flowgrad.engine import codegen, fusion
    monkeypatch.setattr(codegen, "REGIONS", regions_on)
    n0 = fusion.NUMEXPR_MIN
    for n in (n0 - 1, n0, n0 + 1):   # straddling numexpr's threshold
        with fg.Graph():
            x = fg.placeholder("x", (n if static else None,))
            outs = [x / 0.0 - x, (x / -0.0) * x, fg.sqrt(x / 0.0 + x / 3.0) / 0.5,
                    fg.exp(x) / 0.0 + x]
        X = np.linspace(-1.0, 1.0, n)
        X[n // 2] = 0.0
        prog, ref = fg.compile(outs), fg.compile(outs, codegen=False)
        with np.errstate(all="ignore"):
            want = [_bits(v) for v in ref(x=X)]
            for _ in range(2):
                got = [_bits(v) for v in prog(x=X)]
                for g, w, o in zip(got, want, outs):
                    if o is outs[3]:     # numexpr's exp differs from numpy's in the last ulp
                        gv, wv = np.frombuffer(g[2]), np.frombuffer(w[2])
                        np.testing.assert_allclose(gv, wv, rtol=1e-15)
                        assert np.array_equal(np.isinf(gv), np.isinf(wv))
                    else:
                        assert g == w, (n, o)


# -- 6. signed zeros: exact rewrites are exact, the scalar path is numpy's --------------------

SIGNED_EDGES = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, -1.5, 2.0, 5e-324])


def _same_bits(got, want):
    """Equal values, dtypes and signs of zeros; NaN where NaN (its sign bit is no value)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes(), (got, want)


def _unsimplified(outs, feed):
    from flowgrad.engine import simplify
    with simplify.disabled():
        ref = fg.compile(outs, codegen=False)
    return ref(feed)


def _exact_rewrites(x, z, one):
    """Each rewrite the simplifier makes exactly, as a program output (x and z: the
    same edge values in two orders; one = ones_like(x))."""
    zeros, neg_zero = fg.zeros_like(x), fg.constant(np.full(x.shape, -0.0))
    return {
        "x+0.0 (kept)": x + 0.0, "0.0+x (kept)": 0.0 + x, "x+zeros (kept)": x + zeros,
        "x+(-0.0)": x + (-0.0), "(-0.0)+x": neg_zero + x, "x-0.0": x - 0.0,
        "x-(-0.0) (kept)": x - (-0.0), "0.0-x (kept)": 0.0 - x, "(-0.0)-x": neg_zero - x,
        "x*1": x * 1.0, "1*x": one * x, "x/1": x / 1.0, "x**1": x ** 1.0, "(-1)*x": -1.0 * x,
        "-(-x)": -(-x), "abs(x)+0": fg.abs(x) + 0.0, "(x+0)+0": (x + 0.0) + 0.0,
        "(x-(-0.0))+0": (x - (-0.0)) + 0.0,
        "a+(-b)": x + (-z), "a-(-b)": x - (-z), "(-a)(-b)": (-x) * (-z), "-((-a)b)": -((-x) * z),
        "1/(x+0.0)": 1.0 / (x + 0.0),
    }


def test_exact_rewrites_keep_signed_zeros_inf_and_nan():
    X = np.repeat(SIGNED_EDGES, len(SIGNED_EDGES))
    Z = np.tile(SIGNED_EDGES, len(SIGNED_EDGES))
    with fg.Graph():
        x = fg.placeholder("x", X.shape)
        z = fg.placeholder("z", Z.shape)
        cases = _exact_rewrites(x, z, fg.ones_like(x))
    feed = {"x": X, "z": Z}
    with np.errstate(all="ignore"):
        for name, o in cases.items():
            prog = fg.compile(o)
            want = _unsimplified(o, _feed(prog, **feed))
            for kw in ({}, {"codegen": False}):
                _same_bits(fg.compile(o, **kw)(_feed(prog, **feed)), want)


def test_documented_exceptions_differ_only_as_documented():
    """−(a − b) → b − a and −((−a) + (−b)) → a + b may flip a zero's sign; x·0 → 0 and
    x − x → 0 ignore what x holds (simplify.py's docstring, the README's note)."""
    X = np.repeat(SIGNED_EDGES, len(SIGNED_EDGES))
    Z = np.tile(SIGNED_EDGES, len(SIGNED_EDGES))
    with fg.Graph():
        x = fg.placeholder("x", X.shape)
        z = fg.placeholder("z", Z.shape)
        flips = [-(x - z), -((-x) + (-z))]
        zeros = [x * 0.0, x - x]
    with np.errstate(all="ignore"):
        for o in flips:
            got, want = fg.compile(o)(x=X, z=Z), _unsimplified(o, {"x": X, "z": Z})
            np.testing.assert_array_equal(got, want)          # values (and NaNs) agree
            differ = np.signbit(got) != np.signbit(want)
            assert (got[differ & ~np.isnan(want)] == 0).all()   # a zero's sign, at most
        for o in zeros:
            got = fg.compile(o)(x=X, z=Z)
            assert (got == 0).all() and not np.signbit(got).any()


@pytest.mark.parametrize("lazy", [False, True], ids=["generated", "first-call loop"])
def test_scalar_path_signed_zeros_equal_numpy(lazy, monkeypatch):
    from flowgrad.engine import scalar_plan
    if lazy:     # the long-plan path: its first call is scalar_tier's loop
        monkeypatch.setattr(scalar_plan, "LAZY_LINES", 0)
    with fg.Graph():
        s = fg.placeholder("s")
        t = fg.placeholder("t")
        outs = {"s**0.5": s ** 0.5, "s**2": s ** 2.0, "s**-1": s ** -1.0, "s**1": s ** 1.0,
                "s**0": s ** 0.0, "s**t": s ** t, "sum": fg.sum(s), "mean": fg.mean(s),
                "sum+": fg.sum(s) * 2.0, "sqrt": fg.sqrt(s)}
    rng = np.random.default_rng(5)
    values = list(SIGNED_EDGES) + list(rng.standard_normal(40) * 10)
    with np.errstate(all="ignore"):
        for name, o in outs.items():
            prog = fg.compile(o)
            assert prog._generated.scalar is not None, name
            ref = fg.compile(o, codegen=False)
            for v in values:
                tv = 2.0 if name != "s**t" else 0.5
                feed = _feed(prog, s=v, t=tv)
                for _ in range(2):
                    got, want = prog(feed), ref(feed)
                    assert type(got) is type(want), name
                    _same_bits(got, want)


# -- 7. inf and nan constants inside a numba region ------------------------------------------

@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_finite_constants_in_a_region_use_the_loop(dtype):
    with fg.Graph():
        x = fg.placeholder("x", (300,), dtype=dtype)
        outs = [fg.where(x > 0, x, -np.inf) * x + 1.0, fg.maximum(x, float("-inf")) - x * 2.0,
                (x + np.inf) * (x - 1.0), fg.where(x < 0.5, np.nan, x) / (x * x + 1.0),
                fg.minimum(x * 3.0, np.inf) + x]
    X = np.linspace(-2, 2, 300).astype(dtype)
    for o in outs:
        prog, ref = fg.compile(o), fg.compile(o, codegen=False)
        with np.errstate(all="ignore"):
            want = _bits(ref(x=X))
            got = [_bits(prog(x=X)) for _ in range(3)]
        assert got == [want] * 3, o
        loops = {k: v for k, v in prog._generated.array_fn.__globals__.items()
                 if k[0] == "r" and k[1:].isdigit()}
        assert loops and all(hasattr(f, "py_func") for f in loops.values()), \
            prog._generated.source


# -- 8. placeholders named like the API's own parameters, fed by keyword ----------------------

API_NAMES = ["self", "prog", "outputs", "feed", "backend"]


def _named_like_parameters():
    with fg.Graph():
        leaves = {n: fg.placeholder(n, (3,)) for n in API_NAMES}
        y = sum((k + 1.0) * p for k, p in enumerate(leaves.values()))
    feed = {n: np.full(3, float(k + 1)) for k, n in enumerate(API_NAMES)}
    want = sum((k + 1.0) * v for k, v in enumerate(feed.values()))
    return y, feed, want


@pytest.mark.parametrize("codegen", [True, False])
def test_program_calls_take_every_placeholder_name_by_keyword(codegen):
    y, feed, want = _named_like_parameters()
    prog = fg.compile(y, codegen=codegen)
    np.testing.assert_array_equal(prog(**feed), want)
    np.testing.assert_array_equal(prog(feed), want)       # by dict: always worked
    tr = prog.trace(**feed)
    np.testing.assert_array_equal(tr[y], want)
    with fg.Graph():
        s = fg.placeholder("self")
        kept = fg.compile(s * 2.0)
    assert kept(self=1.5) == 3.0


def test_fg_run_takes_every_placeholder_name_by_keyword():
    y, feed, want = _named_like_parameters()
    np.testing.assert_array_equal(fg.run(y, **feed), want)
    np.testing.assert_array_equal(fg.run(y, feed), want)
    np.testing.assert_array_equal(fg.run(y, feed, backend="numpy"), want)
    np.testing.assert_array_equal(fg.to_numpy(fg.run(y, feed, backend=DaskBackend())), want)
    # a backend given by name is the backend: the placeholder 'backend' is then missing
    rest = {k: v for k, v in feed.items() if k != "backend"}
    with pytest.raises(fg.FeedError, match="backend"):
        fg.run(y, backend="numpy", **rest)
    # feed={...} by keyword still passes the dict where no leaf is named 'feed'
    with fg.Graph():
        x = fg.placeholder("x")
    assert fg.run(x * 2.0, feed={x: 1.5}) == 3.0
    # an array as backend= where no leaf is named so: a typed error, not a raw TypeError
    with fg.Graph():
        x = fg.placeholder("x")
        with pytest.raises(fg.BackendError, match="backend= takes"):
            fg.run(x * 1.0, x=1.0, backend=np.ones(3))


def test_assigning_a_variable_checks_the_same_range():
    """``w.value = …`` narrows through the same check as a feed (flowgrad/leaves.py)."""
    for dtype, shape, ok, bad in RANGE_CASES:
        with fg.Graph():
            w = fg.variable(np.zeros(shape, dtype), name="w")
        values = [(ok, bad)]
        if np.dtype(dtype).kind != "u":    # Python numbers (int64/float64 to numpy)
            values.append((np.asarray(ok).tolist(), np.asarray(bad).tolist()))
        for good, wrong in values:
            w.value = good
            assert w.value.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(w.value, np.asarray(ok).astype(dtype))
            with pytest.raises(fg.FeedError, match="'w' has dtype " + dtype):
                w.value = wrong
            np.testing.assert_array_equal(w.value, np.asarray(ok).astype(dtype))  # unchanged


def test_a_symbolic_zero_never_makes_a_users_zero_signless():
    """x·0 → 0 ignores the sign of x·0; a zeros constant of the user's is exact: the two
    equal arrays are not merged, so y + zeros stays exact at y = −0.0."""
    Y = np.array([-0.0, 1.0, -0.0])
    for first_symbolic in (True, False):
        with fg.Graph():
            x = fg.placeholder("x", (3,))
            y = fg.placeholder("y", (3,))
            zeros = fg.zeros_like(y)
            sym = x * 0.0
            outs = [sym + x, y + zeros] if first_symbolic else [y + zeros, sym + x]
        got = fg.compile(outs)(x=np.ones(3), y=Y)
        k = 1 if first_symbolic else 0
        assert not np.signbit(got[k]).any()       # −0.0 + 0.0 is +0.0


@needs_numba
def test_a_loop_that_cannot_be_compiled_says_so_once(monkeypatch):
    from flowgrad.engine import region_kernels
    monkeypatch.setattr(regions, "_WARNED", [])
    monkeypatch.setattr(region_kernels, "_compiled", {})

    def broken(source, key):
        raise SyntaxError("a loop numba cannot read")
    monkeypatch.setattr(region_kernels, "get_kernel", broken)
    with fg.Graph():
        x = fg.placeholder("x", (300,))
        prog = fg.compile((x * 2.0 + 1.0) * x)
    X = np.linspace(-1, 1, 300)
    prog(x=X)                                        # the first call: numpy steps
    with pytest.warns(RuntimeWarning, match="could not be compiled"):
        prog(x=X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(prog(x=X), (X * 2.0 + 1.0) * X)   # once a process


def test_optimizer_step_feeds_placeholders_named_prog_and_self():
    """opt.step(prog, **feed) and a trainer's call take `prog`/`self` positionally only,
    so placeholders of those names are fed by keyword like any other."""
    with fg.Graph():
        a = fg.placeholder("prog", ())
        b = fg.placeholder("self", ())
        w = fg.variable(1.0, name="w")
        loss = (w * a - b) ** 2
        opt = fg.optim.SGD([w], lr=0.1)
        prog = fg.compile([loss, fg.grad(loss, w)])
        opt.step(prog, prog=2.0, self=1.0)            # grad = 2(w·2 − 1)·2 = 4 at w = 1
        assert w.value == pytest.approx(1.0 - 0.1 * 4.0)
        trainer = opt.minimize(loss)
        trainer(prog=2.0, self=1.0)
        assert w.value == pytest.approx(0.6 - 0.1 * 2 * (0.6 * 2 - 1) * 2)


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("op, ref", [
    (fg.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    (fg.softplus, lambda a: np.log1p(np.exp(a))),
])
def test_sigmoid_and_softplus_of_bools_and_ints_are_floats(op, ref, codegen):
    """sigmoid(bool) built fine and then failed inside numpy (found by the io fuzzer)."""
    with fg.Graph():
        b = fg.placeholder("b", (3,), dtype=bool)
        i = fg.placeholder("i", (3,), dtype="int32")
        prog = fg.compile([op(b), op(i)], codegen=codegen)
        got_b, got_i = prog(b=np.array([True, False, True]), i=np.array([-2, 0, 3], np.int32))
    assert got_b.dtype == got_i.dtype == np.float64
    np.testing.assert_allclose(got_b, ref(np.array([1.0, 0.0, 1.0])), rtol=1e-15)
    np.testing.assert_allclose(got_i, ref(np.array([-2.0, 0.0, 3.0])), rtol=1e-15)


@pytest.mark.parametrize("codegen", [True, False])
def test_indexing_a_fill_by_a_node_keeps_its_bounds_check(codegen):
    # simplify took getitem of an all-equal constant for that fill, dropping the step
    # whose IndexError is the bounds check: zeros(1)[i] at i = 1 gave 0.0
    with fg.Graph():
        i = fg.placeholder("i", (), dtype="int64")
        prog = fg.compile(fg.constant(np.zeros(1))[i] + fg.constant(np.ones(3))[i],
                          codegen=codegen)
        assert prog(i=np.int64(0)) == 1.0
        with pytest.raises(fg.RunError, match="index 1 is out of bounds for axis 0 with size 1"):
            prog(i=np.int64(1))
