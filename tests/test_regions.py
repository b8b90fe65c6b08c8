"""Pointwise regions (flowgrad/engine/regions.py): one numba loop per connected set of cheap
elementwise steps. Every loop op is exact IEEE arithmetic, a comparison or a selection,
so generated code with regions must equal the reference interpreter (``codegen=False``)
**bit for bit**, op by op (float64 and float32, edge values) and on random graphs.
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flowgrad as fg
from flowgrad.engine import codegen, region_kernels, regions
from flowgrad.ops.base import REGISTRY, apply

EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, np.inf, -np.inf, np.nan, 1e308,
                  -1e308, 5e-324, 1e-300, 2.0 ** 60, 7.0, -7.0, 1.0, 1e-8, -3.0])


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    """Loops compiled at a program's first call (the default waits for the second)."""
    monkeypatch.setattr(regions, "WARM_CALLS", 0)


@pytest.fixture
def small(monkeypatch):
    """Regions on every size and of a single step (the op-by-op tests need them)."""
    monkeypatch.setattr(regions, "MIN_SIZE", 1)
    monkeypatch.setattr(regions, "MIN_STEPS", 1)


def _loops(prog):
    """The compiled region functions the program's generated code now calls."""
    ns = prog._generated.array_fn.__globals__
    return {k: v for k, v in ns.items() if k[0] == "r" and k[1:].isdigit()}


def _same(got, want):
    """Bit for bit: values, dtypes, NaN positions and the signs of zeros (a NaN's sign
    bit is no value: IEEE leaves it to the operation's implementation)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if got.dtype.kind == "f":
        num = ~np.isnan(want)
        assert np.array_equal(np.signbit(got[num]), np.signbit(want[num]))


def _both(outs):
    return fg.compile(outs), fg.compile(outs, codegen=False)


def _run_both(outs, feed, expect_loops=True):
    gen, ref = _both(outs)
    with np.errstate(all="ignore"):
        got, want = gen(**feed), ref(**feed)
        again = gen(**feed)                 # second call: the compiled loop, no lazy step
    loops = _loops(gen)
    if expect_loops:
        assert loops and all(hasattr(f, "py_func") for f in loops.values()), \
            gen._generated.source
    for g, g2, w in zip(got if isinstance(got, list) else [got],
                        again if isinstance(again, list) else [again],
                        want if isinstance(want, list) else [want]):
        _same(g, w)
        _same(g2, w)
    return gen


def _pairs(dtype):
    """Every (x, y) pair of edge values, as two flat arrays of ``dtype``."""
    x, y = np.meshgrid(EDGES, EDGES)
    with np.errstate(over="ignore"):
        return x.ravel().astype(dtype), y.ravel().astype(dtype)


BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / b, "maximum": fg.maximum, "minimum": fg.minimum,
          "tie_weight": lambda a, b: apply(REGISTRY["tie_weight"], a, b)}
COMPARE = {"greater": lambda a, b: a > b, "greater_equal": lambda a, b: a >= b,
           "less": lambda a, b: a < b, "less_equal": lambda a, b: a <= b,
           "equal": lambda a, b: apply(REGISTRY["equal"], a, b),
           "not_equal": lambda a, b: apply(REGISTRY["not_equal"], a, b)}
UNARY = {"neg": lambda a: -a, "abs": fg.abs, "sqrt": fg.sqrt, "sign": fg.sign, "relu": fg.relu}


def test_the_tests_cover_every_loop_op():
    assert set(BINARY) | set(COMPARE) | set(UNARY) | {"where"} == regions.IN_LOOP


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(BINARY) + sorted(COMPARE))
def test_binary_ops_in_a_loop_equal_the_interpreter_bit_for_bit(name, dtype, small):
    f = {**BINARY, **COMPARE}[name]
    xv, yv = _pairs(dtype)
    with fg.Graph():
        x = fg.placeholder("x", shape=xv.shape, dtype=dtype)
        y = fg.placeholder("y", shape=yv.shape, dtype=dtype)
        outs = [f(x, y), f(x, 0.1), f(2, y)]     # array operands and weak Python numbers
        _run_both(outs, {"x": xv, "y": yv})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_in_a_loop_equal_the_interpreter_bit_for_bit(name, dtype, small):
    xv = _pairs(dtype)[0]
    with fg.Graph():
        x = fg.placeholder("x", shape=xv.shape, dtype=dtype)
        _run_both([UNARY[name](x), UNARY[name](x * 3.0) - x], {"x": xv})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_where_and_comparisons_with_bool_values_in_a_loop(dtype, small):
    xv, yv = _pairs(dtype)
    with fg.Graph():
        x = fg.placeholder("x", shape=xv.shape, dtype=dtype)
        y = fg.placeholder("y", shape=yv.shape, dtype=dtype)
        c = x > y
        w = fg.where(c, x, y * 0.3)
        outs = [w, fg.where(x <= 0.5, 1.0, x - y) * w, c]
        gen = _run_both(outs, {"x": xv, "y": yv})
    assert len(_loops(gen)) == 1              # one region, bool values inside it


def test_float32_constants_are_cast_as_numpy_casts_weak_scalars(small):
    xv = np.linspace(-3, 3, 257, dtype=np.float32)
    with fg.Graph():
        x = fg.placeholder("x", shape=xv.shape, dtype=np.float32)
        y = (x * 0.1 + 1e-3) / 3.3 - x * x * 0.7
        gen = _run_both([y], {"x": xv})
    assert gen(x=xv)[0].dtype == np.float32


def test_multi_dimensional_and_non_contiguous_operands(small):
    a = np.arange(24.0).reshape(4, 6) - 7.5
    with fg.Graph():
        x = fg.placeholder("x", shape=(6, 4))
        y = fg.placeholder("y", shape=(6, 4))
        _run_both([x * y + x / (y - 2.0), fg.maximum(x, y) * 2.0], {"x": a.T, "y": a[:, ::-1].T})


def test_broadcast_operands_stay_unfused_and_correct(small):
    rng = np.random.default_rng(1)
    with fg.Graph():
        s = fg.placeholder("s", shape=())
        x = fg.placeholder("x", shape=(5, 1))
        y = fg.placeholder("y", shape=(1, 4))
        outs = [(x * y + s) * x - y, s * s + 1.0]
        gen = _run_both(outs, {"s": 0.7, "x": rng.standard_normal((5, 1)),
                               "y": rng.standard_normal((1, 4))}, expect_loops=False)
    (loop,) = [ln for ln in gen._generated.source.splitlines() if "= r" in ln]
    assert "float(" in loop                  # only x·y + s: the 0-d s as a number


def test_values_read_after_the_region_are_its_only_arrays():
    with fg.Graph():
        x = fg.placeholder("x", shape=(100,))
        a = x * x
        b = a + a                           # a: two readers inside the region
        c = b * x - a
        out = fg.exp(c) + b                 # exp stays numpy: c and b leave the loop
        gen = _run_both([out], {"x": np.linspace(-1, 1, 100)})
    (loop_src,) = [line for line in gen._generated.source.splitlines() if "= r" in line]
    assert loop_src.strip().count("v") == 3, loop_src     # two exports, one operand


# -- higher-order derivatives: closed forms --------------------------------------------------

def test_higher_derivatives_of_tanh_against_closed_forms():
    xv = np.linspace(-3, 3, 1000)
    t = np.tanh(xv)
    forms = [1 - t * t, -2 * t * (1 - t * t), -2 * (1 - t * t) * (1 - 3 * t * t),
             8 * t * (1 - t * t) * (2 - 3 * t * t)]
    with fg.Graph():
        x = fg.placeholder("x", shape=(1000,))
        d, ds = fg.tanh(x), []
        for _ in range(4):
            d = fg.grad(fg.sum(d), x)
            ds.append(d)
        gen = _run_both(ds, {"x": xv})
    for got, want in zip(gen(x=xv), forms):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


# -- random graphs ----------------------------------------------------------------------------

_U = [lambda a: -a, fg.abs, lambda a: fg.sqrt(a * a + 0.5), fg.relu, fg.sign, fg.tanh,
      lambda a: fg.exp(-a * a), lambda a: a * 0.7 + 1]
_B = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
      lambda a, b: a / (1.0 + b * b), fg.maximum, fg.minimum,
      lambda a, b: fg.where(a > b, a, b * 0.3), lambda a, b: fg.where(a <= 0.1, b, 2.0)]


@settings(max_examples=10, deadline=None, derandomize=True,   # each JITs ~4 loops (~2 s)
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([np.float64, np.float32]),
       st.sampled_from([(7,), (3, 5), (70,)]))
def test_random_region_graphs_and_gradients_equal_the_interpreter(seed, dtype, shape):
    rng = np.random.default_rng(seed)
    old = regions.MIN_SIZE
    regions.MIN_SIZE = 1
    try:
        with fg.Graph():
            xs = [fg.placeholder(f"x{i}", shape=shape, dtype=dtype) for i in range(3)]
            pool = list(xs)
            for _ in range(10):
                if rng.random() < 0.4:
                    pool.append(_U[rng.integers(len(_U))](pool[rng.integers(len(pool))]))
                else:
                    a, b = (pool[rng.integers(len(pool))] for _ in range(2))
                    pool.append(_B[rng.integers(len(_B))](a, b))
            y = fg.sum(pool[-1] * pool[-2] + pool[-3])
            outs = [pool[-1], y, *fg.grad(y, xs)]
            feed = {f"x{i}": rng.standard_normal(shape).astype(dtype) for i in range(3)}
            _run_both(outs, feed, expect_loops=False)
    finally:
        regions.MIN_SIZE = old


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_op_table_graphs_equal_the_interpreter_with_regions(data):
    from fuzz_graphs import valid_graphs
    case = data.draw(valid_graphs())
    old = regions.MIN_SIZE
    regions.MIN_SIZE = 1
    try:
        with case.graph:
            outs = [case.out]
            if case.out.dtype.kind == "f":
                outs += fg.grad(fg.sum(case.out * case.out), case.inputs)
            gen, ref = _both(outs)
        with np.errstate(all="ignore"):
            for g, w in zip(gen(case.feed), ref(case.feed)):
                _same(g, w)
    finally:
        regions.MIN_SIZE = old


# -- without numba, and when numba fails -------------------------------------------------------

def _tanh4(n=200):
    with fg.Graph():
        x = fg.placeholder("x", shape=(n,))
        d = fg.tanh(x)
        for _ in range(4):
            d = fg.grad(fg.sum(d), x)
    return d, {"x": np.linspace(-2, 2, n)}


def test_without_numba_the_plan_is_todays_numpy_steps(monkeypatch):
    monkeypatch.setattr(regions, "available", lambda: False)
    d, feed = _tanh4()
    gen, ref = _both(d)
    assert not re.search(r"= r\d+\(", gen._generated.source) and not _loops(gen)
    _same(gen(**feed), ref(**feed))


def test_a_loop_that_numba_cannot_compile_falls_back_to_the_numpy_steps(monkeypatch):
    def broken(source, key):
        raise RuntimeError("no numba today")
    monkeypatch.setattr(region_kernels, "get_kernel", broken)
    d, feed = _tanh4()
    gen, ref = _both(d)
    _same(gen(**feed), ref(**feed))         # the lazy kernel computes with numpy steps
    assert not any(hasattr(v, "py_func") for v in _loops(gen).values())
    _same(gen(**feed), ref(**feed))         # … and so does its fallback from then on


def test_regions_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(codegen, "REGIONS", False)
    d, feed = _tanh4()
    gen, ref = _both(d)
    assert not _loops(gen)
    _same(gen(**feed), ref(**feed))


# -- caches ---------------------------------------------------------------------------------------

def test_the_same_structure_is_compiled_once_per_process():
    d1, feed = _tanh4(300)
    d2, _ = _tanh4(300)
    p1, p2 = fg.compile(d1), fg.compile(d2)
    p1(**feed), p2(**feed)
    (f1,), (f2,) = _loops(p1).values(), _loops(p2).values()
    assert f1 is f2


def test_loops_are_written_to_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(region_kernels, "_compiled", {})
    d, feed = _tanh4(301)
    gen, ref = _both(d)
    _same(gen(**feed), ref(**feed))
    files = [p.name for p in tmp_path.iterdir()]
    assert any(n.startswith("r_") and n.endswith(".py") for n in files), files


def test_an_unwritable_cache_directory_compiles_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FLOWGRAD_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.setattr(region_kernels, "_compiled", {})
    assert region_kernels.cache_dir() is None
    d, feed = _tanh4(302)
    gen, ref = _both(d)
    _same(gen(**feed), ref(**feed))
    assert all(hasattr(f, "py_func") for f in _loops(gen).values())


def test_arguments_numba_refuses_run_the_numpy_steps():
    d, feed = _tanh4(303)
    gen, ref = _both(d)
    _same(gen(**feed), ref(**feed))
    ns = gen._generated.array_fn.__globals__
    (name,) = _loops(gen)
    real = ns[name]

    def refuses(*args):
        raise TypeError("no matching definition for argument type(s)")
    ns[name] = refuses
    _same(gen(**feed), ref(**feed))
    ns[name] = real
    swapped = {"x": feed["x"].astype(">f8")}      # a non-native byte order, fed
    _same(gen(**swapped), ref(**swapped))


def test_a_failing_step_in_a_region_names_its_node(monkeypatch, small):
    def broken(source, key):
        raise RuntimeError("no numba today")
    monkeypatch.setattr(region_kernels, "get_kernel", broken)
    with fg.Graph():
        x = fg.placeholder("x", shape=(4,))
        y = fg.placeholder("y", shape=(4,))
        z = fg.sqrt(x * y - 1.0) * (x - y) + x
        gen = fg.compile(z)
    with np.errstate(invalid="raise"):
        with pytest.raises(fg.RunError, match="sqrt") as info:
            gen(x=np.ones(4), y=-np.ones(4))
    assert "test_regions.py" in str(info.value)
    assert isinstance(info.value.__cause__, FloatingPointError)


def test_the_first_call_runs_the_numpy_steps_and_the_second_compiles(monkeypatch):
    monkeypatch.setattr(regions, "WARM_CALLS", 1)
    monkeypatch.setattr(region_kernels, "_compiled", {})
    d, feed = _tanh4(304)
    gen, ref = _both(d)
    _same(gen(**feed), ref(**feed))
    assert all(isinstance(v, regions.LazyKernel) for v in _loops(gen).values())
    _same(gen(**feed), ref(**feed))
    assert all(hasattr(v, "py_func") for v in _loops(gen).values())
    d2, _ = _tanh4(304)                  # compiled in this process already: used at once
    again = fg.compile(d2)
    again(**feed)
    assert all(hasattr(v, "py_func") for v in _loops(again).values())


def test_run_time_lengths_are_guarded_per_call():
    rng = np.random.default_rng(3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        y = fg.placeholder("y", shape=(None, 3))
        z = (x * y - x) / (y * y + 1.0)
        outs = [z, *fg.grad(fg.sum(z * x), [x, y])]
        gen, ref = _both(outs)
    src = gen._generated.source
    assert ".shape == " in src and f".size >= {regions.MIN_SIZE}:" in src
    for xs, ys in (((50, 3), (50, 3)),       # fused
                   ((2, 3), (2, 3))):        # below MIN_SIZE: plain steps
        # (a None length never broadcasts a 1: the program's length check refuses it,
        # and the shape test is there for whatever reaches the plan anyway)
        feed = {"x": rng.standard_normal(xs), "y": rng.standard_normal(ys)}
        for _ in range(2):
            for g, w in zip(gen(**feed), ref(**feed)):
                _same(g, w)
    assert all(hasattr(f, "py_func") for f in _loops(gen).values())
    # the shape test itself: operands that broadcast, handed to the plan directly
    X, Y = rng.standard_normal((50, 3)), rng.standard_normal((1, 3))
    vals = list(gen.plan.consts)
    vals[gen.slot_of[x.id]], vals[gen.slot_of[y.id]] = X, Y
    _same(gen._generated.array_fn(vals)[0], (X * Y - X) / (Y * Y + 1.0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_d_operands_are_read_once_as_numbers(dtype):
    rng = np.random.default_rng(4)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,), dtype=dtype)
        s = fg.placeholder("s", shape=(), dtype=dtype)
        w = fg.variable(np.asarray(0.3, dtype), name="w")
        flag = fg.placeholder("flag", shape=(), dtype=bool)
        y = fg.where(flag, (x * s - w) * x, x / (s * s + 1.0) - w)
        outs = [y, fg.maximum(y, s) * w]
        gen, ref = _both(outs)
    src = gen._generated.source
    assert "float(" in src and "bool(" in src, src
    for n, sv, fv in ((100, 1.7, True), (100, -0.4, False), (3, 2.0, True)):
        feed = {"x": rng.standard_normal(n).astype(dtype), "s": np.asarray(sv, dtype),
                "flag": np.asarray(fv)}
        for _ in range(2):
            for g, want in zip(gen(**feed), ref(**feed)):
                _same(g, want)
    assert all(hasattr(f, "py_func") for f in _loops(gen).values())
