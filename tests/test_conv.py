"""conv2d, max_pool2d, avg_pool2d (NCHW): values and gradients against PyTorch in float64,
first and second order against finite differences in both modes, shape inference with a
None batch, the refusals at their boundaries, and the dask backend."""
import numpy as np
import pytest
import warnings

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from opcheck import check_op

torch = pytest.importorskip("torch")
F = torch.nn.functional

# PyTorch's own max pooling warns that torch.jit.script is deprecated: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

_r = np.random.default_rng(22)


def randn(*shape):
    return _r.standard_normal(shape)


def _torch_conv(X, W, B, stride, padding):
    """PyTorch's conv2d; "same" at stride > 1 (which PyTorch refuses) as explicit
    zero padding with the odd zero at the bottom/right (ONNX's SAME_UPPER)."""
    x = torch.tensor(X, requires_grad=True)
    w = torch.tensor(W, requires_grad=True)
    b = torch.tensor(B, requires_grad=True)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    if padding == "same" and s != (1, 1):
        pads = []
        for n, k, st in zip(X.shape[2:], W.shape[2:], s):
            total = max((-(-n // st) - 1) * st + k - n, 0)
            pads.append((total // 2, total - total // 2))
        xp = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
        y = F.conv2d(xp, w, b, stride=s)
    else:
        with warnings.catch_warnings():   # PyTorch's note on "same" with an even kernel
            warnings.simplefilter("ignore", UserWarning)
            y = F.conv2d(x, w, b, stride=s, padding=padding)
    return x, w, b, y


def _fg_conv(X, W, B, stride, padding, G):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,) + X.shape[1:])
        w = fg.placeholder("w", shape=W.shape)
        b = fg.placeholder("b", shape=B.shape)
        y = fg.conv2d(x, w, b, stride=stride, padding=padding)
        assert y.shape[0] is None
        gs = fg.grad(fg.sum(y * G), [x, w, b])
        return y.shape, fg.run([y, *gs], {x: X, w: W, b: B})


CONV_CONFIGS = [
    (1, "valid"), (2, "valid"), (1, "same"), (2, "same"), (1, 1), (2, 1), (2, (1, 2)),
    ((2, 1), 0), (3, "same"),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("stride,padding", CONV_CONFIGS)
def test_conv2d_values_and_gradients_match_pytorch(batch, stride, padding):
    X, W, B = randn(batch, 2, 7, 6), randn(4, 2, 3, 2), randn(4)
    x, w, b, y = _torch_conv(X, W, B, stride, padding)
    G = randn(*y.shape)
    (y * torch.tensor(G)).sum().backward()
    shape, (yv, gx, gw, gb) = _fg_conv(X, W, B, stride, padding, G)
    assert shape[1:] == tuple(y.shape[1:])
    for got, want in [(yv, y), (gx, x.grad), (gw, w.grad), (gb, b.grad)]:
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_second_order_matches_pytorch_double_backward():
    """∂/∂w of Σ (∂L/∂x)² and ∂/∂x of Σ (∂L/∂w)²: both rules differentiated again."""
    X, W, B = randn(2, 3, 6, 5), randn(2, 3, 3, 3), randn(2)
    x, w, b, y = _torch_conv(X, W, B, 2, 1)
    G = torch.tensor(randn(*y.shape))
    gx, gw = torch.autograd.grad((y * G).sum(), [x, w], create_graph=True)
    hw, = torch.autograd.grad((gx ** 2).sum(), [w], retain_graph=True)
    hx, = torch.autograd.grad((gw ** 2).sum(), [x])
    with fg.Graph():
        xn, wn = fg.placeholder("x", shape=X.shape), fg.placeholder("w", shape=W.shape)
        yn = fg.conv2d(xn, wn, B, stride=2, padding=1)
        fx, fw = fg.grad(fg.sum(yn * G.numpy()), [xn, wn])
        out = fg.run([fg.grad(fg.sum(fx * fx), wn), fg.grad(fg.sum(fw * fw), xn)],
                     {xn: X, wn: W})
    np.testing.assert_allclose(out[0], hw.numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(out[1], hx.numpy(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, 1), ((1, 2), "same")])
def test_conv2d_check_grads_both_modes_second_order(stride, padding):
    check_op(lambda x, w, b: fg.conv2d(x, w, b, stride=stride, padding=padding),
             randn(2, 2, 5, 4), randn(3, 2, 3, 2), randn(3))


def test_conv2d_forward_mode_is_bilinear_against_pytorch_jvp():
    X, W = randn(2, 2, 5, 5), randn(3, 2, 3, 3)
    TX, TW = randn(*X.shape), randn(*W.shape)
    _, want = torch.func.jvp(lambda a, b: F.conv2d(a, b, stride=2, padding=1),
                             (torch.tensor(X), torch.tensor(W)),
                             (torch.tensor(TX), torch.tensor(TW)))
    with fg.Graph():
        x, w = fg.placeholder("x", shape=X.shape), fg.placeholder("w", shape=W.shape)
        y = fg.conv2d(x, w, stride=2, padding=1)
        got = fg.run(fg.jvp(y, [x, w], [TX, TW]), {x: X, w: W})
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


# -- pooling --------------------------------------------------------------------------------

POOL_CONFIGS = [(2, None), (3, 2), ((2, 3), 1), (3, None), ((3, 2), (2, 1))]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size,stride", POOL_CONFIGS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_values_and_gradients_match_pytorch(kind, size, stride, batch):
    X = randn(batch, 2, 7, 5)
    x = torch.tensor(X, requires_grad=True)
    tfn = F.max_pool2d if kind == "max" else F.avg_pool2d
    y = tfn(x, size, stride)
    G = randn(*y.shape)
    (y * torch.tensor(G)).sum().backward()
    fn = fg.max_pool2d if kind == "max" else fg.avg_pool2d
    with fg.Graph():
        xn = fg.placeholder("x", shape=(None, 2, 7, 5))
        yn = fn(xn, size, stride)
        assert yn.shape == (None,) + tuple(y.shape[1:])
        yv, gx = fg.run([yn, fg.grad(fg.sum(yn * G), xn)], {xn: X})
    np.testing.assert_allclose(yv, y.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("fn", [lambda x: fg.max_pool2d(x, 2),
                                lambda x: fg.max_pool2d(x, (2, 3), stride=1),
                                lambda x: fg.avg_pool2d(x, 2, stride=1),
                                lambda x: fg.avg_pool2d(x, (3, 2))])
def test_pooling_check_grads_both_modes_second_order(fn):
    # distinct entries, away from ties: max pooling is smooth there
    X = _r.permutation(60).reshape(2, 2, 5, 3) / 7.0
    check_op(fn, X)


def test_max_pool_ties_route_to_the_first_maximum_as_pytorch():
    X = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 0.0],
                    [5.0, 5.0, 7.0, 7.0],
                    [5.0, 5.0, 7.0, 7.0]]]])
    x = torch.tensor(X, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    with fg.Graph():
        xn = fg.placeholder("x", shape=X.shape)
        s = fg.sum(fg.max_pool2d(xn, 2))
        g, d = fg.run([fg.grad(s, xn), fg.jvp(s, xn, np.arange(16.0).reshape(X.shape))],
                      {xn: X})
    want = np.zeros((4, 4))
    want[0, 1] = want[0, 2] = want[2, 0] = want[2, 2] = 1.0   # never split among ties
    np.testing.assert_array_equal(g[0, 0], want)
    np.testing.assert_array_equal(g, x.grad.numpy())
    assert d == 1.0 + 2.0 + 8.0 + 10.0


def test_max_pool_with_nan_propagates_and_routes_as_pytorch():
    nan = np.nan
    X = np.array([[[[1.0, nan, 2.0, 7.0, nan, 2.0],
                    [nan, 5.0, nan, 5.0, 3.0, 5.0]]]])
    x = torch.tensor(X, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    with fg.Graph():
        xn = fg.placeholder("x", shape=X.shape)
        y = fg.max_pool2d(xn, 2)
        yv, g = fg.run([y, fg.grad(fg.sum(y), xn)], {xn: X})
    np.testing.assert_array_equal(yv, [[[[nan, nan, nan]]]])
    np.testing.assert_array_equal(g, x.grad.numpy())
    np.testing.assert_array_equal(g[0, 0], [[0, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]])


def test_max_pool_second_order_matches_pytorch():
    X = _r.permutation(48).reshape(1, 3, 4, 4) / 5.0
    x = torch.tensor(X, requires_grad=True)
    y = F.max_pool2d(x, 2, 1)
    gx, = torch.autograd.grad((y ** 3).sum(), [x], create_graph=True)
    h, = torch.autograd.grad((gx * torch.tensor(X)).sum(), [x])
    with fg.Graph():
        xn = fg.placeholder("x", shape=X.shape)
        gn = fg.grad(fg.sum(fg.max_pool2d(xn, 2, 1) ** 3), xn)
        got = fg.run(fg.grad(fg.sum(gn * X), xn), {xn: X})
    np.testing.assert_allclose(got, h.numpy(), rtol=1e-12, atol=1e-12)


# -- shapes, dtypes and refusals ------------------------------------------------------------

def test_shapes_with_a_none_batch_and_dtypes():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3, 28, 28), dtype="float32")
        w = fg.variable(np.zeros((6, 3, 5, 5), np.float32))
        assert fg.conv2d(x, w).shape == (None, 6, 24, 24)
        assert fg.conv2d(x, w, padding="same").shape == (None, 6, 28, 28)
        assert fg.conv2d(x, w, stride=2, padding="same").shape == (None, 6, 14, 14)
        assert fg.conv2d(x, w, stride=(2, 3), padding=(1, 0)).shape == (None, 6, 13, 8)
        assert fg.conv2d(x, w).dtype == np.float32
        assert fg.max_pool2d(x, 2).shape == (None, 3, 14, 14)
        assert fg.avg_pool2d(x, 3).shape == (None, 3, 9, 9)
        assert fg.max_pool2d(x, 2).dtype == fg.avg_pool2d(x, 2).dtype == np.float32
        xi = fg.placeholder("xi", shape=(1, 1, 4, 4), dtype="int64")
        assert fg.avg_pool2d(xi, 2).dtype == np.float64
        assert fg.max_pool2d(xi, 2).dtype == np.int64


def test_refusals_at_their_boundaries():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3, 5, 5))
        fg.conv2d(x, np.zeros((2, 3, 5, 5)))                 # the window just fits
        with pytest.raises(fg.ShapeError, match="does not fit"):
            fg.conv2d(x, np.zeros((2, 3, 6, 5)))
        fg.conv2d(x, np.zeros((2, 3, 6, 5)), padding=(1, 0))
        with pytest.raises(fg.ShapeError, match="3 channels, the kernel expects 4"):
            fg.conv2d(x, np.zeros((2, 4, 3, 3)))
        with pytest.raises(fg.ShapeError, match="4-d"):
            fg.conv2d(fg.placeholder("v", shape=(3, 5, 5)), np.zeros((2, 3, 3, 3)))
        with pytest.raises(fg.ShapeError, match="one entry per output channel"):
            fg.conv2d(x, np.zeros((2, 3, 3, 3)), b=np.zeros(3))
        with pytest.raises(ValueError, match="stride must be"):
            fg.conv2d(x, np.zeros((2, 3, 3, 3)), stride=0)
        with pytest.raises(ValueError, match="padding must be"):
            fg.conv2d(x, np.zeros((2, 3, 3, 3)), padding=-1)
        with pytest.raises(ValueError, match="padding must be"):
            fg.conv2d(x, np.zeros((2, 3, 3, 3)), padding="full")
        fg.max_pool2d(x, 5)
        with pytest.raises(fg.ShapeError, match="does not fit"):
            fg.max_pool2d(x, 6)
        with pytest.raises(ValueError, match="size must be"):
            fg.avg_pool2d(x, 0)


@pytest.mark.parametrize("chunks", ["auto", 2])     # 2: the batch spans several chunks
def test_dask_backend_matches_numpy(chunks):
    X, W = randn(5, 2, 6, 5), randn(3, 2, 3, 3)
    with fg.Graph():
        x, w = fg.placeholder("x", shape=X.shape), fg.placeholder("w", shape=W.shape)
        y = fg.avg_pool2d(fg.max_pool2d(fg.conv2d(x, w, stride=1, padding=1), 2, 1), 2)
        s = fg.sum(y * y)
        outs = [y, *fg.grad(s, [x, w])]
        want = fg.run(outs, {x: X, w: W})
        got = fg.compile(outs, DaskBackend(chunks=chunks))(x=X, w=W)
    for a, b in zip(got, want):
        np.testing.assert_allclose(fg.to_numpy(a), b, rtol=1e-12, atol=1e-13)


def test_an_empty_batch_gives_empty_values_and_zero_kernel_gradients():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 6, 5))
        w = fg.placeholder("w", shape=(3, 2, 3, 3))
        y = fg.avg_pool2d(fg.max_pool2d(fg.conv2d(x, w, padding=1), 2), 1)
        yv, gx, gw = fg.run([y, *fg.grad(fg.sum(y), [x, w])],
                            {x: np.zeros((0, 2, 6, 5)), w: randn(3, 2, 3, 3)})
    assert yv.shape == (0, 3, 3, 2) and gx.shape == (0, 2, 6, 5)
    np.testing.assert_array_equal(gw, np.zeros((3, 2, 3, 3)))


# -- ONNX export (Conv, MaxPool, AveragePool; float64 as im2col, run by onnxruntime) ------

@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_onnx_export_with_a_none_batch_and_second_order(dtype, tol, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    X, W = randn(3, 2, 7, 6).astype(dtype), randn(3, 2, 3, 2).astype(dtype)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 7, 6), dtype=dtype)
        w = fg.placeholder("w", shape=W.shape, dtype=dtype)
        h = fg.conv2d(x, w, stride=(2, 1), padding="same")
        y = fg.avg_pool2d(fg.max_pool2d(h, 2, 1), (2, 1))
        gx, gw = fg.grad(fg.sum(y * y), [x, w])
        outs = [y, gx, gw, *fg.grad(fg.sum(gx * gx) + fg.sum(gw * gw), [x, w])]
        ops = {n.op.name for n in y.graph.nodes if n.op is not None}
        assert {"max_pool2d_gather", "conv2d_grad_x", "conv2d_grad_w",
                "avg_pool2d_grad", "max_pool2d_scatter"} <= ops
        want = fg.run(outs, {x: X, w: W})
        path = fg.export_onnx(outs, tmp_path / "conv.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": X, "w": W})
    for g, v in zip(got, want):
        assert g.dtype == v.dtype
        # second-order entries cancel (a few units among thousands): the absolute
        # tolerance is relative to the array's scale, so the test does not depend on
        # which draws the shared generator gives it (a -k selection gives others)
        np.testing.assert_allclose(g, v, rtol=tol, atol=tol * max(1.0, np.abs(v).max()))


def test_onnx_export_refuses_an_unknown_height_where_its_form_needs_it(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, None, None))
        y = fg.conv2d(x, np.ones((3, 2, 2, 2)))
        fg.export_onnx(fg.conv2d(fg.placeholder("f", shape=(None, 2, None, None),
                                                dtype="float32"),
                                 np.ones((3, 2, 2, 2), np.float32)), tmp_path / "f.onnx")
        with pytest.raises(fg.io.onnx_export.OnnxExportError, match="'conv2d'.*height"):
            fg.export_onnx(y, tmp_path / "d.onnx")


def test_a_one_by_one_max_pool_never_hands_out_a_view_of_the_feed():
    X = randn(1, 2, 3, 3)
    with fg.Graph():
        x = fg.placeholder("x", shape=X.shape)
        for codegen in (True, False):
            y = fg.compile(fg.max_pool2d(x, 1, 2), codegen=codegen)(x=X)
            np.testing.assert_array_equal(y, X[:, :, ::2, ::2])
            assert not np.shares_memory(y, X)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_path_gives_the_same_bits_first_call_and_later(dtype):
    """A small conv net and its gradient: generated code (with its fused elementwise
    regions reading conv2d's transposed layout), its second call, and the interpreter."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 2, 9, 9)).astype(dtype)
    W1, W2 = (rng.standard_normal(s).astype(dtype) for s in [(4, 2, 3, 3), (3, 4, 2, 2)])
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2, 9, 9), dtype=dtype)
        w1, w2 = fg.variable(W1, name="w1"), fg.variable(W2, name="w2")
        h = fg.max_pool2d(fg.relu(fg.conv2d(x, w1, np.ones(4, dtype)) * 0.5), 2)
        y = fg.avg_pool2d(fg.tanh(fg.conv2d(h, w2, stride=2, padding="same")), 1)
        loss = fg.sum(y * y)
        outs = [loss, *fg.grad(loss, [w1, w2, x])]
        gen, ref = fg.compile(outs, codegen=True), fg.compile(outs, codegen=False)
        first, second, want = gen(x=X), gen(x=X), ref(x=X)
    for a, b, c in zip(first, second, want):
        assert a.dtype == b.dtype == c.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
