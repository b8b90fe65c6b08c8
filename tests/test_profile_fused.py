"""prog.profile's fused groups timed as the kernel the generated code runs (a numba
region's loop, a numexpr chain): ``ProfileGroup.fused_seconds``, next to the group's
summed interpreter time; None, with a note, where that kernel would not run or cannot
be timed. The kernel's values are checked against numpy and the interpreter."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen, fusion, fused_timing, regions


@pytest.fixture
def g():
    with fg.Graph() as graph:
        yield graph


@pytest.fixture
def spy(monkeypatch):
    """Records each kernel the profile times, its arguments and its outputs."""
    calls, real = [], fused_timing.time_kernel

    def recording(fn, args, repeat, overhead):
        seconds, outs = real(fn, args, repeat, overhead)
        calls.append((fn, args, outs, seconds))
        return seconds, outs
    monkeypatch.setattr(fused_timing, "time_kernel", recording)
    return calls


def _where_chain(x, c=0.5):
    """Six where steps with their tests and arithmetic: 30 pointwise steps, one numba region."""
    y = x
    for _ in range(6):
        y = fg.where(y > c, y * 0.9 - 0.1, y + 0.2)
    return y


def _where_chain_np(X, c=0.5):
    y = X
    for _ in range(6):
        y = np.where(y > c, y * 0.9 - 0.1, y + 0.2)
    return y


def _needs_numba():
    if not regions.available():
        pytest.skip("numba is not installed: no regions")


def _needs_numexpr():
    pytest.importorskip("numexpr")


def test_region_kernel_is_timed_and_gives_the_interpreters_values(g, spy):
    _needs_numba()
    n = 1 << 20
    x = fg.placeholder("x", (n,))
    y = _where_chain(x)
    prog = fg.compile(y)
    X = np.random.default_rng(1).standard_normal(n)
    prog(x=X)
    prog(x=X)                      # the second call compiles the loop
    p = prog.profile(x=X, repeat=3)
    (grp,) = p.groups
    assert grp.kind == "numba region" and len(grp.nodes) == 30 and grp.nodes[-1] is y
    assert isinstance(grp.fused_seconds, float) and grp.fused_seconds > 0
    assert grp.fused_note == ""
    # one loop over 1M entries against 30 numpy passes: 10-25x faster measured; 2x is safe
    assert grp.fused_seconds < grp.seconds / 2, (grp.fused_seconds, grp.seconds)
    # the callable timed is the one the generated function calls, on the call's feed
    (fn, args, outs, seconds), = spy
    parts = prog.generated.fused_parts()
    k = max(parts.regions)
    assert fn is parts.ns[f"r{k}"] and not isinstance(fn, regions.LazyKernel)
    assert seconds == grp.fused_seconds
    np.testing.assert_array_equal(args[0], X)
    # its values: the group's last node as the interpreter computes it, bit for bit
    (out,) = outs
    np.testing.assert_array_equal(out, fg.compile(y, codegen=False)(x=X))
    np.testing.assert_array_equal(out, _where_chain_np(X))
    text, page = p.table(), p._repr_html_()
    assert "numba region: fused " in text and " as separate steps" in text
    assert "fused group" in page and "as separate steps" in page


def test_region_not_compiled_yet_is_not_timed(g, spy):
    _needs_numba()
    x = fg.placeholder("x", (4096,))
    y = _where_chain(x, c=0.3141592653)      # a loop source no other test compiles
    prog = fg.compile(y)
    X = np.linspace(-2, 2, 4096)
    (grp,) = prog.profile(x=X, repeat=2).groups
    assert grp.fused_seconds is None and "second call" in grp.fused_note and not spy
    assert "fused kernel not timed" in prog.profile(x=X, repeat=1).table()
    # the profile called nothing: the program still compiles on its own second call
    parts = prog.generated.fused_parts()
    k = max(parts.regions)
    assert isinstance(parts.ns[f"r{k}"], regions.LazyKernel) and parts.lazy[k].calls == 0
    prog(x=X)
    prog(x=X)
    (grp,) = prog.profile(x=X, repeat=2).groups
    assert grp.fused_seconds is not None and grp.fused_seconds > 0


def test_region_with_runtime_lengths_is_timed_from_min_size_entries(g, spy):
    _needs_numba()
    x = fg.placeholder("x", (None,))
    y = _where_chain(x)
    prog = fg.compile(y)
    big = np.linspace(-2, 2, 1000)
    prog(x=big)
    prog(x=big)
    m = regions.MIN_SIZE
    (small,) = prog.profile(x=big[:m - 1], repeat=1).groups     # the steps run: not timed
    assert small.fused_seconds is None and "separate steps" in small.fused_note
    (at,) = prog.profile(x=big[:m], repeat=1).groups
    assert at.fused_seconds is not None
    np.testing.assert_array_equal(spy[-1][2][0], _where_chain_np(big[:m]))


def _arith_chain(x):
    """Ten mul/add pairs and a tanh: one numexpr chain of 21 steps (regions off)."""
    y = x
    for _ in range(10):
        y = y * 1.01 + 0.1
    return fg.tanh(y)


def test_numexpr_chain_is_timed_from_numexpr_min_entries(g, spy, monkeypatch):
    _needs_numexpr()
    monkeypatch.setattr(codegen, "REGIONS", False)     # else the arithmetic is a region
    x = fg.placeholder("x", (None,))
    y = _arith_chain(x)
    prog = fg.compile(y)
    n = fusion.NUMEXPR_MIN
    X = np.random.default_rng(2).standard_normal(n)
    (below,) = prog.profile(x=X[:n - 1], repeat=1).groups
    assert below.kind == "numexpr chain" and below.fused_seconds is None
    assert str(n) in below.fused_note and not spy
    (grp,) = prog.profile(x=X, repeat=2).groups
    assert len(grp.nodes) == 21 and isinstance(grp.fused_seconds, float)
    assert grp.fused_seconds > 0     # (numexpr 2.14 on 2 loaded cores: slower than numpy here)
    (fn, args, outs, _), = spy
    parts = prog.generated.fused_parts()
    assert fn is parts.ns[f"f{max(parts.chains)}"]
    want = X
    for _ in range(10):
        want = want * 1.01 + 0.1
    np.testing.assert_allclose(outs[0], np.tanh(want), rtol=1e-15, atol=0)
    np.testing.assert_allclose(outs[0], fg.compile(y, codegen=False)(x=X), rtol=1e-15, atol=0)


def test_static_chain_under_numexpr_min_is_not_timed(g, monkeypatch):
    _needs_numexpr()
    monkeypatch.setattr(codegen, "REGIONS", False)
    x = fg.placeholder("x", (1000,))
    (grp,) = fg.compile(_arith_chain(x)).profile(x=np.ones(1000), repeat=1).groups
    assert grp.fused_seconds is None and "separate steps" in grp.fused_note
    assert grp.seconds > 0


def test_numpy_error_state_that_raises_times_no_kernel(g, spy):
    _needs_numba()
    x = fg.placeholder("x", (1000,))
    prog = fg.compile(_where_chain(x))
    X = np.linspace(-1, 1, 1000)
    prog(x=X)
    prog(x=X)
    with np.errstate(all="raise"):    # calls run the interpreter: no fused kernel runs
        (grp,) = prog.profile(x=X, repeat=1).groups
    assert grp.fused_seconds is None and "error state" in grp.fused_note and not spy


def test_interpreter_and_dask_programs_time_no_kernel(g, spy):
    x = fg.placeholder("x", (1000,))
    y = _where_chain(x)
    X = np.linspace(-1, 1, 1000)
    assert fg.compile(y, codegen=False).profile(x=X, repeat=1).groups == []
    pytest.importorskip("dask.array")
    p = fg.compile(y, backend="dask").profile(x=X, repeat=1)
    assert all(grp.fused_seconds is None for grp in p.groups) and not spy
    np.testing.assert_allclose(p.result, _where_chain_np(X), rtol=1e-15)


def test_region_with_a_0d_operand_gets_it_as_a_number(g, spy):
    _needs_numba()
    x = fg.placeholder("x", (2048,))
    c = fg.placeholder("c", ())
    y = fg.where(x > c, x * c, x - c)
    prog = fg.compile(y)
    X, C = np.linspace(-3, 3, 2048), np.float64(0.75)
    prog(x=X, c=C)
    prog(x=X, c=C)
    (grp,) = prog.profile(x=X, c=C, repeat=2).groups
    assert grp.fused_seconds is not None
    (fn, args, outs, _), = spy
    assert type(args[1]) is float and args[1] == 0.75      # as the generated code passes it
    np.testing.assert_array_equal(outs[0], np.where(X > C, X * C, X - C))
    np.testing.assert_array_equal(outs[0], fg.compile(y, codegen=False)(x=X, c=C))


def test_a_kernel_that_raises_leaves_the_profile_whole(g, monkeypatch):
    _needs_numba()

    def refusing(fn, args, repeat, overhead):
        raise TypeError("no matching definition")
    monkeypatch.setattr(fused_timing, "time_kernel", refusing)
    x = fg.placeholder("x", (1000,))
    y = _where_chain(x)
    prog = fg.compile(y)
    X = np.linspace(-1, 1, 1000)
    prog(x=X)
    prog(x=X)
    p = prog.profile(x=X, repeat=1)
    (grp,) = p.groups
    assert grp.fused_seconds is None and "refused" in grp.fused_note
    assert len(p.rows) == 30 and grp.seconds > 0
    np.testing.assert_array_equal(p.result, _where_chain_np(X))
