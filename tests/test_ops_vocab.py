"""Issue 22's ops against PyTorch in float64: values, reverse-mode gradients and
forward-mode tangents to ~1e-10, at random inputs and at the edge values each op
documents (kinks, bounds, zeros, far tails); the dtype policy; and the refusals, each
at the first bad value. (Finite differences to second order: tests/op_cases.py.)"""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)
_r = np.random.default_rng(22)


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def ours(fn, arrays, weights):
    """fn's value, the gradient of Σ w·fn w.r.t. each input, and the tangent of fn along
    the directions ``dirs`` (weights reused as directions: any fixed arrays do)."""
    with fg.Graph():
        xs = [fg.placeholder(f"x{i}", shape=np.shape(a)) for i, a in enumerate(arrays)]
        y = fn(*xs)
        s = fg.sum(y * weights)
        grads = fg.grad(s, xs)
        dirs = [np.cos(np.arange(np.size(a)) + i).reshape(np.shape(a))
                for i, a in enumerate(arrays)]
        tangent = fg.jvp(y, xs, dirs)
        feed = dict(zip(xs, [np.asarray(a, dtype=np.float64) for a in arrays]))
        return fg.run([y, *grads, tangent], feed), dirs


def theirs(fn, arrays, weights, dirs):
    ts = [_t(a) for a in arrays]
    y = fn(*ts)
    grads = torch.autograd.grad((y * torch.tensor(weights)).sum(), ts, allow_unused=True)
    grads = [np.zeros(np.shape(a)) if g is None else g.numpy() for g, a in zip(grads, arrays)]
    _, tangent = torch.func.jvp(fn, tuple(torch.tensor(np.asarray(a, float)) for a in arrays),
                                tuple(torch.tensor(d) for d in dirs))
    return [y.detach().numpy(), *grads, tangent.numpy()]


def compare(fg_fn, torch_fn, *arrays, out_shape=None, **tol):
    shape = out_shape if out_shape is not None else np.broadcast_shapes(
        *[np.shape(a) for a in arrays])
    weights = _r.standard_normal(shape)
    got, dirs = ours(fg_fn, arrays, weights)
    want = theirs(torch_fn, arrays, weights, dirs)
    for name, g, w in zip(["value"] + [f"grad {i}" for i in range(len(arrays))] + ["jvp"],
                          got, want):
        np.testing.assert_allclose(g, w, err_msg=name, **{**TOL, **tol})


EDGE = np.array([-40.0, -10.0, -3.0, -2.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 2.0, 3.0, 10.0, 40.0])


# -- elementwise, against torch -----------------------------------------------------------

@pytest.mark.parametrize("x", [EDGE, _r.standard_normal((3, 4)) * 3], ids=["edges", "random"])
def test_gelu_erf_tan_match_torch(x):
    compare(fg.gelu, F.gelu, x)
    compare(fg.erf, torch.erf, x)
    small = np.clip(x, -1.4, 1.4)
    compare(fg.tan, torch.tan, small)


def test_gelu_far_tails_keep_relative_accuracy():
    # Φ(−x) from erfc, e^(−x²/2) without rounding x² first: gelu(−30) = −30 Φ(−30) ≈
    # −1.47e−196 to the last digits (1 + erf(x/√2) would give 0; scipy's ndtr is 6e−14 off)
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.array([-30.0, -20.0, -8.0, -2.5, 8.0, 30.0])
    cdf = np.array([float(mpmath.ncdf(v)) for v in x])
    pdf = np.array([float(mpmath.npdf(v)) for v in x])
    with fg.Graph():
        p = fg.placeholder("p", shape=x.shape)
        y, g = fg.run([fg.gelu(p), fg.grad(fg.sum(fg.gelu(p)), p)], {p: x})
    far = np.abs(x) > 5
    np.testing.assert_allclose(y[far], (x * cdf)[far], rtol=1e-14)
    # where 1 − erf cancels (Φ(x) for −2.83 < x < 0) the documented bound is 3e−13
    np.testing.assert_allclose(y, x * cdf, rtol=3e-13)
    np.testing.assert_allclose(g, cdf + x * pdf, rtol=3e-13)


def test_elu_and_leaky_relu_match_torch_including_zero():
    x = np.array([-3.0, -1.0, -1e-9, 0.0, 1e-9, 2.0])
    compare(lambda a: fg.elu(a, 1.5), lambda a: F.elu(a, 1.5), x)
    compare(lambda a: fg.leaky_relu(a, 0.2), lambda a: F.leaky_relu(a, 0.2), x)
    compare(fg.leaky_relu, F.leaky_relu, x)       # the default slope, 0.01, as torch's


def test_elu_and_leaky_relu_derivatives_at_zero_are_torchs():
    with fg.Graph():
        p = fg.placeholder("p", shape=(1,))
        ge = fg.grad(fg.sum(fg.elu(p, alpha=1.5)), p)
        gl = fg.grad(fg.sum(fg.leaky_relu(p, 0.2)), p)
        te, tl = fg.jvp(fg.elu(p, 1.5), p, [1.0]), fg.jvp(fg.leaky_relu(p, 0.2), p, [1.0])
        assert [v.tolist() for v in fg.run([ge, gl, te, tl], {p: [0.0]})] == \
            [[1.5], [0.2], [1.5], [0.2]]


def test_clip_matches_torch_clamp_at_and_between_the_bounds():
    x = np.array([-2.0, -0.5, -0.2, 0.0, 0.3, 0.7, 1.5])
    compare(lambda a: fg.clip(a, -0.5, 0.7), lambda a: torch.clamp(a, -0.5, 0.7), x)
    # at a bound x keeps the whole derivative (torch.clamp's convention)
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,))
        g = fg.run(fg.grad(fg.sum(fg.clip(p, -1.0, 1.0)), p), {p: [-1.0, 1.0, 1.0000001]})
    np.testing.assert_array_equal(g, [1.0, 1.0, 0.0])


def test_clip_sends_nothing_to_a_nan_x_as_torch_clamp():
    """∂/∂x = [lo ≤ x ≤ hi] is false at NaN: the adjoint of a NaN entry is 0, also in
    the forward rule, and ±inf outside the bounds get 0 as any value outside."""
    x = np.array([np.nan, 0.5, 2.0, np.inf, -np.inf, 1.0])
    t = torch.tensor(x, requires_grad=True)
    torch.clamp(t, -1.0, 1.0).sum().backward()
    with fg.Graph():
        p = fg.placeholder("p", shape=(6,))
        g = fg.grad(fg.sum(fg.clip(p, -1.0, 1.0)), p)
        tangent = fg.jvp(fg.clip(p, -1.0, 1.0), p, np.ones(6))
        for codegen in (True, False):
            got, tan = fg.compile([g, tangent], codegen=codegen)(p=x)
            np.testing.assert_array_equal(got, t.grad.numpy())
            np.testing.assert_array_equal(tan, [0.0, 1.0, 0.0, 0.0, 0.0, 1.0])


def test_clip_with_tensor_bounds_matches_torch_and_sums_to_one():
    x = np.array([-1.0, 0.5, 2.0, 0.0, 1.0, -1.0, 3.0])
    lo = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 2.0])
    hi = np.array([1.0, 1.0, 1.0, 0.0, 1.0, -0.5, 1.0])   # the last two: hi < lo
    compare(fg.clip, torch.clamp, x, lo, hi)
    # lo = hi with x below both: flowgrad gives the derivative to hi (torch gives it to
    # neither, so its three derivatives sum to 0 where the value moves with lo = hi)
    with fg.Graph():
        ps = [fg.placeholder(n, shape=(1,)) for n in "xlh"]
        gs = fg.run(fg.grad(fg.sum(fg.clip(*ps)), ps), dict(zip(ps, ([-1.0], [0.0], [0.0]))))
    assert [float(g[0]) for g in gs] == [0.0, 0.0, 1.0]


def test_clip_needs_a_bound_and_takes_none_for_one():
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,))
        with pytest.raises(ValueError, match="at least one of lo and hi"):
            fg.clip(p)
        np.testing.assert_array_equal(fg.run(fg.clip(p, None, 0.5), {p: [-9.0, 0.4, 9.0]}),
                                      [-9.0, 0.4, 0.5])
        k = fg.placeholder("k", shape=(2,), dtype="int32")
        v = fg.run(fg.clip(k, 0), {k: np.array([-3, 4], np.int32)})
        assert v.dtype == np.int32 and v.tolist() == [0, 4]


# -- reductions and scans --------------------------------------------------------------------

@pytest.mark.parametrize("axis,ddof", [(None, 0), (0, 1), (1, 0), ((0, 2), 1), (-1, 2)])
def test_var_and_std_match_torch(axis, ddof):
    x = _r.standard_normal((4, 3, 3)) + 100.0      # far from 0: the two-pass form matters
    dims = tuple(range(3)) if axis is None else axis
    out = np.var(x, axis=axis).shape
    compare(lambda a: fg.var(a, axis, ddof), lambda a: torch.var(a, dim=dims, correction=ddof),
            x, out_shape=out)
    compare(lambda a: fg.std(a, axis, ddof), lambda a: torch.std(a, dim=dims, correction=ddof),
            x, out_shape=out)


def test_var_at_the_ddof_boundary():
    x = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    with fg.Graph():
        p = fg.placeholder("p", shape=(2, 3))
        np.testing.assert_allclose(fg.run(fg.var(p, axis=1, ddof=2), {p: x}),
                                   np.var(x, axis=1, ddof=2), rtol=1e-15)   # N − 1
        with pytest.raises(fg.ShapeError, match=r"ddof=3 needs more than 3 entries"):
            fg.var(p, axis=1, ddof=3)                                        # N: refused
        with pytest.raises(fg.ShapeError, match="ddof=6"):
            fg.var(p, ddof=6)
        fg.var(p, ddof=5)
        with pytest.raises(TypeError, match="ddof must be a number"):
            fg.var(p, ddof=-1)


def test_var_over_a_run_time_length_refuses_ddof_n_when_it_runs():
    with fg.Graph():
        p = fg.placeholder("p", shape=(None,))
        v = fg.var(p, ddof=1)
        g = fg.grad(v, p)
        x = np.array([1.0, 2.0, 4.0])
        np.testing.assert_allclose(fg.run([v, g], {p: x})[1], 2 * (x - x.mean()) / 2)
        with pytest.raises(fg.RunError, match=r"ddof=1 needs more than 1 entries") as err:
            fg.run(v, {p: [5.0]})
        assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
def test_prod_matches_torch(axis):
    x = _r.uniform(0.5, 1.5, (3, 4, 2)) * _r.choice([-1, 1], (3, 4, 2))
    out = np.prod(x, axis=axis).shape
    if axis is None:
        tf = torch.prod
    elif isinstance(axis, int):
        tf = lambda a: torch.prod(a, dim=axis)     # noqa: E731
    else:
        tf = lambda a: torch.prod(torch.prod(a, dim=2), dim=0)   # noqa: E731
    compare(lambda a: fg.prod(a, axis), tf, x, out_shape=out)


@pytest.mark.parametrize("x,grad", [
    ([2.0, 0.0, 3.0, 5.0], [0.0, 30.0, 0.0, 0.0]),     # one zero: the others' product there
    ([2.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]),      # two zeros: 0 everywhere
    ([0.0], [1.0]), ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
])
def test_prod_gradient_at_zeros_is_exact(x, grad):
    compare(fg.prod, torch.prod, np.array(x), out_shape=())
    with fg.Graph():
        p = fg.placeholder("p", shape=(len(x),))
        assert fg.run(fg.grad(fg.prod(p), p), {p: x}).tolist() == grad


def test_prod_hessian_at_a_zero_is_the_product_of_the_other_others():
    x = np.array([2.0, 0.0, 3.0, 5.0, -1.0])
    n = len(x)
    want = np.array([[0.0 if i == j else np.prod(np.delete(x, [i, j])) for j in range(n)]
                     for i in range(n)])
    with fg.Graph():
        p = fg.placeholder("p", shape=(n,))
        np.testing.assert_array_equal(fg.run(fg.hessian(fg.prod(p), p), {p: x}), want)
    tx = _t(x)
    np.testing.assert_allclose(torch.autograd.functional.hessian(torch.prod, tx).numpy(),
                               want, atol=1e-15)


def test_prod_derivative_over_a_run_time_length_is_refused_by_name():
    with fg.Graph():
        p = fg.placeholder("p", shape=(2, None))
        y = fg.prod(p, axis=0)                   # the run-time axis is not reduced: fine
        fg.grad(fg.sum(y), p)
        with pytest.raises(fg.DifferentiationError, match=r"prod's derivative needs"):
            fg.grad(fg.sum(fg.prod(p, axis=1)), p)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_cumsum_matches_torch(axis):
    x = _r.standard_normal((3, 4))
    if axis is None:
        compare(lambda a: fg.cumsum(a), lambda a: torch.cumsum(a.reshape(-1), 0), x,
                out_shape=(12,))
    else:
        compare(lambda a: fg.cumsum(a, axis), lambda a: torch.cumsum(a, axis), x)


# -- einsum, pad, split, astype ----------------------------------------------------------------

@pytest.mark.parametrize("spec,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("i,i->", [(4,), (4,)]), ("ij->", [(2, 3)]), ("ij,k->ijk", [(2, 2), (3,)]),
    ("ijk->kj", [(2, 3, 4)]), ("i,ij,jk", [(2,), (2, 3), (3, 2)]),
])
def test_einsum_matches_torch(spec, shapes):
    arrays = [_r.standard_normal(s) for s in shapes]
    out = np.einsum(spec, *arrays).shape
    compare(lambda *a: fg.einsum(spec, *a), lambda *a: torch.einsum(spec, *a), *arrays,
            out_shape=out)


@pytest.mark.parametrize("spec,match", [
    ("ij,jk", "names 2 operands, but 1 were given"),
    ("ijk", "term 'ijk' has 3 letters"),
    ("i...->i", r"'\.\.\.' is not supported"),
    ("ii->i", "a letter repeated within 'ii'"),
    ("ij->ik", "must name letters of the inputs"),
    ("ij->ii", "must name letters of the inputs"),
    ("i1->i", "axes are named by letters"),
])
def test_einsum_refuses_a_bad_spec(spec, match):
    with fg.Graph():
        a = fg.placeholder("a", shape=(2, 2))
        with pytest.raises(fg.ShapeError, match=match):
            fg.einsum(spec, a)


def test_einsum_refuses_lengths_that_disagree():
    with fg.Graph():
        a, b = fg.placeholder("a", shape=(2, 3)), fg.placeholder("b", shape=(4, 2))
        with pytest.raises(fg.ShapeError, match="letter 'j' has lengths 3 and 4"):
            fg.einsum("ij,jk->ik", a, b)
        c = fg.placeholder("c", shape=(None, 3))
        assert fg.einsum("ij,jk->ik", c, fg.placeholder("d", shape=(3, 5))).shape == (None, 5)


@pytest.mark.parametrize("widths,value", [(((1, 2), (0, 3)), 0.0), (1, 2.5), ((2, 0), -1.0)])
def test_pad_matches_torch(widths, value):
    x = _r.standard_normal((2, 3))
    want = np.pad(x, widths, constant_values=value)
    w = np.broadcast_to(np.asarray(widths, dtype=int), (2, 2)) if not isinstance(
        widths, int) else np.full((2, 2), widths)
    torch_pad = tuple(int(v) for b, a in w[::-1] for v in (b, a))   # last axis first
    compare(lambda a: fg.pad(a, widths, value=value),
            lambda a: F.pad(a, torch_pad, value=value), x, out_shape=want.shape)


def test_pad_keeps_run_time_lengths_and_refuses_bad_widths():
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 2))
        y = fg.pad(p, ((1, 1), (0, 2)))
        assert y.shape == (None, 4)
        g = fg.grad(fg.sum(y * y), p)
        x = np.arange(6.0).reshape(3, 2)
        np.testing.assert_array_equal(fg.run(g, {p: x}), 2 * x)
        with pytest.raises(fg.ShapeError, match="negative pad width"):
            fg.pad(p, ((0, -1), (0, 0)))
        with pytest.raises(fg.ShapeError, match="no \\(before, after\\) pair"):
            fg.pad(p, ((1, 1), (1, 1), (1, 1)))


def test_split_matches_torch_and_numpy():
    x = _r.standard_normal((6, 2))
    for k, part in enumerate(np.split(x, 3)):
        compare(lambda a: fg.split(a, 3)[k], lambda a: torch.split(a, 2)[k], x,
                out_shape=part.shape)
    with fg.Graph():
        p = fg.placeholder("p", shape=(None, 2))
        parts = fg.split(p, [1, 4])
        assert isinstance(parts, tuple) and [q.shape for q in parts] == [(None, 2)] * 3
        for got, want in zip(fg.run(list(parts), {p: x}), np.split(x, [1, 4])):
            np.testing.assert_array_equal(got, want)


def test_split_refuses_uneven_sections_at_the_first_bad_count():
    with fg.Graph():
        p = fg.placeholder("p", shape=(6, 2))
        assert len(fg.split(p, 6)) == 6
        with pytest.raises(fg.ShapeError, match="length 6 does not split into 4 equal"):
            fg.split(p, 4)
        with pytest.raises(fg.ShapeError, match="must be ≥ 1"):
            fg.split(p, 0)
        with pytest.raises(fg.ShapeError, match="need axis 0's length"):
            fg.split(fg.placeholder("q", shape=(None,)), 2)


def test_astype_converts_and_carries_derivatives_between_floats():
    x = np.array([0.5, -1.75, 3.0])
    compare(lambda a: fg.astype(a, "float32") * 1.0, lambda a: a.float().double(), x,
            rtol=1e-7)
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,), dtype="float32")
        y = fg.astype(p, np.float64)
        assert y.dtype == np.float64
        g = fg.grad(fg.sum(y * y), p)
        assert g.dtype == np.float32
        np.testing.assert_array_equal(fg.run(g, {p: x.astype(np.float32)}),
                                      (2 * x).astype(np.float32))
        v = fg.run(fg.astype(p, "int32"), {p: x.astype(np.float32)})
        assert v.dtype == np.int32 and v.tolist() == [0, -1, 3]     # truncation, as numpy
        assert fg.astype(p, "float32") is p


@pytest.mark.parametrize("dtype", ["float128", "object", "str", "datetime64", "floaty"])
def test_astype_refuses_a_dtype_naming_the_accepted_ones(dtype):
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,))
        with pytest.raises(fg.UsageError, match=r"astype: dtype .* is not one flowgrad knows; "
                                                r"use one of bool, int8, .*float64, complex64, "
                                                r"complex128"):
            fg.astype(p, dtype)


# -- dtype policy -----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    fg.gelu, fg.erf, fg.tan, fg.elu, fg.leaky_relu, lambda a: fg.clip(a, -0.5, 0.5),
    fg.var, fg.std, fg.prod, fg.cumsum, lambda a: fg.einsum("i,i->", a, a),
    lambda a: fg.pad(a, 1), lambda a: fg.split(a, 2)[0],
], ids=["gelu", "erf", "tan", "elu", "leaky_relu", "clip", "var", "std", "prod", "cumsum",
        "einsum", "pad", "split"])
def test_float32_stays_float32_values_and_gradients(make):
    x = np.array([0.3, -0.8, 1.1, 0.6], dtype=np.float32)
    with fg.Graph():
        p = fg.placeholder("p", shape=(4,), dtype="float32")
        y = make(p)
        g = fg.grad(fg.sum(y), p)
        yv, gv = fg.run([y, g], {p: x})
        assert y.dtype == g.dtype == np.float32 == yv.dtype == gv.dtype
        q = fg.placeholder("q", shape=(4,))
        want = fg.run(make(q), {q: x.astype(np.float64)})
    np.testing.assert_allclose(yv, want, rtol=2e-6, atol=1e-6)


def test_integer_inputs_follow_numpy():
    k = np.array([3, -1, 2, 0], dtype=np.int32)
    with fg.Graph():
        p = fg.placeholder("p", shape=(4,), dtype="int32")
        outs = [fg.erf(p), fg.tan(p), fg.gelu(p), fg.var(p), fg.prod(p), fg.cumsum(p),
                fg.clip(p, 0, 2), fg.pad(p, 1)]
        vals = fg.run(outs, {p: k})
    for o, v, want in zip(outs, vals, [np.tan(k), np.tan(k), np.tan(k), np.var(k),
                                        np.prod(k), np.cumsum(k), np.clip(k, 0, 2),
                                        np.pad(k, 1)]):
        assert o.dtype == np.asarray(v).dtype == np.asarray(want).dtype, o.name


def test_erf_and_gelu_at_infinities_and_nan():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0])
    with fg.Graph():
        p = fg.placeholder("p", shape=(5,))
        with np.errstate(invalid="ignore"):
            e, g = fg.run([fg.erf(p), fg.gelu(p)], {p: x})
    np.testing.assert_array_equal(e, [1.0, -1.0, np.nan, 0.0, -0.0])
    want = F.gelu(torch.tensor(x)).numpy()          # gelu(−inf) = −inf·0: nan, as torch
    np.testing.assert_array_equal(g, want)


# -- decompositions: against torch, and finite differences to second order -------------------

def _spd(n, batch=()):
    a = _r.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def _distinct_sv(m, n):
    u, _, vh = np.linalg.svd(_r.standard_normal((m, n)), full_matrices=False)
    return (u * np.linspace(3.0, 1.0, min(m, n))) @ vh


def test_cholesky_matches_torch_and_reads_the_lower_triangle():
    s = _spd(4)
    # numpy's (and our) cholesky is a function of the lower triangle only; torch's
    # gradient is the symmetric one, so torch is handed the same function of x
    compare(fg.cholesky, lambda x: torch.linalg.cholesky(torch.tril(x) + torch.tril(x, -1).T), s)
    junk = s + np.triu(_r.standard_normal((4, 4)), 1)      # numpy reads only tril
    with fg.Graph():
        p = fg.placeholder("p", shape=(4, 4))
        np.testing.assert_allclose(fg.run(fg.cholesky(p), {p: junk}), np.linalg.cholesky(s),
                                   rtol=1e-13, atol=1e-14)
        g = fg.run(fg.grad(fg.sum(fg.cholesky(p)), p), {p: junk})
        assert np.all(np.triu(g, 1) == 0)


def test_cholesky_of_a_matrix_that_is_not_positive_definite_is_a_run_error():
    with fg.Graph():
        p = fg.placeholder("p", shape=(2, 2))
        with pytest.raises(fg.RunError, match="cholesky"):
            fg.run(fg.cholesky(p), {p: np.array([[1.0, 0.0], [0.0, -1.0]])})


@pytest.mark.parametrize("shape", [(4, 3), (3, 3)])
def test_qr_matches_torch(shape):
    a = _r.standard_normal(shape)
    compare(lambda x: fg.qr(x)[0], lambda x: torch.linalg.qr(x)[0], a, out_shape=shape)
    compare(lambda x: fg.qr(x)[1], lambda x: torch.linalg.qr(x)[1], a,
            out_shape=(shape[1], shape[1]))


def test_qr_refuses_a_wide_matrix():
    with fg.Graph():
        with pytest.raises(fg.ShapeError, match="needs m ≥ n"):
            fg.qr(fg.placeholder("p", shape=(2, 3)))


@pytest.mark.parametrize("bshape", [(5,), (5, 2)])
def test_lstsq_matches_torch(bshape):
    a, b = _r.standard_normal((5, 3)), _r.standard_normal(bshape)
    out = np.linalg.lstsq(a, b, rcond=None)[0].shape
    compare(fg.lstsq, lambda x, y: torch.linalg.lstsq(x, y if y.ndim == 2 else y[:, None])
            .solution.reshape(out), a, b, out_shape=out)


@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (3, 3)])
def test_svd_matches_torch_on_sign_invariant_functions(shape):
    a = _distinct_sv(*shape)
    k = min(shape)
    compare(lambda x: fg.svd(x)[1], lambda x: torch.linalg.svd(x, full_matrices=False)[1], a,
            out_shape=(k,))
    compare(lambda x: fg.matmul(fg.svd(x)[0], fg.svd(x)[2]),           # U Vᵀ: the polar factor
            lambda x: (lambda u, s, vh: u @ vh)(*torch.linalg.svd(x, full_matrices=False)),
            a, out_shape=shape)
    compare(lambda x: fg.svd(x)[0] ** 2,
            lambda x: torch.linalg.svd(x, full_matrices=False)[0] ** 2, a, out_shape=(shape[0], k))


@pytest.mark.parametrize("name,fn,arrays", [
    ("cholesky", fg.cholesky, [_spd(3)]),
    ("cholesky batched", fg.cholesky, [_spd(3, (2,))]),
    ("qr Q", lambda a: fg.qr(a)[0], [_r.standard_normal((4, 3))]),
    ("qr R batched", lambda a: fg.qr(a)[1], [_r.standard_normal((2, 3, 2))]),
    ("lstsq", fg.lstsq, [_r.standard_normal((5, 3)), _r.standard_normal(5)]),
    ("svd s", lambda a: fg.svd(a)[1], [_distinct_sv(4, 3)]),
    ("svd U²", lambda a: fg.svd(a)[0] ** 2, [_distinct_sv(4, 3)]),
    ("svd Vh² wide", lambda a: fg.svd(a)[2] ** 2, [_distinct_sv(2, 4)]),
])
def test_decompositions_pass_finite_differences_to_second_order(name, fn, arrays):
    from opcheck import check_op
    check_op(fn, *arrays)


def test_decompositions_are_refused_by_onnx_export_by_name(tmp_path):
    pytest.importorskip("onnx")
    from flowgrad.io.onnx_export import OnnxExportError
    with fg.Graph():
        p = fg.placeholder("p", shape=(3, 3))
        with pytest.raises(OnnxExportError, match=r"op 'cholesky' .*no operator"):
            fg.export_onnx(fg.cholesky(p), tmp_path / "c.onnx")


def test_astype_of_a_number_keeps_the_dtype_asked_for():
    with fg.Graph():
        c = fg.astype(2.5, "float32")
        assert c.dtype == np.float32 and fg.run(c, {}).dtype == np.float32
        assert fg.astype(np.array([1.7, -1.7]), "int8").value.tolist() == [1, -1]


# -- the new ops in graph files and drawings ------------------------------------------------

def _vocab_graph():
    S = fg.sum
    x = fg.placeholder("x", shape=(None, 3))
    y = fg.astype(fg.pad(fg.einsum("ij,jk->ik", x, np.eye(3)), ((1, 0), (0, 2)), value=0.5),
                  "float32").named("y")
    z = fg.split(fg.cumsum(x, 1), [1], axis=1)[1].named("z")
    v = (fg.var(x, axis=0, ddof=1) + S(fg.prod(fg.clip(x, -1, 1), axis=1)) + S(fg.gelu(x))
         + S(fg.leaky_relu(x, 0.3)) + S(fg.elu(x, 2.0))).named("v")
    loss = (S(v) + S(fg.astype(y, "float64")) + S(fg.erf(x) * fg.tan(x))
            + S(fg.svd(fg.cholesky(fg.matmul(x.T, x)))[1])).named("loss")
    return x, [y, z, v, loss, fg.grad(loss, x).named("gx")]


def test_graph_files_round_trip_the_new_ops(tmp_path):
    X = _r.standard_normal((4, 3))
    with fg.Graph():
        x, outs = _vocab_graph()
        fg.save_graph(tmp_path / "g.fg", outs)
        want = fg.run(outs, {x: X})
    g = fg.load_graph(tmp_path / "g.fg")
    with g:
        got = fg.run([g.by_name(n) for n in ("y", "z", "v", "loss", "gx")], {g.by_name("x"): X})
    for w, q in zip(want, got):
        np.testing.assert_array_equal(w, q)


def test_drawings_show_the_new_ops_with_their_rules():
    pytest.importorskip("graphviz")
    X = _r.standard_normal((4, 3))
    with fg.Graph():
        x, outs = _vocab_graph()
        tr = fg.compile(outs).trace(x=X)
        src = fg.viz.draw(tr, loss=outs[3], backward=True).source
    for op in ("gelu", "einsum", "cholesky", "svd", "prod", "var"):
        assert op in src, op


@pytest.mark.parametrize("name", ["cholesky", "qr Q", "svd U", "svd Vh", "lstsq"])
def test_decompositions_give_numpys_answer_on_dask(name):
    """dask's cholesky is upper-triangular by default and its svd picks its own signs:
    the kernels ask for the lower factor and fix the signs, so both backends agree."""
    pytest.importorskip("dask")
    from flowgrad.backends.dask_backend import DaskBackend
    a = _r.standard_normal((5, 3))
    fn, v = {"cholesky": (fg.cholesky, a.T @ a + np.eye(3)),
             "qr Q": (lambda x: fg.qr(x)[0], a), "svd U": (lambda x: fg.svd(x)[0], a),
             "svd Vh": (lambda x: fg.svd(x)[2], a.T),
             "lstsq": (lambda x: fg.lstsq(x, np.arange(5.0)), a)}[name]
    with fg.Graph():
        x = fg.placeholder("x", shape=v.shape)
        y = fn(x)
        outs = [y, fg.grad(fg.sum(y * y * y), x)]
        want = fg.compile(outs)({x: v})
        got = fg.compile(outs, backend=DaskBackend(chunks=2))({x: v})
    for w, g in zip(want, got):
        np.testing.assert_allclose(fg.to_numpy(g), w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64"])
def test_clip_with_one_bound_keeps_the_whole_integer_range(dtype):
    info = np.iinfo(dtype)
    k = np.array([info.min, 0, info.max], dtype=dtype)
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,), dtype=dtype)
        lo, hi = fg.run([fg.clip(p, None, 5), fg.clip(p, 0)], {p: k})
    np.testing.assert_array_equal(lo, np.clip(k, None, 5))       # info.min stays info.min
    np.testing.assert_array_equal(hi, np.clip(k, 0, None))
    assert lo.dtype == hi.dtype == np.dtype(dtype)


def test_std_at_zero_spread_has_gradient_zero_as_torch():
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    compare(lambda a: fg.std(a, axis=1), lambda a: torch.std(a, dim=1, correction=0), x,
            out_shape=(2,))
    with fg.Graph():
        p = fg.placeholder("p", shape=(2, 3))
        y, g = fg.run([fg.std(p, axis=1, ddof=1), fg.grad(fg.sum(fg.std(p, axis=1)), p)],
                      {p: x})
    assert y[0] == 0.0 and np.all(g[0] == 0.0) and np.all(np.isfinite(g))


def test_erf_and_gelu_give_the_same_bits_on_large_and_small_arrays():
    """Large numpy arrays evaluate each branch on its own entries only (ops/special.py's
    _piecewise); small ones, dask and the scalar path use one where over both: the same
    operations entry by entry, so the same values."""
    from flowgrad.ops.special import MASK_MIN
    x = np.concatenate([_r.standard_normal(MASK_MIN) * 4, EDGE, [np.nan, np.inf, -np.inf]])
    with fg.Graph():
        p = fg.placeholder("p", shape=(None,))
        outs = [fg.erf(p), fg.gelu(p), fg.grad(fg.sum(fg.gelu(p)), p)]
        with np.errstate(invalid="ignore"):
            big = fg.run(outs, {p: x})
            pieces = [fg.run(outs, {p: x[i:i + 64]}) for i in range(0, len(x), 64)]
    for k in range(3):
        np.testing.assert_array_equal(big[k], np.concatenate([q[k] for q in pieces]))


def test_astype_to_an_integer_has_derivative_zero_in_both_modes():
    x = np.array([1.5, 2.5, -0.5])
    with fg.Graph():
        p = fg.placeholder("p", shape=(3,))
        k = fg.astype(p, "int32")
        t = fg.jvp(k, p, np.ones(3))                  # was the tangent truncated: [1 1 1]
        v = fg.vjp(k, p, np.ones(3, np.int32))
        y = fg.astype(k, "float64")
        tv, vv, gv = fg.run([t, v, fg.grad(fg.sum(y), p)], {p: x})
    assert tv.tolist() == [0, 0, 0] and vv.tolist() == [0.0] * 3 and gv.tolist() == [0.0] * 3
