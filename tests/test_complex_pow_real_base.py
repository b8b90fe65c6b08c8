"""x ** p with a real base x < 0 and a complex exponent p: the forward promotes x to
complex (numpy's x^p = exp(p log x), principal log: log 2 + iπ at x = −2), so ∂/∂p is
x^p times that complex log. The rule took the real log of x, nan for x < 0, and the
gradient (and the forward-mode tangent) came back nan with no error. Against PyTorch in
complex128 (reverse) and central differences (forward), on every executor path."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")

X = np.array([-2.0, 0.5, -0.3, -1.0])         # negative and positive bases
P = np.array([0.4 + 0.3j, -0.2 + 0.1j, 1.1 - 0.5j, 1.5 + 0.2j])
W = np.array([0.7 - 0.2j, -1.3 + 0.4j, 0.2 + 0.9j, 0.5 - 0.5j])


def _programs(outputs):
    return [fg.compile(outputs, codegen=False), fg.compile(outputs),
            fg.compile(outputs, backend="dask")]


def test_gradient_of_a_negative_real_base_to_a_complex_power_is_torchs():
    with fg.Graph():
        x, p = fg.variable(X, name="x"), fg.variable(P, name="p")
        out = x ** p
        loss = fg.sum(fg.abs(out) ** 2) + fg.sum(fg.real(out * W))
        grads = fg.grad(loss, [x, p])
        progs = _programs(grads)
    a, b = (torch.tensor(v, requires_grad=True) for v in (X, P))
    out = a ** b
    ((out.abs() ** 2).sum() + (out * torch.tensor(W)).real.sum()).backward()
    want = [a.grad.numpy(), b.grad.resolve_conj().numpy()]
    assert np.all(np.isfinite(want[1]))
    for prog in progs:
        for _ in range(2):   # first and later calls
            for got, w in zip(prog(), want):
                got = fg.to_numpy(got)
                assert got.dtype == w.dtype
                np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)


def test_tangent_of_a_negative_real_base_to_a_complex_power_is_the_difference_quotient():
    tp = np.array([0.3 - 0.6j, 1.0 + 0.2j, -0.4 + 0.4j, 0.8 + 0.1j])
    with fg.Graph():
        x, p = fg.variable(X, name="x"), fg.variable(P, name="p")
        progs = _programs([fg.jvp(x ** p, p, tp)])
    h = 1e-6
    fd = (X.astype(complex) ** (P + h * tp) - X.astype(complex) ** (P - h * tp)) / (2 * h)
    for prog in progs:
        np.testing.assert_allclose(fg.to_numpy(prog()[0]), fd, rtol=1e-8, atol=1e-9)
