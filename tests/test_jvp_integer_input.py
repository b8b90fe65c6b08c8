"""A tangent for an integer or bool input of fg.jvp is refused (such an input takes None,
JAX's float0: tests/test_jvp_tangent_dtype.py), and fg.jacobian with respect to one is
refused in both modes, as fg.grad and fg.vjp refuse it: jvp gave zeros, silently, and so
fg.jacobian in forward mode (the default when x has fewer entries than y) answered zeros
where reverse mode raised (found by the higher-order sweep)."""
import numpy as np
import pytest

import flowgrad as fg


def _graph(dtype):
    x = fg.placeholder("x", shape=(3,))
    i = fg.placeholder("i", shape=(3,), dtype=dtype)
    return x, i, fg.concatenate([x * i, x * i * i])      # 6 entries: forward mode


@pytest.mark.parametrize("dtype", ["int64", "int8", "uint8", "bool"])
def test_forward_mode_refuses_an_integer_input_as_reverse_mode_does(dtype):
    with fg.Graph():
        x, i, y = _graph(dtype)
        builds = [lambda: fg.jacobian(y, i), lambda: fg.jacobian(y, i, method="map"),
                  lambda: fg.jacobian(y, i, mode="rev"), lambda: fg.vjp(y, i, np.ones(6))]
        for build in builds:
            with pytest.raises(fg.DifferentiationError, match=f"'i' of dtype {dtype}"):
                build()
        for build in (lambda: fg.jvp(y, i, np.ones(3)),
                      lambda: fg.jvp(y, [x, i], [np.ones(3)] * 2)):
            with pytest.raises(fg.UsageError, match=f"must be None: 'i' is {dtype}"):
                build()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_float_input_of_any_width_is_still_differentiated(dtype):
    # the boundary: the narrowest float has a forward-mode derivative, ∂(x·i)/∂i = x
    xv = np.array([1.0, -2.0, 3.0])
    with fg.Graph():
        x, i, y = _graph(dtype)
        iv = np.array([2.0, 1.0, 0.5], dtype)
        J = fg.run(fg.jacobian(y, i), {x: xv, i: iv})
        t = fg.run(fg.jvp(y, i, np.ones(3, dtype)), {x: xv, i: iv})
    want = np.concatenate([np.diag(xv), np.diag(2 * xv * iv.astype(float))])
    np.testing.assert_allclose(J, want, rtol=1e-3)
    np.testing.assert_allclose(t, want.sum(1), rtol=1e-3)
