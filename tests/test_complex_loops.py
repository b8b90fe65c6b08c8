"""Reverse mode through loops with complex values, against PyTorch (complex128, the
loop unrolled). The derivative loop took each step's vjp as the gradient of Σ out·ct,
a complex number differentiated as if it were real: a complex carry's factors came back
conjugated at some steps and not at others (scan of c·x: conj(x₀)·x₁, not conj(x₀x₁)),
silently, on every executor. Now the gradient of re Σ out·conj(ct), each step's vjp in
PyTorch's convention: scan (carry, stacked xs, ys, a captured variable), fori_loop,
while_loop and cond; first and second call; real loops build what they built."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(7)


def _c(*shape):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)) * 0.5


Z, XS, W = _c(3), _c(4, 3), _c(3)


def _step(c, x, w, lib):
    return lib.sin(c) * x + c * w, lib.exp(c) * w


def _torch_grads():
    z, xs, w = (torch.tensor(v, requires_grad=True) for v in (Z, XS, W))
    c, ys = z, []
    for t in range(len(XS)):
        c, y = _step(c, xs[t], w, torch)
        ys.append(y)
    loss = (c.abs() ** 2).sum() + (torch.stack(ys) * torch.tensor(XS)).real.sum()
    return [a.numpy() for a in torch.autograd.grad(loss, [z, xs, w])]


def _check(grads, want):
    progs = [fg.compile(grads, codegen=False), fg.compile(grads),
             fg.compile(grads, backend="dask")]
    for prog in progs:
        for _ in range(2):
            for got, w in zip(prog(), want):
                got = fg.to_numpy(got)
                assert got.dtype == np.complex128
                np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-13)


def test_scan_gradients_are_torchs():
    with fg.Graph():
        z, xs, w = (fg.variable(v, name=n) for v, n in zip((Z, XS, W), ("z", "xs", "w")))
        c, ys = fg.scan(lambda c, x: _step(c, x, w, fg), z, xs)
        loss = fg.sum(fg.abs(c) ** 2) + fg.sum(fg.real(ys * XS))
        grads = fg.grad(loss, [z, xs, w])
    _check(grads, _torch_grads())


def _torch_power_grad(n):
    z = torch.tensor(Z, requires_grad=True)
    c = z
    for _ in range(n):
        c = c * torch.tensor(W) + torch.exp(c) * 0.1
    (c * torch.tensor(XS[0])).real.sum().backward()
    return z.grad.numpy()


@pytest.mark.parametrize("kind", ["fori_loop", "while_loop"])
def test_fori_and_while_loop_gradients_are_torchs(kind):
    with fg.Graph():
        z = fg.variable(Z, name="z")
        body = lambda c: c * W + fg.exp(c) * 0.1   # noqa: E731
        if kind == "fori_loop":
            c = fg.fori_loop(0, 3, lambda i, c: body(c), z)
        else:
            c, _ = fg.while_loop(lambda s: s[1] < 3, lambda s: (body(s[0]), s[1] + 1),
                                 (z, fg.constant(np.int64(0))))
        grads = [fg.grad(fg.sum(fg.real(c * XS[0])), z)]
    _check(grads, [_torch_power_grad(3)])


def test_cond_gradient_is_torchs():
    with fg.Graph():
        z = fg.variable(Z, name="z")
        c = fg.cond(fg.constant(True), lambda c: c * W + fg.exp(c) * 0.1, lambda c: c, z)
        grads = [fg.grad(fg.sum(fg.real(c * XS[0])), z)]
    _check(grads, [_torch_power_grad(1)])
