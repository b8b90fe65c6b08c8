"""Ops with a ``ufunc`` run the backend's function itself where the compiler has seen that
every step of the op reads a float or complex input (``Plan.direct_ufuncs``); a single
int- or bool-fed step keeps the casting kernel for all of them, so an int is never
computed in numpy's float16."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import elementwise

UFUNC_OPS = sorted(op.name for op in (getattr(fg, n) for n in elementwise.UFUNC_FORWARD))
SPECIAL = [0.0, -0.0, 0.5, -0.5, 1.0, 3.0, 1e-310, np.inf, -np.inf, np.nan, 700.0, -1.0]


@pytest.mark.parametrize("name", UFUNC_OPS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64",
                                   "complex128"])
def test_the_declared_ufunc_is_the_forward(name, dtype):
    op = getattr(fg, name)
    assert op.ufunc == name
    x = np.array(SPECIAL, dtype=dtype)
    with np.errstate(all="ignore"):
        want = op.forward(np, x)
        got = getattr(np, op.ufunc)(x)
        scalar_want, scalar_got = op.forward(np, x[2]), getattr(np, op.ufunc)(x[2])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert type(scalar_got) is type(scalar_want) and scalar_got == scalar_want


def _plan_of(prog):
    return prog.plan


def test_float_fed_steps_run_the_ufunc_itself():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        prog = fg.compile(fg.exp(fg.sin(x)), codegen=False)
    plan = _plan_of(prog)
    assert {op.name for op in plan.direct_ufuncs} == {"sin", "exp"}
    assert plan.kernels(np)[0] is np.sin
    xv = np.array([0.1, -2.0, 3.0])
    np.testing.assert_array_equal(prog(x=xv), np.exp(np.sin(xv)))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "bool"])
@pytest.mark.parametrize("codegen", [False, True])
def test_one_int_fed_step_keeps_the_cast_for_every_step(dtype, codegen):
    """sin of an int8 is float64, as its node declares (numpy's own sin gives float16),
    even when the plan's other sin steps read floats."""
    with fg.Graph():
        k = fg.placeholder("k", shape=(4,), dtype=dtype)
        x = fg.placeholder("x", shape=(4,))
        prog = fg.compile([fg.sin(x), fg.sin(k)], codegen=codegen)
    assert fg.sin not in prog.plan.direct_ufuncs
    kv = np.array([0, 1, 1, 0] if dtype == "bool" else [0, 1, 2, 3], dtype=dtype)
    xv = np.array([0.5, 1.0, 2.0, 3.0])
    for _ in range(3):   # first call and later ones
        a, b = prog(k=kv, x=xv)
        assert a.dtype == np.float64 and b.dtype == np.float64
        np.testing.assert_array_equal(b, np.sin(kv.astype(np.float64)))
        np.testing.assert_array_equal(a, np.sin(xv))


def test_a_large_flat_plan_with_one_int_fed_step():
    """The 10^6-node chain's path (a flat plan, the flat interpreter): the int-fed step
    lies among 2·10^5 float-fed ones."""
    from flowgrad.engine.plan import FLAT_STEPS
    with fg.Graph():
        x = fg.placeholder("x")
        k = fg.placeholder("k", dtype="int8")
        y = x
        for _ in range(FLAT_STEPS + 1):
            y = fg.cos(y)
        prog = fg.compile([y, fg.cos(k) + y], codegen=False)
    assert prog.plan.flat and fg.cos not in prog.plan.direct_ufuncs
    v, w = prog(x=0.5, k=np.int8(3))
    want = 0.5
    for _ in range(FLAT_STEPS + 1):
        want = np.cos(want)
    assert v == want and w == np.cos(3.0) + want and w.dtype == np.float64
