"""The fast kernels behind conv2d and max pooling (issue 22's speed goal): the strided-view
im2col against the sliced one, the bit-masked select against where, and max pooling's
first-maximum / last-NaN routing against PyTorch's own indices, on numpy and on dask
(which has neither as_strided nor a value to look at)."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.ops import conv, windows

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

_r = np.random.default_rng(2224)


class _NoStrides:
    """numpy's namespace without ``lib.stride_tricks.as_strided`` (as dask), so that the
    sliced fallbacks run on numpy arrays too."""

    lib = None

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_select_is_where_bit_for_bit(dtype):
    v = np.array([1.5, -0.0, 0.0, np.inf, -np.inf, np.nan, -2.25, 7.0], dtype)
    mask = np.array([True, True, False, True, False, True, True, False])
    got = windows.select(np, mask, v)
    want = np.where(mask, v, 0)
    assert got.dtype == want.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.view(f"u{v.itemsize}"), want.view(f"u{v.itemsize}"))
    # a strided view of v, as max pooling's windows are
    np.testing.assert_array_equal(windows.select(np, mask[::2], v[::2]),
                                  np.where(mask[::2], v[::2], 0))
    # ints and the fallback namespace take where itself
    assert windows.select(np, mask, np.arange(8)).tolist() == [0, 1, 0, 3, 0, 5, 6, 0]
    assert windows.strided_view(_NoStrides()) is None


@pytest.mark.parametrize("kernel,stride,out_hw", [((3, 2), (1, 1), (5, 5)),
                                                  ((2, 3), (2, 3), (3, 2))])
def test_strided_im2col_equals_the_sliced_one(kernel, stride, out_hw):
    x = _r.standard_normal((3, 2, 7, 8))
    for view in (x, x.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2),
                 x[:, :, ::-1]):                 # F-ordered and negative strides
        got = conv.im2col(np, view, kernel, stride, out_hw)
        want = conv.im2col(_NoStrides(), view, kernel, stride, out_hw)
        np.testing.assert_array_equal(got, want)
        assert not np.shares_memory(got, view) or got.size == 0


def _torch_routing(X, size, stride):
    """x̄ of Σ y ⊙ G and the gather of U at PyTorch's argmax indices (float64)."""
    x = torch.tensor(X, requires_grad=True)
    y, idx = F.max_pool2d(x, size, stride, return_indices=True)
    G = _r.standard_normal(y.shape)
    (y * torch.tensor(G)).sum().backward()
    U = _r.standard_normal(X.shape)
    n, c = X.shape[:2]
    flat = torch.tensor(U).reshape(n, c, -1)
    gathered = torch.gather(flat, 2, idx.reshape(n, c, -1)).reshape(idx.shape)
    return y.detach().numpy(), G, x.grad.numpy(), U, gathered.numpy()


def _ties_and_nans(shape, nans):
    """Small integers (many ties, ±0.0 among them) with NaN at ``nans`` random places."""
    X = _r.integers(-2, 3, size=shape).astype(float)
    X[X == 0] = np.where(_r.random((X == 0).sum()) < 0.5, 0.0, -0.0)
    X.reshape(-1)[_r.choice(X.size, nans, replace=False)] = np.nan
    return X


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("size,stride,nans", [(2, None, 0), (2, None, 9), (3, 1, 7),
                                              ((2, 3), (2, 1), 5), (3, None, 4)])
def test_max_pool_routes_as_pytorch_with_ties_and_nans(size, stride, nans, backend):
    X = _ties_and_nans((2, 3, 7, 8), nans)
    Y, G, GX, U, GU = _torch_routing(X, size, stride)
    with fg.Graph():
        x = fg.placeholder("x", shape=X.shape)
        u = fg.placeholder("u", shape=X.shape)
        y = fg.max_pool2d(x, size, stride)
        outs = [y, fg.grad(fg.sum(y * G), x), fg.jvp(y, x, u)]
        prog = fg.compile(outs, DaskBackend(chunks=1) if backend == "dask" else None)
        got = [fg.to_numpy(a) for a in prog(x=X, u=U)]
    np.testing.assert_array_equal(got[0], Y)
    np.testing.assert_array_equal(got[2], GU)
    # overlapping windows add several v̄ into one entry, in PyTorch's order or ours
    np.testing.assert_allclose(got[1], GX, rtol=1e-13, atol=1e-14)


def test_a_nan_tangent_or_cotangent_stays_where_it_is_routed():
    """v̄ = inf or NaN reaches only the first maximum: elsewhere the zeros stay +0.0."""
    X = np.array([[[[1.0, 4.0, 4.0, 0.0], [2.0, 3.0, 0.0, 4.0]]]])
    G = np.array([[[[np.inf, np.nan]]]])
    with fg.Graph():
        x = fg.placeholder("x", shape=X.shape)
        gx = fg.run(fg.grad(fg.sum(fg.max_pool2d(x, 2) * G), x), {x: X})
    want = np.array([[0.0, np.inf, np.nan, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(gx[0, 0], want)
    assert not np.signbit(gx[0, 0, 1]).any()


def test_blocked_products_equal_one_product():
    a, b = _r.standard_normal((6, 25)), _r.standard_normal((25, 50_000))
    assert len(windows.long_blocks(np, 6 * 25, 50_000)) == 8
    assert windows.long_blocks(np, 16 * 150, 50_000) is None      # large small sides
    assert windows.long_blocks(np, 150, 6000) is None             # one block's worth
    np.testing.assert_allclose(windows.matmul_wide(np, a, b), a @ b, rtol=1e-13, atol=1e-13)
    g = _r.standard_normal((6, 50_000))
    np.testing.assert_allclose(windows.matmul_deep(np, g, b.T), g @ b.T, rtol=1e-12)
    # a view of b, float32: the dtype and the layout of one product
    got = windows.matmul_deep(np, g.astype("float32"), b.T.astype("float32"))
    assert got.dtype == np.float32 and got.shape == (6, 25)


def test_an_unblocked_float32_deep_product_taken_transposed_is_the_product():
    """LeNet's second w̄ (16 × L by L × 150: no blocks) runs as (bᵀ aᵀ)ᵀ in float32."""
    g = _r.standard_normal((16, 20_000)).astype("float32")
    cols = _r.standard_normal((150, 20_000)).astype("float32")
    assert windows.long_blocks(np, 16 * 150, 20_000) is None
    got = windows.matmul_deep(np, g, cols.T)
    want = g.astype(np.float64) @ cols.T.astype(np.float64)
    assert got.dtype == np.float32 and got.shape == (16, 150)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    # and the w̄ it becomes is a plain C-ordered array, as the float64 one
    x = _r.standard_normal((8, 6, 12, 12)).astype("float32")
    gy = _r.standard_normal((8, 16, 8, 8)).astype("float32")
    with fg.Graph():
        xv = fg.placeholder("x", shape=x.shape, dtype="float32")
        w = fg.variable(np.zeros((16, 6, 5, 5), "float32"), name="w")
        dw = fg.run(fg.grad(fg.sum(fg.conv2d(xv, w) * gy), w), {xv: x})
    want = np.einsum("nopq,ncpiqj->ocij", gy.astype(np.float64),
                     np.lib.stride_tricks.sliding_window_view(
                         x.astype(np.float64), (5, 5), axis=(2, 3)).transpose(0, 1, 2, 4, 3, 5))
    assert dw.flags.c_contiguous and dw.dtype == np.float32
    np.testing.assert_allclose(dw, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-4)])
def test_a_lenet_sized_conv_in_blocks_matches_pytorch(dtype, tol):
    """Batch 64 of 1×28×28 by 6@5×5: forward, x̄ and w̄ each take the blocked product."""
    X = _r.standard_normal((64, 1, 28, 28)).astype(dtype)
    W = _r.standard_normal((6, 1, 5, 5)).astype(dtype)
    G = _r.standard_normal((64, 6, 24, 24)).astype(dtype)
    assert windows.long_blocks(np, 6 * 25, 64 * 24 * 24) is not None
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w)
    (y * torch.tensor(G, dtype=torch.float64)).sum().backward()
    with fg.Graph():
        xn = fg.placeholder("x", shape=(None, 1, 28, 28), dtype=dtype)
        wn = fg.placeholder("w", shape=W.shape, dtype=dtype)
        yn = fg.conv2d(xn, wn)
        got = fg.run([yn, *fg.grad(fg.sum(yn * G), [xn, wn])], {xn: X, wn: W})
    for a, b in zip(got, [y, x.grad, w.grad]):
        assert a.dtype == np.dtype(dtype)
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


class _OtherStrided(_NoStrides):
    """numpy's namespace as another object with ``as_strided`` (as cupy): the strided
    columns and the bit-masked select, but one product per call (no OpenBLAS blocks)."""

    lib = np.lib


@pytest.mark.parametrize("namespace", [_NoStrides(), _OtherStrided()])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_kernel_agrees_across_namespaces(namespace, dtype):
    """Each conv and pooling kernel on the dask-like and the cupy-like namespace against
    numpy's, at a size where numpy's products run in blocks; NaN in one window."""
    from flowgrad.ops import REGISTRY
    x = _r.standard_normal((64, 2, 12, 12)).astype(dtype)
    x[3, 1, 4, 5] = np.nan
    w = _r.standard_normal((6, 2, 5, 5)).astype(dtype)
    g = _r.standard_normal((64, 6, 8, 8)).astype(dtype)
    gp = _r.standard_normal((64, 2, 6, 6)).astype(dtype)
    conv = dict(stride=(1, 1), pads=(0, 0, 0, 0))
    pool = dict(size=(2, 2), stride=(2, 2))
    calls = [("conv2d", (x, w), conv), ("conv2d_grad_x", (g, w, x), conv),
             ("conv2d_grad_w", (x, g), dict(kernel=(5, 5), **conv)),
             ("max_pool2d_scatter", (gp, x), pool), ("max_pool2d_gather", (x[::-1], x), pool),
             ("max_pool2d_scatter", (_r.standard_normal((64, 2, 10, 10)).astype(dtype), x),
              dict(size=(3, 3), stride=(1, 1)))]
    assert windows.long_blocks(np, 6 * 50, 64 * 64) is not None
    for name, args, attrs in calls:
        want = REGISTRY[name].forward(np, *args, **attrs)
        got = REGISTRY[name].forward(namespace, *args, **attrs)
        assert got.dtype == want.dtype == np.dtype(dtype), name
        tol = 1e-5 if dtype == "float32" else 1e-12     # sums of 4096 terms: scaled
        np.testing.assert_allclose(got, want, rtol=tol, err_msg=name,
                                   atol=tol * np.nanmax(np.abs(want)))
