"""Compile-time simplification: each rewrite is checked on a graph for fewer plan steps
AND values identical to the unsimplified program."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import simplify


def both(outputs, feed):
    """(simplified program, plain program, their values on feed) — values must match."""
    fast = fg.compile(outputs)
    with simplify.disabled():
        plain = fg.compile(outputs)
    a, b = fast(feed), plain(feed)
    for p, q in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
        assert np.asarray(p).dtype == np.asarray(q).dtype
        assert np.shape(p) == np.shape(q)
    return fast, plain, a


def test_common_subexpressions_are_computed_once(rng):
    x = fg.placeholder("x", shape=(4,))
    y = fg.placeholder("y", shape=(4,))
    a = fg.exp(x) * fg.sin(y)
    b = fg.sin(y) * fg.exp(x)           # same product, operands swapped (commutative)
    c = fg.sum(x, axis=0) + fg.sum(x, axis=(0,))   # equal attrs spelled differently
    out = a + b + c
    fast, plain, v = both(out, {x: rng.standard_normal(4), y: rng.standard_normal(4)})
    assert plain.n_steps == 11 and fast.n_steps == 7   # exp sin mul sum, a+a, s+s, +


def test_cse_keeps_different_attributes_apart(rng):
    x = fg.placeholder("x", shape=(2, 3))
    out = fg.sum(fg.sum(x, axis=0)) + fg.sum(fg.sum(x, axis=1))
    fast, plain, v = both(out, {x: rng.standard_normal((2, 3))})
    assert fast.n_steps == plain.n_steps == 5


def test_constants_are_folded(rng):
    x = fg.placeholder("x", shape=(3,))
    A = fg.constant(np.arange(3.0))
    B = fg.constant(np.full(3, 2.0))
    k = fg.exp(A) * B + fg.sum(A)       # constant: folded to one array
    out = x * k
    fast, plain, v = both(out, {x: rng.standard_normal(3)})
    assert plain.n_steps == 5 and fast.n_steps == 1
    np.testing.assert_allclose(fast({x: np.ones(3)}), np.exp(np.arange(3.0)) * 2 + 3)


def test_identities_x_times_one_plus_zero(rng):
    x = fg.placeholder("x", shape=(2, 3))
    one = fg.ones_like(x)
    zero = fg.zeros_like(x)
    # (x + 0.0 is not x at x = −0.0: x − 0.0 and x + (−0.0) are; test_silent_wrongs.py)
    out = ((x * 1.0 - 0.0) * one - zero + (-0.0)) / 1.0 - (-(-x)) + x ** 1
    fast, plain, v = both(out, {x: rng.standard_normal((2, 3))})
    assert fast.n_steps < plain.n_steps
    assert fast.n_steps == 1            # all of it is x: one copy step (never the fed array)
    X = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(fast({x: X}), X)


def test_times_zero_prunes_the_other_operand(rng):
    x = fg.placeholder("x", shape=(3,))
    expensive = fg.exp(fg.sin(x)) @ fg.constant(np.ones((3, 3)))
    out = expensive * 0.0 + fg.tanh(x)
    fast, plain, v = both(out, {x: rng.standard_normal(3)})
    assert fast.n_steps == 1            # only tanh is left
    assert plain.n_steps == 6


def test_identities_are_shape_safe(rng):
    """x·1 and x+0 where the constant broadcasts x up must keep the broadcast."""
    x = fg.placeholder("x", shape=(3,))
    out = x * fg.constant(np.ones((2, 3))) + fg.constant(np.zeros((2, 1)))
    fast, plain, v = both(out, {x: rng.standard_normal(3)})
    assert v.shape == (2, 3)
    f32 = fg.placeholder("f", shape=(2,), dtype="float32")
    out32 = f32 * fg.constant(np.ones(2))      # promotes to float64: must not alias f
    fast, plain, v = both(out32, {f32: np.ones(2, np.float32)})
    assert v.dtype == np.float64


def test_zero_adjoints_are_pruned():
    x = fg.placeholder("x", shape=(5,))
    y = fg.placeholder("y", shape=(5,))
    loss = fg.sum(fg.tanh(x)) + fg.sum(y * 0.0)
    gx, gy = fg.grad(loss, [x, y])
    fast, plain, (vx, vy) = both([gx, gy], {x: np.linspace(-1, 1, 5), y: np.ones(5)})
    assert fast.n_steps < plain.n_steps
    np.testing.assert_array_equal(vy, np.zeros(5))
    np.testing.assert_allclose(vx, 1 - np.tanh(np.linspace(-1, 1, 5)) ** 2)


def test_unknown_lengths_keep_their_steps(rng):
    x = fg.placeholder("x", shape=(None, 2))
    out = x * fg.zeros_like(x) + fg.exp(x)
    fast, plain, v = both(out, {x: rng.standard_normal((4, 2))})
    assert v.shape == (4, 2) and fast.n_steps <= plain.n_steps


def test_outputs_aliasing_a_leaf_are_copies(rng):
    x = fg.placeholder("x", shape=(3,))
    w = fg.variable(np.ones(3), name="w")
    X = rng.standard_normal(3)
    vx, vw = fg.compile([x * 1.0, w + 0.0])(x=X)
    assert vx is not X and not np.shares_memory(vx, X)
    assert not np.shares_memory(vw, w.value)
    vx[:] = 0
    assert X.any() and w.value.tolist() == [1.0, 1.0, 1.0]


def test_feeds_still_required_after_rewrites():
    x = fg.placeholder("x", shape=(3,))
    prog = fg.compile(x * 0.0)
    assert prog.n_steps == 0
    with pytest.raises(fg.FeedError, match="x"):
        prog()
    np.testing.assert_array_equal(prog(x=np.ones(3)), np.zeros(3))


def test_trace_values_survive_simplification():
    x = fg.placeholder("x")
    a = x * 1.0
    b = fg.exp(a) + fg.exp(x)           # exp(a) and exp(x) become one step
    tr = fg.compile(b).trace(x=0.5)
    assert tr[a] == 0.5 and tr[b] == pytest.approx(2 * np.exp(0.5))
    assert tr.adjoint(x) == pytest.approx(2 * np.exp(0.5))


def test_freeze_keys_attributes_carefully():
    f = simplify.freeze
    assert f(1) != f(1.0) != f(True)
    assert f(0.0) != f(-0.0)
    assert f(float("nan")) == f(float("nan"))
    assert f(slice(1, None)) == f(slice(1, None)) != f(slice(1, 2))
    assert f(np.arange(3)) == f(np.arange(3)) != f(np.arange(3.0))
    assert f((0, np.int64(1))) != f((0, 1))
    big = np.zeros(10 ** 5)
    assert f(big) == f(big) and f(big) != f(np.zeros(10 ** 5))   # identity beyond a size
    hash(f({"axis": (0, 1), "index": (slice(None), Ellipsis, None)}))


@pytest.mark.parametrize("c", [[-0.0, 0.0], [0.0, -0.0], [-0.0 + 0.0j, 0.0 - 0.0j]])
def test_a_constant_of_zeros_of_both_signs_is_not_a_fill(c):
    """x + [−0.0, +0.0] keeps x's −0.0 in the first entry only; x − [+0.0, −0.0] likewise.
    −0.0 == +0.0, so an equality test alone took the constant for one signed zero."""
    c = np.array(c)
    X = np.zeros(2, c.dtype) * -1.0                  # [−0.0, −0.0] (real and imaginary)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype=c.dtype)
        for out, want in ((x + c, X + c), (x - c, X - c)):
            for codegen in (True, False):
                got = fg.compile(out, codegen=codegen)(x=X)
                np.testing.assert_array_equal(np.signbit(got.real), np.signbit(want.real))
                np.testing.assert_array_equal(np.signbit(got.imag), np.signbit(want.imag))
    # one sign throughout is still a fill: x + (−0.0) is x
    assert simplify._uniform(np.array([-0.0, -0.0])) == 0.0
    assert simplify._uniform(np.array([-0.0, 0.0])) is None


def test_simplify_is_linear_on_a_long_chain():
    x = fg.placeholder("x", shape=(2,))
    y = x
    for _ in range(5_000):
        y = y * 1.0 + 0.0               # 20,000 nodes that all simplify away
    y = fg.exp(y)
    prog = fg.compile(y)
    # the first y + 0.0 stays (−0.0 + 0.0 is +0.0); its result is never −0.0, so every
    # later + 0.0 goes
    assert prog.n_steps == 2
    np.testing.assert_allclose(prog(x=np.zeros(2)), [1.0, 1.0])


# -- negations absorbed ---------------------------------------------------------------------

_EDGES = np.array([0.0, -0.0, 1.5, -2.25, 1e308, -1e308, np.inf, -np.inf, np.nan, 3e-320])


def test_negations_are_absorbed_exactly(rng):
    x = fg.placeholder("x", shape=(10,))
    y = fg.placeholder("y", shape=(10,))
    nx, ny = -x, -y
    outs = [x + ny,             # x − y
            nx + y,             # y − x
            x - ny,             # x + y
            nx * ny,            # x·y
            -(x - y),           # y − x
            -(nx + ny),         # x + y
            -(nx * y),          # x·y
            -(x * ny)]          # x·y
    feeds = [{x: rng.standard_normal(10), y: rng.standard_normal(10)},
             {x: _EDGES, y: _EDGES[::-1].copy()}, {x: _EDGES, y: _EDGES}]
    with np.errstate(all="ignore"):
        for feed in feeds:
            fast, plain, v = both(outs, feed)
    # what is left: x − y, y − x, x + y, x·y (CSE merges the rest); no negation at all
    assert fast.n_steps == 4, [op.name for op in (st.op for st in fast.plan.steps)]
    assert plain.n_steps == 14


def test_a_rewritten_negation_is_still_absorbed_by_its_readers(rng):
    x = fg.placeholder("x", shape=(5,))
    y = fg.placeholder("y", shape=(5,))
    d = -(x - y)                       # → y − x, still known to be −(x − y)
    out = fg.exp(x) + d                # → exp(x) − (x − y)
    fast, plain, v = both([out, -d], {x: rng.standard_normal(5), y: rng.standard_normal(5)})
    names = sorted(op.name for op in (st.op for st in fast.plan.steps))
    assert names == ["exp", "sub", "sub"], names    # −d is x − y itself


def test_tanh_fourth_derivative_loses_its_negations():
    X = np.linspace(-3, 3, 64)
    with fg.Graph():
        x = fg.placeholder("x", shape=(64,))
        d = fg.tanh(x)
        for _ in range(4):
            d = fg.grad(fg.sum(d), x)
        fast, plain, v = both(d, {x: X})
    assert fast.n_steps == 22          # 29 before negations were absorbed
    assert not any(op.name == "neg" for op in (st.op for st in fast.plan.steps))
    t = np.tanh(X)
    np.testing.assert_allclose(v, 8 * t * (1 - t * t) * (2 - 3 * t * t), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(10))
def test_random_sign_graphs_equal_the_plain_program(seed):
    """Random add/sub/mul/neg graphs (broadcast shapes, edge values): exactly the values
    of the unsimplified program, with no more steps."""
    r = np.random.default_rng(seed)
    with fg.Graph():
        leaves = [fg.placeholder("a", shape=(3, 4)), fg.placeholder("b", shape=(4,)),
                  fg.placeholder("c", shape=(3, 4))]
        pool = list(leaves)
        for _ in range(40):
            kind = r.integers(5)
            p, q = pool[r.integers(len(pool))], pool[r.integers(len(pool))]
            if kind == 0:
                pool.append(-p)
            elif kind == 1:
                pool.append(p + q)
            elif kind == 2:
                pool.append(p - q)
            elif kind == 3:
                pool.append(p * q)
            else:
                pool.append(-(-p if r.integers(2) else p) - (-q))
        outs = [fg.sum(pool[-1]), pool[-2], *fg.grad(fg.sum(pool[-1] * pool[-3]), leaves)]
        feed = {"a": r.standard_normal((3, 4)), "b": r.standard_normal(4),
                "c": r.standard_normal((3, 4))}
        # finite edges: x − x → 0 ignores inf/nan by convention (module docstring), and
        # absorbed negations expose more x − x
        fin = np.array([0.0, -0.0, 1.5, -2.25, 3e-320, 7.0])
        edge = {"a": r.choice(fin, (3, 4)), "b": r.choice(fin, 4), "c": r.choice(fin, (3, 4))}
        with np.errstate(all="ignore"):
            fast, plain, _ = both(outs, feed)
            both(outs, edge)
        assert fast.n_steps <= plain.n_steps


def test_a_fold_that_makes_a_nan_or_inf_is_left_to_run_time(rng):
    """Folding ran with floating-point errors ignored, so a NaN made at compile time hid
    from check_numerics (which watches run-time steps) and from the user's errstate:
    log(0·x − 1) + x gave NaN silently under check_numerics=True. Such a fold is now a
    run-time step: the same values, and the checks name its node."""
    x = fg.placeholder("x", shape=(3,))
    bad = fg.log(fg.zeros_like(x) - 1.0)
    feed = {x: rng.standard_normal(3)}
    _, _, got = both(bad + x, feed)
    assert np.isnan(got).all()
    with pytest.raises(fg.NumericsError) as info:
        fg.compile(bad + x, check_numerics=True)(feed)
    assert info.value.node is bad
    c = fg.constant(np.array([4.0, -1.0]))
    with np.errstate(all="raise"), pytest.raises(FloatingPointError, match="sqrt"):
        fg.compile(fg.sqrt(c) * x[:2])(feed)
    # the boundary: finite folds still fold, and so do NaNs a constant already held
    fine = fg.compile(fg.sqrt(fg.constant(np.array([4.0, 0.0]))) * x[:2])
    held = fg.compile(fg.sqrt(fg.constant(np.array([4.0, np.nan]))) * x[:2])
    assert fine.n_steps == held.n_steps == fg.compile(c * x[:2]).n_steps
    np.testing.assert_array_equal(fine(feed), np.array([2.0, 0.0]) * feed[x][:2])
