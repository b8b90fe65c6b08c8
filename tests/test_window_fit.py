"""A window larger than an input whose height or width is known only at run time: a
RunError naming the node and its line, caused by the build-time ShapeError's words, on
every path (generated code, the interpreter, dask). It used to give an empty array (and
a sum of 0.0) without a word. The boundary: an input exactly the window's size gives a
1×1 output; one row or one column less is refused."""
import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.ops.base import apply
from flowgrad.ops.conv import conv2d_grad_w, conv2d_grad_x
from flowgrad.ops.pooling import avg_pool2d_grad, max_pool2d_gather, max_pool2d_scatter

PATHS = {"generated": dict(codegen=True), "interpreter": dict(codegen=False),
         "dask": dict(backend=DaskBackend())}
FITS = np.arange(9.0)[::-1].reshape(1, 1, 3, 3)   # its maximum at the top left
W = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)


def _run(outs, path, X):
    return [np.asarray(fg.to_numpy(v)) for v in fg.compile(outs, **PATHS[path])(x=X)]


def _refused(op, hw, pads=(0, 0, 0, 0)):
    words = (f"{op}: the 3×3 window does not fit the padded input {hw} (padding {pads})")
    return pytest.raises(fg.RunError, match=r"\(" + op + r"\), built at .*test_window_fit"
                         r"\.py:\d+ failed while the program ran: ShapeError: "
                         + re.escape(words))


def _model():
    x = fg.placeholder("x", shape=(None, 1, None, None))
    return x, {"conv2d": fg.conv2d(x, W), "max_pool2d": fg.max_pool2d(x, 3),
               "avg_pool2d": fg.avg_pool2d(x, 3)}


@pytest.mark.parametrize("path", PATHS)
def test_an_input_the_size_of_the_window_gives_one_output(path):
    with fg.Graph():
        x, ys = _model()
        outs = [*ys.values(), *(fg.grad(fg.sum(y), x) for y in ys.values())]
        conv, mx, avg, g_conv, g_max, g_avg = _run(outs, path, FITS)
    np.testing.assert_allclose(conv, [[[[np.sum(W[0, 0] * FITS[0, 0])]]]], rtol=1e-12)
    np.testing.assert_array_equal(mx, [[[[8.0]]]])
    np.testing.assert_allclose(avg, [[[[4.0]]]], rtol=1e-12)
    np.testing.assert_array_equal(g_conv, W)                      # ∂Σ(w ⋆ x)/∂x = w
    np.testing.assert_array_equal(g_max, np.eye(1, 9).reshape(1, 1, 3, 3))
    np.testing.assert_allclose(g_avg, np.full((1, 1, 3, 3), 1 / 9), rtol=1e-15)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("hw", [(2, 3), (3, 2)])
def test_one_row_or_column_less_is_a_run_error(op, hw, path):
    with fg.Graph():
        x, ys = _model()
        with _refused(op, hw) as caught:
            _run([fg.sum(ys[op])], path, np.ones((1, 1) + hw))
    assert type(caught.value.__cause__) is fg.ShapeError
    assert caught.value.node.op.name == op


@pytest.mark.parametrize("path", PATHS)
def test_padding_counts_towards_the_fit(path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1, None, None))
        y = fg.conv2d(x, W, padding=(1, 0))   # height 1 + 2 rows of zeros: 3, fits
        (value,) = _run([y], path, np.ones((1, 1, 1, 3)))
        np.testing.assert_array_equal(value, [[[[W[0, 0, 1].sum()]]]])
        with _refused("conv2d", (1, 2), (1, 1, 0, 0)):
            _run([y], path, np.ones((1, 1, 1, 2)))


#: the derivative ops, built on their own (their x fed below the window's size): each
#: (op name, builder of the node from g of the 1×1 output shape and x)
GRADIENT_OPS = [
    ("conv2d_grad_x", lambda g, x: apply(conv2d_grad_x, g, W, x, stride=(1, 1),
                                         pads=(0, 0, 0, 0))),
    ("conv2d_grad_w", lambda g, x: apply(conv2d_grad_w, x, g, kernel=(3, 3), stride=(1, 1),
                                         pads=(0, 0, 0, 0))),
    ("max_pool2d_scatter", lambda g, x: apply(max_pool2d_scatter, g, x, size=(3, 3),
                                              stride=(3, 3))),
    ("avg_pool2d_grad", lambda g, x: apply(avg_pool2d_grad, g, x, size=(3, 3),
                                           stride=(3, 3))),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,build", GRADIENT_OPS, ids=[g[0] for g in GRADIENT_OPS])
def test_the_derivative_ops_refuse_it_too(name, build, path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1, None, None))
        y = build(fg.constant(np.ones((1, 1, 1, 1))), x)
        (fits,) = _run([y], path, FITS)
        assert fits.shape == (W.shape if name == "conv2d_grad_w" else FITS.shape)
        with _refused(name, (3, 2)):
            _run([y], path, np.ones((1, 1, 3, 2)))


@pytest.mark.parametrize("path", PATHS)
def test_max_pool_gather_refuses_it_too(path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1, None, None))
        y = apply(max_pool2d_gather, x * 2.0, x, size=(3, 3), stride=(3, 3))
        (fits,) = _run([y], path, FITS)
        np.testing.assert_array_equal(fits, [[[[16.0]]]])   # 2 x at x's maximum
        with _refused("max_pool2d_gather", (2, 3)):
            _run([y], path, np.ones((1, 1, 2, 3)))
