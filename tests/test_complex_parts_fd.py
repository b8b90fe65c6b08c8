"""conj, real and imag (ops/complex.py): reverse and forward rules against central finite
differences of a numpy loss, first and second order, with a broadcast partner. A real
loss L of a complex z has PyTorch's gradient ∂L/∂Re z + i ∂L/∂Im z; its forward rule
gives the directional derivative along ż."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad as fg

RNG = np.random.default_rng(7)
Z = RNG.standard_normal((2, 3)) + 1j * RNG.standard_normal((2, 3))
W = RNG.standard_normal(3) + 1j * RNG.standard_normal(3)          # broadcast over rows
H = 1e-6


def _np_loss(z):
    return np.sum(np.real(np.conj(z) * W) ** 2) + np.sum(np.imag(z * np.conj(W)) ** 3) \
        + np.sum(np.real(z) * np.imag(z))


def _fg_loss(z, w):
    return fg.sum(fg.real(fg.conj(z) * w) ** 2) + fg.sum(fg.imag(z * fg.conj(w)) ** 3) \
        + fg.sum(fg.real(z) * fg.imag(z))


def _fd_gradient(f, z):
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        for unit in (1.0, 1j):
            e = np.zeros_like(z)
            e[idx] = unit * H
            d = (f(z + e) - f(z - e)) / (2 * H)
            g[idx] += d * unit           # ∂/∂Re + i ∂/∂Im
    return g


@pytest.mark.parametrize("codegen", [True, False])
def test_first_order_reverse_and_forward(codegen):
    zdot = RNG.standard_normal((2, 3)) + 1j * RNG.standard_normal((2, 3))
    with fg.Graph():
        z = fg.placeholder("z", (2, 3), dtype="complex128")
        w = fg.constant(W)
        loss = _fg_loss(z, w)
        prog = fg.compile([fg.grad(loss, z), fg.jvp(loss, z, zdot)], codegen=codegen)
        for _ in range(2):                               # first call and later
            g, t = prog(z=Z)
            np.testing.assert_allclose(g, _fd_gradient(_np_loss, Z), rtol=1e-7, atol=1e-8)
            fd_t = (_np_loss(Z + H * zdot) - _np_loss(Z - H * zdot)) / (2 * H)
            np.testing.assert_allclose(np.real(t), fd_t, rtol=1e-7, atol=1e-8)


def test_second_order():
    """The gradient of a real functional of the gradient, against finite differences of
    the (first-order-checked) gradient program."""
    a = RNG.standard_normal((2, 3))
    b = RNG.standard_normal((2, 3))
    with fg.Graph():
        z = fg.placeholder("z", (2, 3), dtype="complex128")
        g = fg.grad(_fg_loss(z, fg.constant(W)), z)
        s = fg.sum(fg.real(g) * a + fg.imag(g) * b)
        first = fg.compile(g)
        second = fg.run(fg.grad(s, z), {z: Z})

    def s_of(zv):
        gv = first(z=zv)
        return np.sum(np.real(gv) * a + np.imag(gv) * b)

    np.testing.assert_allclose(second, _fd_gradient(s_of, Z), rtol=1e-6, atol=1e-7)


def test_real_inputs_pass_through():
    """On a real input conj and real are the input itself and imag is zeros: no node, and
    no derivative but the identity's (and zero's)."""
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        assert fg.conj(x) is x and fg.real(x) is x
        g = fg.run(fg.grad(fg.sum(fg.conj(x) * 2.0 + fg.imag(x)), x), {x: np.ones(3)})
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])
