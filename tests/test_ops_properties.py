"""Property-based checks (hypothesis): random shapes with broadcasting, 0-d and batched
inputs; values against numpy, derivatives against central finite differences in both
modes. Example counts are small: each example compiles and checks a few programs."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import flowgrad as fg
from opcheck import check_op

FAST = settings(max_examples=12, deadline=None, derandomize=True)
seeds = st.integers(0, 2 ** 32 - 1)


def away_from_zero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)


BINARY = {
    "add": (fg.add, np.add), "mul": (fg.mul, np.multiply), "sub": (fg.sub, np.subtract),
    "maximum": (fg.maximum, np.maximum), "minimum": (fg.minimum, np.minimum),
}


@FAST
@given(st.sampled_from(sorted(BINARY)),
       mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3), seeds)
def test_binary_ops_broadcast(name, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (away_from_zero(rng, s) for s in shapes.input_shapes)
    b = b + 0.05 * np.sign(b)     # no ties between a and b for maximum/minimum
    fn, ref = BINARY[name]
    check_op(fn, a, b, reference=ref, order=2)


@FAST
@given(mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seeds)
def test_where_and_pow_broadcast(shapes, seed):
    rng = np.random.default_rng(seed)
    c_shape, x_shape, y_shape = shapes.input_shapes
    cond = rng.uniform(size=c_shape) > 0.5
    x, y = rng.standard_normal(x_shape), rng.standard_normal(y_shape)
    check_op(lambda a, b: fg.where(cond, a, b), x, y,
             reference=lambda a, b: np.where(cond, a, b), order=1)
    base = rng.uniform(0.5, 2.0, x_shape)
    check_op(fg.pow, base, y, reference=np.power, order=2)


REDUCTIONS = {
    "sum": (fg.sum, lambda a, axis, keepdims: np.sum(a, axis=axis, keepdims=keepdims)),
    "mean": (fg.mean, lambda a, axis, keepdims: np.mean(a, axis=axis, keepdims=keepdims)),
    "max": (fg.max, lambda a, axis, keepdims: np.max(a, axis=axis, keepdims=keepdims)),
    "logsumexp": (fg.logsumexp, None),
}


@st.composite
def shape_and_axis(draw):
    shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3))
    nd = len(shape)
    if nd == 0 or draw(st.booleans()):
        return shape, None
    axes = draw(st.lists(st.integers(-nd, nd - 1), min_size=1, max_size=nd,
                         unique_by=lambda a: a % nd))
    return shape, tuple(axes) if len(axes) > 1 else axes[0]


def _np_lse(a, axis, keepdims):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@FAST
@given(st.sampled_from(sorted(REDUCTIONS)), shape_and_axis(), st.booleans(), seeds)
def test_reductions_over_random_axes(name, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    x = np.random.default_rng(seed).permutation(np.linspace(-2, 2, int(np.prod(shape)))
                                                ).reshape(shape)      # distinct: no ties
    fn, ref = REDUCTIONS[name]
    ref = ref or _np_lse
    check_op(lambda a: fn(a, axis=axis, keepdims=keepdims), x,
             reference=lambda a: ref(a, axis, keepdims), order=2)


@st.composite
def basic_index(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    index = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        kind = draw(st.sampled_from(["int", "slice", "array", "newaxis"]))
        if kind == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            index.append(slice(draw(st.none() | st.integers(-n, n)),
                               draw(st.none() | st.integers(-n, n)),
                               draw(st.sampled_from([None, 1, 2, -1]))))
        elif kind == "array":
            index.append(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=3)))
        else:
            index.extend([None, slice(None)])
    if draw(st.booleans()):
        index.insert(draw(st.integers(0, len(index))), Ellipsis)
    return shape, tuple(index)


@FAST
@given(basic_index(), seeds)
def test_getitem_matches_numpy(shape_index, seed):
    shape, index = shape_index
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = x[index]
    if expected.size == 0:
        with fg.Graph():
            assert fg.placeholder("x", shape=shape)[index].shape == expected.shape
        return
    check_op(lambda a: a[index] * a[index], x, reference=lambda a: a[index] * a[index],
             order=1)


@FAST
@given(array_shapes(min_dims=0, max_dims=2, max_side=2), st.integers(1, 3), seeds)
def test_batched_square_matrix_ops(batch, n, seed):
    rng = np.random.default_rng(seed)
    x = n * np.eye(n) + rng.standard_normal(batch + (n, n))
    b = rng.standard_normal(batch + (n, 2))
    # (a 1×1 det is linear: its exact-zero second derivative is left to rounding, which
    # the checker's forward-against-reverse comparison has no absolute floor for)
    check_op(fg.det, x, reference=np.linalg.det, order=2 if n > 1 else 1)
    check_op(fg.inv, x, reference=np.linalg.inv, order=1)
    check_op(fg.solve, x, b, reference=np.linalg.solve, order=1)


@FAST
@given(array_shapes(min_dims=0, max_dims=1, max_side=2), st.integers(1, 3), seeds)
def test_batched_symmetric_ops(batch, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch + (n, n))
    spd = a @ np.swapaxes(a, -1, -2) + n * np.eye(n)
    spread = np.diag(np.arange(n) * 2.0) + 0.2 * a          # distinct eigenvalues
    check_op(fg.logdet, spd, reference=lambda m: np.linalg.slogdet(m)[1], order=2)
    check_op(fg.eigvalsh, spread, reference=np.linalg.eigvalsh, order=2)


@FAST
@given(array_shapes(min_dims=0, max_dims=1, max_side=2), st.integers(2, 3), st.integers(2, 3),
       seeds)
def test_norms_of_random_matrices(batch, m, n, seed):
    x = np.random.default_rng(seed).standard_normal(batch + (m, n))
    check_op(lambda a: fg.norm(a, axis=(-2, -1)), x,
             reference=lambda a: np.linalg.norm(a, axis=(-2, -1)), order=2)
    s = np.linalg.svd(x, compute_uv=False)
    if np.all(s[..., 0] - s[..., 1] > 0.1):   # second derivatives need a simple top value
        check_op(lambda a: fg.norm(a, 2, axis=(-2, -1)), x,
                 reference=lambda a: np.linalg.norm(a, 2, axis=(-2, -1)), order=2)
