"""The first calls of a long scalar program run on scalar_tier's loop, not generated source.

Its results must be the generated function's, bit for bit (type, value, sign of zero,
NaN; ``None`` when an output is not finite; the same exception type when a kernel
raises): checked on every scalar kernel with edge values, on random scalar graphs with
their gradients, and through Program calls (first call on the loop, later ones on the
compiled source).
"""
import math
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen, scalar_plan, scalar_tier
from test_codegen import _BINARY, _EDGE, _SCALAR_OPS, _UNARY, _random_graph, scalar_op_outputs


def _run(fn, lv):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*lv)
    except Exception as exc:       # the caller reruns on arrays either way
        return type(exc)


def _identical(a, b):
    if a is None or isinstance(a, type):
        assert a is b
        return
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)
        assert np.signbit(np.asarray(x)).tolist() == np.signbit(np.asarray(y)).tolist()


def _tiers(prog):
    """(the loop, the compiled generated function) of a lazy scalar program."""
    sc = prog._generated.scalar
    assert sc is not None
    loop = scalar_tier.interpreter(prog.plan, codegen.constants(prog.plan), sc.leaves)
    lv = [0.5] * len(sc.leaves)
    for _ in range(scalar_tier.WARM_CALLS + 1):   # past the warm calls: source compiled
        _run(sc.fn, lv)
    assert "_materialize" not in sc.fn.__code__.co_names
    return loop, sc.fn


@pytest.fixture
def lazy(monkeypatch):
    monkeypatch.setattr(scalar_plan, "LAZY_LINES", 0)   # every scalar plan is lazy


@pytest.mark.parametrize("opname", sorted(_SCALAR_OPS))
def test_the_loop_equals_generated_code_on_every_scalar_kernel(opname, lazy):
    with fg.Graph():
        outs, a = scalar_op_outputs(opname)
        prog = fg.compile(outs + [a, fg.constant(2.5)])   # a leaf and a constant out
    loop, gen = _tiers(prog)
    rng = np.random.default_rng(5)
    pairs = [(x, y) for x in _EDGE for y in (0.5, -2.0, x)] + \
        [tuple(rng.standard_normal(2) * 3) for _ in range(30)]
    for x, y in pairs:
        _identical(_run(loop, [float(x), float(y)]), _run(gen, [float(x), float(y)]))


@pytest.mark.parametrize("seed", range(12))
def test_the_loop_equals_generated_code_on_random_scalar_graphs(seed, lazy):
    rng = np.random.default_rng(200 + seed)
    with fg.Graph():
        xs = [fg.placeholder(f"x{i}") for i in range(2)] + [fg.variable(0.3, name="v")]
        y = _random_graph(rng, xs, 25, _UNARY, _BINARY)
        outs = [y, *fg.grad(y, xs)]
        prog = fg.compile(outs)
    loop, gen = _tiers(prog)
    n = len(prog._generated.scalar.leaves)
    for _ in range(8):
        lv = list(rng.standard_normal(n) * 2)
        _identical(_run(loop, lv), _run(gen, lv))


def test_a_long_chain_answers_first_from_the_loop_then_from_compiled_source():
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(600):          # > LAZY_LINES steps with its gradient
            y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
        outs = [y, fg.grad(y, x)]
        prog, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    assert prog.n_steps > scalar_plan.LAZY_LINES
    fn = prog._generated.scalar.fn
    stub = fn.__code__
    first = prog(x=0.4)
    assert fn.__code__ is stub                # the first call wrote no source
    later = [prog(x=0.4) for _ in range(2)]
    assert fn.__code__ is not stub
    for got in [first] + later:
        _identical(got, later[-1])
        for g, w in zip(got, ref(x=0.4)):
            assert type(g) is type(w)
            assert float(g) == pytest.approx(float(w), rel=1e-12)
    # an overflow on the first call reruns on arrays, as from the compiled code
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(700):
            y = fg.exp(y) * 0.5 + y
        outs = [y, fg.grad(y, x)]
        prog, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    assert prog.n_steps > scalar_plan.LAZY_LINES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, want = prog(x=3.0), ref(x=3.0)
    assert math.isinf(got[0])
    _identical(got, want)
