"""A loop's bodies are compiled as the program running the loop was: ``fg.compile(...,
codegen=False)`` runs them on the reference interpreter and ``verify=True`` runs them in
lockstep (flowgrad/engine/lockstep.py), through the plan's declared ``options`` and
``Op.runs_programs``. They were compiled with the defaults whatever the enclosing
program asked: a codegen=False program still ran its scan's body as generated scalar
code (math.tanh, not numpy's), and verify mode compared a body's generated code with
nothing (the reference run of the enclosing program ran the same body code)."""
import math

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen as fg_codegen
from flowgrad.engine import executors
from flowgrad.ops import scalar_kernels

XS = np.linspace(-1.3, 2.1, 40)
C0 = 0.37


def _numpy_scan():
    """The scan below, step by step with numpy's own float64 kernels."""
    c, ys = np.float64(C0), []
    for x in XS:
        c = np.tanh(c) * np.float64(1.1) + x
        ys.append(c * np.float64(2.0))
    return c, np.array(ys)


def _scan(**flags):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        c0 = fg.placeholder("c0", shape=())

        def step(c, xi):
            c = fg.tanh(c) * 1.1 + xi
            return c, c * 2.0
        cT, ys = fg.scan(step, c0, x)
        return fg.compile([cT, ys], **flags), cT.inputs[0]


def test_codegen_false_runs_the_body_on_the_reference_interpreter(monkeypatch):
    prog, loop = _scan(codegen=False)
    generated = []
    real = fg_codegen.generate
    monkeypatch.setattr(fg_codegen, "generate", lambda p: generated.append(p) or real(p))
    for _ in range(2):                    # the first call compiles the body, the next reuses it
        cT, ys = prog(x=XS, c0=C0)
        want_c, want_ys = _numpy_scan()
        # the reference interpreter runs numpy's kernels: numpy's loop, bit for bit (the
        # generated scalar body's math.tanh differs from np.tanh in the last place)
        assert cT == want_c and np.array_equal(ys, want_ys)
    assert generated == []                # no code generated, for the program or its body
    body = loop.attrs["spec"].bodies[0]
    assert prog.plan.options.codegen is False
    inner, _ = body.program(np, options=prog.plan.options)
    assert isinstance(inner.executor, type(executors.reference_for(inner.plan)))


def test_the_default_program_keeps_generated_bodies():
    prog, loop = _scan()
    prog(x=XS, c0=C0)
    body = loop.attrs["spec"].bodies[0]
    inner, _ = body.program(np, options=prog.plan.options)
    assert inner.executor is executors.SCALAR
    cT, ys = prog(x=XS, c0=C0)
    want_c, want_ys = _numpy_scan()
    np.testing.assert_allclose(ys, want_ys, rtol=1e-13)


def _off_by_a_little(v):
    return math.tanh(v) * (1.0 + 1e-9)


@pytest.mark.parametrize("kind", ["scan", "cond", "while"])
def test_verify_covers_the_body(monkeypatch, kind):
    # a scalar tanh off by 1e-9 relative: the body's generated code is wrong. verify=True
    # must find it in the body; before, the body was never checked (the enclosing
    # program's reference run called the same wrong body code, so both runs agreed)
    monkeypatch.setitem(scalar_kernels.KERNELS, "tanh", _off_by_a_little)
    with fg.Graph():
        c0 = fg.placeholder("c0", shape=())
        if kind == "scan":
            out = fg.scan(lambda c, xi: (fg.tanh(c) + xi, c), c0,
                          fg.constant(np.array([0.5, 0.25])))[0]
        elif kind == "cond":
            out = fg.cond(c0 > 0.0, lambda c: fg.tanh(c) * 3.0, lambda c: c, c0)
        else:
            out = fg.while_loop(lambda c: c < 1.5, lambda c: fg.tanh(c) + 0.75, c0)
        plain = fg.compile(out)
        got = plain(c0=C0)                        # no verify: the wrong code runs unseen
        checked = fg.compile(out, verify=True)
        with pytest.raises(fg.VerifyError, match="tanh"):
            checked(c0=C0)
    assert got != _reference(kind)                # (the patch does change the answer)


def _reference(kind):
    c = np.float64(C0)
    if kind == "scan":
        for x in (0.5, 0.25):
            c = np.tanh(c) + x
        return c
    if kind == "cond":
        return np.tanh(c) * 3.0
    while c < 1.5:
        c = np.tanh(c) + 0.75
    return c


def test_verify_passes_a_correct_body_and_matches_numpy():
    prog, _ = _scan(verify=True)
    cT, ys = prog(x=XS, c0=C0)
    want_c, want_ys = _numpy_scan()
    np.testing.assert_allclose(ys, want_ys, rtol=1e-13)
    assert prog.plan.options.verify is True


def test_check_numerics_reaches_the_body():
    # (already so: a checked run turns the thread's anomaly flag on for the bodies)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        cT, _ = fg.scan(lambda c, xi: (fg.log(c + xi), c), fg.constant(1.0), x)
        prog = fg.compile(cT, check_numerics=True, codegen=False)
        with pytest.raises(fg.NumericsError, match="iteration 1"):
            prog(x=np.array([1.0, -3.0, 1.0]))


def test_a_basis_map_body_follows_codegen_false_too(monkeypatch):
    # fg.jacobian(method="map") runs a compiled body once per basis vector: the same
    # declared options reach it (basis_map runs_programs)
    generated = []
    real = fg_codegen.generate
    monkeypatch.setattr(fg_codegen, "generate", lambda p: generated.append(p) or real(p))
    X = np.array([0.3, -1.2, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        J = fg.jacobian(fg.tanh(x) * x, x, method="map")
        prog = fg.compile(J, codegen=False)
        got = prog(x=X)
        assert generated == []
        fg.compile(J)(x=X)
        assert generated                   # (the default program and body do generate)
    np.testing.assert_allclose(got, np.diag(np.tanh(X) + X / np.cosh(X) ** 2), rtol=1e-14)
