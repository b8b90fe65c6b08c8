"""The lean numpy kernels (flowgrad/engine/numpy_kernels.py), mse's shared residual and the
generated binder give the generic kernels' and the interpreter's results bit for bit,
with the same types; linear regression's derivatives stay exact."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import codegen, numpy_kernels
from flowgrad.ops.base import REGISTRY

rng = np.random.default_rng(12)


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)


def _generic(name, attrs):
    return REGISTRY[name].kernel(np, attrs)


def _arr(shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


DTYPES = [np.float64, np.float32]


# -- kernel by kernel, against the generic kernel -------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, target, static", [
    ((7,), (), (7,)), ((7,), (), (None,)), ((0,), (), (None,)), ((3, 4), (), (3, 4)),
    ((3, 4), (4,), (None, 4)), ((2, 3, 4), (3, 4), (2, 3, 4)), ((0, 4), (4,), (None, 4)),
    ((3, 4), (1, 4), (3, 4)), ((3, 4), (3, 1), (None, 4)), ((5, 1), (1, 1), (5, 1)),
    ((), (), ()), ((2, 3), (None, 3), (None, 3)),
])
def test_sum_to(dtype, x_shape, target, static):
    lean = numpy_kernels.kernel("sum_to", {"shape": target}, dtype, [static])
    x = _arr(x_shape, dtype)
    _same(lean(x), _generic("sum_to", {"shape": target})(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axes", [((3, 4), (1, 0)), ((0, 4), (1, 0)),
                                         ((2, 3, 4), (2, 0, 1)), ((2, 3), (0, 1))])
def test_transpose(dtype, shape, axes):
    lean = numpy_kernels.kernel("transpose", {"axes": axes}, dtype, [shape])
    x = _arr(shape, dtype)
    _same(lean(x), _generic("transpose", {"axes": axes})(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [
    [(6, 5), (5,), ()], [(6, 5), (5,), (6,)], [(6, 5), (5, 3), (3,)], [(6, 5), (5, 3), (1, 3)],
    [(6, 5), (5, 3), (6, 3)], [(0, 5), (5,), ()], [(5,), (5, 3), (3,)], [(5,), (5,), ()],
    [(6, 5), (5,)], [(2, 6, 5), (5, 3), (3,)], [(), (4,), (4,)], [(4,), (), ()],
])
def test_linear_and_matmul(dtype, shapes):
    vals = [_arr(s, dtype) for s in shapes]
    lean = numpy_kernels.kernel("linear", {}, dtype, shapes)
    generic = _generic("linear", {})
    if lean is None:                          # a 0-d operand: the generic kernel stays
        assert () in shapes[:2]
        return
    _same(lean(*vals), generic(*vals))
    # a Python float bias (a weak constant) and a bias of another dtype
    other = np.float32 if dtype == np.float64 else np.float64
    for b in (0.25, np.asarray(0.5, other), _arr(shapes[2], other)) if len(shapes) > 2 else ():
        _same(lean(vals[0], vals[1], b), generic(vals[0], vals[1], b))
    # with the inputs' dtypes known, the in-place bias needs no test when they agree
    static = numpy_kernels.kernel("linear", {}, dtype, shapes, [dtype] * len(shapes))
    _same(static(*vals), generic(*vals))
    if len(shapes) > 2:
        mixed = numpy_kernels.kernel("linear", {}, np.float64, shapes,
                                     [np.float32, np.float32, np.float64])
        vals32 = [v.astype(np.float32) for v in vals[:2]] + [vals[2].astype(np.float64)]
        _same(mixed(*vals32), generic(*vals32))
    mm = numpy_kernels.kernel("matmul", {}, dtype, shapes[:2])
    _same(mm(*vals[:2]), _generic("matmul", {})(*vals[:2]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (), (0,)])
def test_mse_and_its_residual_form(reduction, dtype, shape):
    y, t = _arr(shape, dtype), _arr(shape, dtype)
    generic = _generic("mse", {"reduction": reduction})
    lean = numpy_kernels.kernel("mse", {"reduction": reduction}, dtype, [shape, shape])
    of_residual = numpy_kernels.mse_of_residual(reduction)
    of_float = numpy_kernels.mse_of_residual(reduction, dtype)
    if reduction == "none":
        assert lean is None and of_residual is None and of_float is None
        return
    with np.errstate(invalid="ignore"):       # the mean of nothing is nan, as numpy says
        want = generic(y, t)
        _same(lean(y, t), want)
        _same(of_residual(y - t), want)
        _same(of_float(y - t), want)
        # static shape known: a 1-d float residual takes d.dot(d), the same bits
        _same(numpy_kernels.mse_of_residual(reduction, dtype, shape)(y - t), want)
        _same(lean(y, 0.5), generic(y, 0.5))  # a plain-number target
    # integer operands are averaged as floats, as the generic kernel does
    yi, ti = np.arange(6), np.arange(6)[::-1].copy()
    _same(lean(yi, ti), generic(yi, ti))
    _same(of_residual(yi - ti), generic(yi, ti))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((7,), (0,)), ((0, 3), (0,)), ((4, 3), (0, 1)),
                                         ((), ())])
def test_reduced_size_and_the_scalar_division_by_it(dtype, shape, axis):
    x = _arr(shape, dtype)
    generic = _generic("reduced_size", {"axis": axis})(x)
    handed_out = numpy_kernels.kernel("reduced_size", {"axis": axis}, dtype, [shape])
    _same(handed_out(x), generic)              # an output keeps the 0-d array
    inner = numpy_kernels.kernel("reduced_size", {"axis": axis}, dtype, [shape], output=False)
    count = inner(x)                            # else a numpy scalar of the same value
    assert type(count) is np.dtype(dtype).type and count == generic
    div = numpy_kernels.kernel("div", {}, dtype, [(), ()], output=False)
    assert numpy_kernels.kernel("div", {}, dtype, [(), ()]) is None       # an output
    assert numpy_kernels.kernel("div", {}, dtype, [(3,), ()], output=False) is None
    two = np.asarray(2.0, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b, c in [(two, generic, count), (2.0, generic, count), (two, generic, generic),
                        (np.asarray(-0.0, dtype), generic, count)]:
            _same(div(a, c), a / b)             # 0/0 → nan and 2/0 → inf as well


def test_integer_results_keep_the_generic_kernels():
    for name, attrs in [("sum_to", {"shape": ()}), ("linear", {}), ("matmul", {}),
                        ("transpose", {"axes": (1, 0)}), ("mse", {"reduction": "mean"})]:
        assert numpy_kernels.kernel(name, attrs, np.int64, [(3, 2), (2,)]) is None


# -- mse's residual computed once, in the generated code ----------------------------------------

def _linreg(n_rows=None, d=5, dtype="float64", reduction="mean"):
    x = fg.placeholder("x", shape=(n_rows, d), dtype=dtype)
    y = fg.placeholder("y", shape=(n_rows,), dtype=dtype)
    w = fg.variable(np.linspace(-1, 1, d).astype(dtype), name="w")
    b = fg.variable(np.asarray(0.3, dtype), name="b")
    loss = fg.mse(fg.linear(x, w, b), y, reduction=reduction)
    return x, y, w, b, loss


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n", [0, 1, 10, 1000])
def test_linear_regression_program_equals_interpreter(dtype, reduction, n):
    with fg.Graph():
        x, y, w, b, loss = _linreg(None, dtype=dtype, reduction=reduction)
        outs = [loss, *fg.grad(loss, [w, b])]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    src = gen._generated.source
    assert src.count(" - ") == 1               # y − t once: the forward mse reads it
    X, Y = _arr((n, 5), dtype), _arr((n,), dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, c in zip(gen(x=X, y=Y), ref(x=X, y=Y)):
            _same(a, c)
        for a, c in zip(gen({x: X, y: Y}), ref(x=X, y=Y)):   # the generic fast binder
            _same(a, c)


def test_residual_built_by_the_user_first_is_left_alone():
    """A y − t that precedes the mse (the user's own) is not moved; the values agree."""
    with fg.Graph():
        y = fg.placeholder("y", shape=(4,))
        t = fg.placeholder("t", shape=(4,))
        r = y - t
        loss = fg.mse(y, t) + fg.sum(r * r)
        outs = [loss, *fg.grad(loss, [y, t])]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    Y, T = _arr(4), _arr(4)
    for a, c in zip(gen(y=Y, t=T), ref(y=Y, t=T)):
        _same(a, c)


def test_an_error_in_the_shared_residual_still_names_its_node():
    with fg.Graph():
        x, y, w, b, loss = _linreg(None)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    with pytest.raises(fg.FeedError, match="run-time lengths disagree"):
        prog(x=_arr((3, 5)), y=_arr(4))


# -- linear regression's derivatives: exact ---------------------------------------------------

def test_linear_regression_gradients_and_hessian_closed_forms():
    n, d = 9, 5
    X, Y = _arr((n, d)), _arr(n)
    with fg.Graph():
        x, y, w, b, loss = _linreg(None, d)
        gw, gb = fg.grad(loss, [w, b])
        v = fg.placeholder("v", shape=(d,))
        hv = fg.grad(fg.sum(gw * v), w)            # Hessian-vector product, reverse over reverse
        prog = fg.compile([loss, gw, gb, hv])
        V = _arr(d)
        lv, gwv, gbv, hvv = prog(x=X, y=Y, v=V)
        fg.testing.check_grads(loss, [w, b], {x: X, y: Y}, order=2, rtol=1e-8, atol=1e-10)
    r = X @ w.value + b.value - Y
    np.testing.assert_allclose(lv, r @ r / n, rtol=1e-14)
    np.testing.assert_allclose(gwv, 2 / n * X.T @ r, rtol=1e-13)
    np.testing.assert_allclose(gbv, 2 / n * r.sum(), rtol=1e-13)
    np.testing.assert_allclose(hvv, 2 / n * X.T @ (X @ V), rtol=1e-13)


# -- the generated binder ----------------------------------------------------------------------

def _pair(gen, ref, *args, **kwargs):
    """Both programs' results, or both errors (same type and message)."""
    got = []
    for p in (gen, ref):
        try:
            got.append(("ok", p(*args, **kwargs)))
        except Exception as e:                # noqa: BLE001 -- compared below
            got.append((type(e), str(e)))
    (ka, a), (kb, b) = got
    assert ka == kb, got
    if ka == "ok":
        a, b = (a, b) if type(a) is list else ([a], [b])
        for u, v in zip(a, b):
            _same(u, v)
    else:
        assert a == b
    return ka


def test_generated_binder_accepts_and_refuses_as_the_interpreter():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        y = fg.placeholder("y", shape=(None,))
        k = fg.placeholder("k", shape=(3,))
        s = fg.placeholder("s", shape=())
        out = fg.sum(fg.linear(x, k) * y) * s
        outs = [out, fg.grad(out, x)]
        gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    assert "kwargs['x']" in codegen.fast_binder(gen).source
    X, Y, K = _arr((4, 3)), _arr(4), _arr(3)
    assert _pair(gen, ref, x=X, y=Y, k=K, s=2.0) == "ok"
    assert _pair(gen, ref, x=X, y=Y, k=K, s=np.float64(2.0)) == "ok"
    assert _pair(gen, ref, x=X, y=Y, k=K, s=np.asarray(2.0)) == "ok"
    assert _pair(gen, ref, x=X.astype(np.float32), y=Y, k=K, s=2.0) == "ok"   # cast
    assert _pair(gen, ref, x=X.tolist(), y=Y, k=K, s=2) == "ok"             # lists, ints
    assert _pair(gen, ref, x=X, y=Y[:3], k=K, s=2.0) is fg.FeedError        # lengths
    assert _pair(gen, ref, x=X[:, :2], y=Y, k=K, s=2.0) is fg.FeedError     # fixed length
    assert _pair(gen, ref, x=X[0], y=Y, k=K, s=2.0) is fg.FeedError         # rank
    assert _pair(gen, ref, x=X, y=Y, k=K) is fg.FeedError                   # missing
    assert _pair(gen, ref, x=X, y=Y, k=K, z=1.0) is fg.FeedError            # unknown
    assert _pair(gen, ref, x=X, y=Y, k=K, s=2.0, z=1.0) is fg.FeedError
    assert _pair(gen, ref, {"x": X, "y": Y, "k": K}, s=2.0) == "ok"         # dict + keyword
    assert _pair(gen, ref, x=X[:0], y=Y[:0], k=K, s=2.0) == "ok"            # empty rows


def test_generated_length_checks_name_the_same_pair_as_the_interpreter():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        b = fg.placeholder("b", shape=(None,))
        c = fg.placeholder("c", shape=(None, 2))
        pinned = fg.placeholder("p", shape=(None,))
        out = fg.sum(a * b) + fg.sum(c) + fg.sum(pinned + fg.constant(np.ones(3)))
        gen, ref = fg.compile(out), fg.compile(out, codegen=False)
    ok = dict(a=_arr(4), b=_arr(4), c=_arr((5, 2)), p=_arr(3))
    assert _pair(gen, ref, **ok) == "ok"
    for bad in (dict(ok, b=_arr(5)), dict(ok, a=_arr(2)), dict(ok, p=_arr(4)),
                dict(ok, a=_arr(6), b=_arr(7), p=_arr(1))):
        assert _pair(gen, ref, **bad) is fg.FeedError


def test_a_program_without_placeholders_binds_its_variables():
    with fg.Graph():
        w = fg.variable(np.arange(3.0), name="w")
        prog = fg.compile(fg.sum(w * w))
    assert float(prog()) == 5.0
    w.value = [1.0, 1.0, 1.0]
    assert float(prog()) == 3.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_of_a_vector_residual_is_vdots_bits_at_every_length(dtype):
    """d.dot(d) and vdot(d, d) of a real vector: one dotfunc, so one result, whatever
    blocking BLAS uses at each length."""
    r = np.random.default_rng(4)
    for n in (0, 1, 2, 3, 5, 8, 15, 16, 17, 31, 64, 100, 1000, 4097, 100_003):
        d = (r.standard_normal(n) * 10.0 ** r.integers(-3, 4, n)).astype(dtype)
        for reduction in ("mean", "sum"):
            with np.errstate(invalid="ignore"):
                _same(numpy_kernels.mse_of_residual(reduction, dtype, (None,))(d),
                      numpy_kernels.mse_of_residual(reduction, dtype)(d))


@pytest.mark.parametrize("shape, axis", [((3, 4), 0), ((3, 4), -1), ((3, 4), (0, 2)),
                                         ((), 0), ((2,), (-1, 0)), ((0, 2), 1)])
def test_lean_expand_dims_is_numpys_view(shape, axis):
    from flowgrad.engine.numpy_kernels import kernel
    x = np.arange(float(np.prod(shape))).reshape(shape)
    k = kernel("expand_dims", {"axis": axis}, x.dtype, in_shapes=[shape])
    got, want = k(x), np.expand_dims(x, axis)
    assert got.shape == want.shape and np.shares_memory(got, x) == np.shares_memory(want, x)
    np.testing.assert_array_equal(got, want)
    s = k(np.float64(2.5)) if shape == () else None     # a numpy scalar, as numpy does
    assert s is None or (type(s) is np.ndarray and s.shape == (1,))
