"""An integer or bool cotangent handed to fg.vjp is read in its output's float dtype, as
torch casts a grad_output to its output's dtype: it was propagated in its own dtype, so
an int8 seed of 100 for x + x gave −56, and the result was an integer or a float
depending on the ops on the path (found by the higher-order sweep). A tangent (fg.jvp,
fg.hvp's vector) is held to its input's dtype exactly, as JAX holds it: an integer or
bool one for a float input is refused (tests/test_jvp_tangent_dtype.py has the rest).
Each value against the closed form and torch's autograd."""
import numpy as np
import pytest
import torch

import flowgrad as fg

X = np.array([1.0, 2.0])


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("seed_dtype", ["int8", "uint8", "int64", "bool"])
def test_an_integer_cotangent_is_read_in_the_output_dtype(codegen, seed_dtype):
    seed = np.array([100, 1]).astype(seed_dtype)
    s = seed.astype(np.float64)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        y = x + x                                  # J = 2 I: vjp = 2 s
        outs = [fg.vjp(y, x, seed), fg.vjp(fg.sin(x), x, seed)]
        got = fg.compile(outs, codegen=codegen)({x: X})
        for build in (lambda: fg.jvp(y, x, seed), lambda: fg.hvp(fg.sum(x * x), x, seed)):
            with pytest.raises(fg.UsageError, match=f"has dtype {seed_dtype}"):
                build()
    xt = torch.tensor(X, requires_grad=True)
    ref, = torch.autograd.grad(xt + xt, xt, torch.tensor(seed).to(torch.float64))
    for node, v, want in zip(outs, got, [2 * s, np.cos(X) * s]):
        assert node.dtype == v.dtype == np.float64
        np.testing.assert_array_equal(v, want)
    np.testing.assert_array_equal(got[0], ref.numpy())


def test_the_result_dtype_does_not_depend_on_the_path():
    # float32 x with an int cotangent: vjp of x itself (and of reshape) was int64, of
    # sin(x) or 2x float32
    seed = np.array([1, -2, 3])
    xv = np.array([0.1, 0.2, 0.3], np.float32)
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        paths = [x, fg.reshape(x, (3,)), fg.sin(x), x * 2.0]
        outs = [fg.vjp(y, x, seed) for y in paths]
        got = fg.run(outs, {x: xv})
    s32 = seed.astype(np.float32)
    want = [s32, s32, np.cos(xv) * s32, 2 * s32]
    for node, v, w in zip(outs, got, want):
        assert node.dtype == v.dtype == np.float32
        np.testing.assert_allclose(v, w, rtol=1e-6)


@pytest.mark.parametrize("codegen", [True, False])
def test_an_integer_cotangent_node_is_cast_too(codegen):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        t = fg.placeholder("t", shape=(2,), dtype="int8")
        j = fg.vjp(x + x + x, x, t)
        got = fg.compile(j, codegen=codegen)({x: X, t: np.array([50, -3], np.int8)})
        with pytest.raises(fg.UsageError, match="has dtype int8"):
            fg.jvp(x + x + x, x, t)
    assert j.dtype == got.dtype == np.float64
    np.testing.assert_array_equal(got, [150.0, -9.0])
