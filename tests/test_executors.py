"""Executors behind one interface (flowgrad/engine/executors/): every executor that
accepts a plan computes the reference interpreter's values (bitwise where it promises
so, else within its stated ulps), on the fuzz suite's random graphs; and lockstep
verify mode catches a deliberately wrong kernel injected into one executor, naming
the node whose kernel is wrong."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import flowgrad as fg
from flowgrad.engine import codegen, program as scheduler
from flowgrad.engine import executors as ex
from flowgrad.engine.lockstep import compare
from flowgrad.ops import scalar_kernels
from fuzz_graphs import valid_graphs

PROFILE = settings(max_examples=int(os.environ.get("EXECUTOR_EXAMPLES", "30")),
                   deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


def _outputs(plan, vals):
    return [vals[s] for s in plan.outputs]


def _check_every_executor(prog, feed):
    plan, backend = prog.plan, prog.backend
    want = _outputs(plan, ex.reference_for(plan).build(plan, backend)(prog.bind((feed,), {})))
    ran = []
    for e in ex.ALL + (ex.Checked(prog),):
        if not e.accepts(plan, backend):
            continue
        got = _outputs(plan, e.build(plan, backend)(prog.bind((feed,), {})))
        for g, w in zip(got, want):
            why = compare(g, w, 0 if e.bit_identical else e.ulps)
            assert why is None, (e.name, why, g, w)
        ran.append(e.name)
    return ran


@PROFILE
@given(valid_graphs())
def test_every_executor_agrees_with_the_reference_on_random_graphs(case):
    with case.graph, np.errstate(all="ignore"):
        outs = [case.out] + list(fg.grad(fg.sum(fg.sin(case.out)), case.inputs))
        ran = _check_every_executor(fg.compile(outs, codegen=False), case.feed)
    assert {"interpreter", "generated array code",
            "NaN/Inf-checked interpreter"} <= set(ran)


def test_the_flat_interpreter_and_the_scalar_code_agree_with_the_reference(monkeypatch):
    with fg.Graph():
        x = fg.placeholder("x")
        y = fg.tanh(fg.exp(x) * x) + fg.where(x > 0.0, fg.log1p(x * x), x)
        outs = [y, fg.grad(y, x)]
        for X in (0.3, -2.0, 40.0):
            ran = _check_every_executor(fg.compile(outs, codegen=False), {"x": X})
            assert "generated scalar code" in ran
        monkeypatch.setattr(scheduler, "FLAT_STEPS", 0)
        ran = _check_every_executor(fg.compile(outs, codegen=False), {"x": 0.3})
        assert "flat interpreter" in ran and "interpreter" not in ran


def test_a_program_picks_its_executor_at_compile_time():
    with fg.Graph():
        x = fg.placeholder("x")
        v = fg.placeholder("v", shape=(3,))
        assert fg.compile(fg.sin(x)).executor is ex.SCALAR
        assert fg.compile(fg.sin(v)).executor is ex.GENERATED
        assert fg.compile(fg.sin(v), codegen=False).executor is ex.INTERPRETER


def _wrong_exp(monkeypatch):
    """generated array code computes exp one part in 10^12 too large"""
    real = codegen._lean_kernels

    def lean(plan, backend):
        got, shared, pairs = real(plan, backend)
        for k, st in enumerate(plan.made_steps()):
            if st.op.name == "exp":
                got[k] = lambda v: np.exp(v) * (1 + 1e-12)
        return got, shared, pairs
    monkeypatch.setattr(codegen, "_lean_kernels", lean)


def test_verify_mode_names_the_node_of_a_wrong_array_kernel(monkeypatch):
    _wrong_exp(monkeypatch)
    with fg.Graph():
        x = fg.placeholder("x", shape=(4,))
        h = fg.exp(x).named("the_exp")
        loss = fg.sum(fg.sin(h * 2.0))
        outs = [loss, fg.grad(loss, x)]
        feed = {"x": np.linspace(-1, 1, 4)}
        fg.compile(outs)(**feed)                  # without verify: silently off
        prog = fg.compile(outs, verify=True)
        with pytest.raises(fg.VerifyError, match="'the_exp'") as info:
            prog(**feed)
    err = info.value
    assert err.node is h and isinstance(err, fg.FlowgradError)
    assert prog.plan.steps[err.step].node == h.id
    assert "test_executors.py" in str(err) and "reference" in str(err)
    assert not np.array_equal(err.got, err.want)
    np.testing.assert_allclose(err.got, err.want, rtol=1e-11)


def test_verify_mode_names_the_node_of_a_wrong_scalar_kernel(monkeypatch):
    monkeypatch.setitem(scalar_kernels.KERNELS, "cos", math.sin)   # (sin for cos)
    with fg.Graph():
        x = fg.placeholder("x")
        c = fg.cos(x * 3.0).named("the_cos")
        y = fg.exp(c) + x
        prog = fg.compile(y, verify=True)
        assert prog.executor is ex.SCALAR
        with pytest.raises(fg.VerifyError, match="'the_cos'") as info:
            prog(x=0.25)
    assert info.value.node is c


def test_verify_mode_passes_correct_programs_and_the_environment_turns_it_on(monkeypatch):
    with fg.Graph():
        x = fg.placeholder("x", shape=(4, 3))      # (too small for a numba region)
        y = fg.sum(fg.softplus(x) * x)
        outs = [y, fg.grad(y, x)]
        X = np.linspace(-3, 3, 12).reshape(4, 3)
        plain = fg.compile(outs)(x=X)
        prog = fg.compile(outs, verify=True)
        for _ in range(3):             # first and later calls
            got = prog(x=X)
            for a, b in zip(got, plain):
                np.testing.assert_array_equal(a, b)
        monkeypatch.setenv("FLOWGRAD_VERIFY", "1")
        assert fg.compile(outs).verify and not fg.compile(outs, verify=False).verify
        monkeypatch.setenv("FLOWGRAD_VERIFY", "0")
        assert not fg.compile(outs).verify
    _wrong_exp(monkeypatch)
    monkeypatch.setenv("FLOWGRAD_VERIFY", "1")
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        with pytest.raises(fg.VerifyError):
            fg.compile(fg.exp(x) * 2.0)(x=np.ones(2))


def test_compare_is_bitwise_or_within_the_stated_ulps():
    a = np.array([1.0, -0.0, np.nan, np.inf])
    assert compare(a, a.copy()) is None
    assert compare(a, np.array([1.0, 0.0, np.nan, np.inf])) is not None     # signed zero
    b = a.copy()
    b[0] = np.nextafter(1.0, 2.0)
    assert compare(b, a) is not None and compare(b, a, ulps=1) is None
    b[0] = 1.0 + 5 * np.finfo(float).eps
    assert compare(b, a, ulps=4) is not None and compare(b, a, ulps=5) is None
    assert compare(a.astype(np.float32), a) is not None                      # dtype
    assert compare(a[:3], a) is not None                                     # shape


def test_compare_reads_the_parts_of_a_complex_value_one_by_one():
    # np.isnan(z) is true when either part is NaN, and np.signbit reads the real part
    # only: a complex NaN with another imaginary part, or an imaginary -0.0, must differ
    n = np.nan
    a = np.array([complex(n, 1.0), complex(2.0, -0.0)])
    assert compare(a, a.copy()) is None and compare(a, a.copy(), ulps=4) is None
    b = np.array([complex(n, 2.0), complex(2.0, -0.0)])
    assert compare(a, b) is not None
    assert compare(a, b, ulps=4) == \
        "differ by more than 4 ulps of max(|reference|, 1) (by 1 at worst)"
    c = np.array([complex(n, 1.0), complex(2.0, 0.0)])
    assert compare(a, c) is not None                              # imaginary -0.0 vs 0.0
    eps = np.finfo(np.float64).eps                                # the bound: of |z|
    near = np.array([complex(n, 1.0), complex(2.0, 4 * eps)])
    assert compare(near, a, ulps=2) is None and compare(near, a, ulps=1) is not None


def test_verify_mode_holds_an_executor_to_the_references_errors(monkeypatch):
    real = codegen._lean_kernels

    def lean(plan, backend):               # generated code's exp raises; the reference's not
        got, shared, pairs = real(plan, backend)
        for k, st in enumerate(plan.made_steps()):
            if st.op.name == "exp":
                got[k] = lambda v: np.exp(v) if v.size > 2 else 1 / 0
        return got, shared, pairs
    monkeypatch.setattr(codegen, "_lean_kernels", lean)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        e = fg.exp(x).named("the_exp")
        prog = fg.compile(fg.sum(e * x), verify=True)
        assert prog(x=np.ones(3)) == 3 * np.e            # the boundary: 3 entries pass
        with pytest.raises(fg.VerifyError, match="'the_exp'.*reference returned") as info:
            prog(x=np.ones(2))
        assert info.value.node is e
        with pytest.raises(fg.FeedError):                # both refuse: the executor's error
            prog(x=np.ones((2, 2)))


# -- verify judges each step by its own rounding -------------------------------------------

def test_verify_passes_a_correct_scalar_program_whose_last_place_differences_cancel():
    """Python's tanh and numpy's differ in the last place for some arguments; the
    derivative's 1 − tanh² and the products after it amplify that beyond any fixed
    ulps of the output (116 of these 2000 calls were refused). Each step is judged on
    the scalar code's own inputs: all pass, and the outputs agree with numpy's closed
    form (float64) to its own rounding: 1 − tanh² cancels, so the derivative's bound
    is absolute, a few eps · y²."""
    rng = np.random.default_rng(0)
    with fg.Graph():
        x, y = fg.placeholder("x"), fg.placeholder("y")
        loss = fg.tanh(x * y) * y
        prog = fg.compile([loss, fg.grad(loss, x)], verify=True)
        assert prog.executor is ex.SCALAR
        for _ in range(2000):
            X, Y = rng.normal(), rng.normal() * 3
            value, dx = prog(x=X, y=Y)
            t = np.tanh(X * Y)
            np.testing.assert_allclose(value, t * Y, rtol=1e-14)
            assert abs(dx - (1 - t * t) * Y * Y) <= 8 * np.finfo(float).eps * Y * Y


def _big_chain_feed():
    X = np.random.default_rng(0).normal(size=1 << 19)     # numexpr's size (NUMEXPR_MIN)
    return X, np.exp(X)


def test_verify_passes_a_fused_chain_that_cancels():
    """log(exp(x) / t) at t = exp(x) is 0 up to the last place of numexpr's exp and
    of the quotient, which the log turns into a result of ±eps (times 1e6): the chain
    is bounded by its own steps' rounding carried through it, not by ulps of the
    result."""
    X, T = _big_chain_feed()
    with fg.Graph():
        x, t = fg.placeholder("x", shape=(None,)), fg.placeholder("t", shape=(None,))
        d = fg.log(fg.exp(x) / t) * 1e6
        prog = fg.compile(d, verify=True)
        got = prog(x=X, t=T)
    assert prog.generated.array_fn.fused
    assert np.max(np.abs(got)) < 1e6 * 4 * np.finfo(float).eps


def test_verify_names_the_root_of_a_fused_chain_off_by_a_few_ulps(monkeypatch):
    """A numexpr chain whose result is 64 ulps too large (its bound: 4 ulps for each of
    its 3 steps, carried through a well-conditioned chain) is reported at the chain's
    root step, its node and line; 2 ulps too large (within the root's own 4), it passes."""
    from flowgrad.engine import fusion
    real = fusion.numexpr_kernel
    X, _ = _big_chain_feed()
    for ulps, refused in ((64, True), (2, False)):
        def off(chain, ulps=ulps):
            k = real(chain)
            return lambda *a: k(*a) * (1 + ulps * np.finfo(float).eps)
        monkeypatch.setattr(fusion, "numexpr_kernel", off)
        with fg.Graph():
            x = fg.placeholder("x", shape=(None,))
            root = (fg.exp(x * 0.5) + 2.0).named("the_root")
            prog = fg.compile(fg.sum(root), verify=True)
            if not refused:
                prog(x=X)
                continue
            with pytest.raises(fg.VerifyError, match="'the_root'") as info:
                prog(x=X)
        err = info.value
        assert err.node is root and prog.plan.steps[err.step].node == root.id
        assert "test_executors.py" in str(err)
        np.testing.assert_allclose(err.got, np.exp(X * 0.5) + 2.0, rtol=1e-13)


def test_verify_names_a_scalar_math_function_off_by_a_few_ulps(monkeypatch):
    """math.exp 32 ulps too large (the bound: SCALAR_ULPS = 8 of its own value) is
    reported at the exp step; 4 ulps too large passes."""
    for ulps, refused in ((32, True), (4, False)):
        monkeypatch.setitem(scalar_kernels.KERNELS, "exp",
                            lambda v, u=ulps: math.exp(v) * (1 + u * np.finfo(float).eps))
        with fg.Graph():
            x = fg.placeholder("x")
            e = fg.exp(x * 3.0).named("the_exp")
            prog = fg.compile(fg.tanh(e) - x, verify=True)
            assert prog.executor is ex.SCALAR
            if not refused:
                prog(x=0.4)
                continue
            with pytest.raises(fg.VerifyError, match="'the_exp'") as info:
                prog(x=0.4)
        assert info.value.node is e


def test_verify_gives_the_reference_the_executors_random_draws():
    """A draw is new on every run: the reference run, the replay and the reference kernels
    take the executor's draws (random.DrawTape), so verify passes, the call returns the
    executor's draw, and the stream moves once a call (as without verify)."""
    X = np.array([0.1, -0.2, 0.3])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        r = fg.random.normal((3,), seed=1)
        y = fg.exp(x) * r
        keep = fg.random.bernoulli((3,), p=0.5, seed=2)
        h, _ = fg.scan(lambda c, k: (c * (1.0 + k) + fg.random.normal((3,), seed=3),
                                     None), x, fg.stack([keep, keep]))
        checked = fg.compile([y, h, fg.grad(fg.sum(y * h), x)], verify=True)
        plain = fg.compile([y, h, fg.grad(fg.sum(y * h), x)])
        runs = [checked(x=X) for _ in range(2)]
    draws = np.random.default_rng(1).standard_normal((2, 3))   # the node's stream, in order
    for (yv, hv, gv), d in zip(runs, draws):
        np.testing.assert_array_equal(yv, np.exp(X) * d)
    assert not np.array_equal(runs[0][1], runs[1][1])          # fresh draws every call
    assert all(v.shape == (3,) for v in plain(x=X))
