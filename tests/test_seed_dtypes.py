"""An integer or bool seed handed to fg.jvp / fg.vjp / fg.hvp is read in its primal's
float dtype, as torch casts a grad_output to its output's dtype: it was propagated in
its own dtype, so an int8 tangent of 100 for x + x gave −56, and the result was an
integer or a float depending on the ops on the path (found by the higher-order sweep).
Each value against the closed form and torch's autograd."""
import numpy as np
import pytest
import torch

import flowgrad as fg

X = np.array([1.0, 2.0])


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("seed_dtype", ["int8", "uint8", "int64", "bool"])
def test_an_integer_seed_is_read_in_the_primal_dtype(codegen, seed_dtype):
    seed = np.array([100, 1]).astype(seed_dtype)
    s = seed.astype(np.float64)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        y = x + x                                  # J = 2 I: jvp = vjp = 2 s
        outs = [fg.jvp(y, x, seed), fg.vjp(y, x, seed), fg.jvp(x, x, seed),
                fg.hvp(fg.sum(x * x * x), x, seed)]   # H = diag(6 x)
        got = fg.compile(outs, codegen=codegen)({x: X})
    xt = torch.tensor(X, requires_grad=True)
    ref, = torch.autograd.grad(xt + xt, xt, torch.tensor(seed).to(torch.float64))
    for node, v, want in zip(outs, got, [2 * s, 2 * s, s, 6 * X * s]):
        assert node.dtype == v.dtype == np.float64
        np.testing.assert_array_equal(v, want)
    np.testing.assert_array_equal(got[1], ref.numpy())


def test_the_result_dtype_does_not_depend_on_the_path():
    # float32 x with an int seed: jvp and vjp of x itself (and of reshape, sum) were
    # int64, of sin(x) or 2x float32
    seed = np.array([1, -2, 3])
    xv = np.array([0.1, 0.2, 0.3], np.float32)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        paths = [x, fg.reshape(x, (3,)), fg.sin(x), x * 2.0]
        outs = [f(y, x, seed) for y in paths for f in (fg.jvp, fg.vjp)]
        got = fg.run(outs, {x: xv})
    s32 = seed.astype(np.float32)
    want = [s32, s32, s32, s32, np.cos(xv) * s32, np.cos(xv) * s32, 2 * s32, 2 * s32]
    for node, v, w in zip(outs, got, want):
        assert node.dtype == v.dtype == np.float32
        np.testing.assert_allclose(v, w, rtol=1e-6)


@pytest.mark.parametrize("codegen", [True, False])
def test_an_integer_seed_node_is_cast_too(codegen):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        t = fg.placeholder("t", shape=(2,), dtype="int8")
        j = fg.jvp(x + x + x, x, t)
        got = fg.compile(j, codegen=codegen)({x: X, t: np.array([50, -3], np.int8)})
    assert j.dtype == got.dtype == np.float64
    np.testing.assert_array_equal(got, [150.0, -9.0])
