"""Complex gradients follow PyTorch's convention (the conjugate Wirtinger derivative, what
torch's .grad holds for a real loss). The ops whose rules give it are allowed; the
holomorphic rules written for real inputs (v̄·f'(z), not v̄·conj(f'(z))) are refused by
the reverse sweep, naming the op, rather than give a gradient of neither convention."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
Z = np.array([[1 + 2j, -0.5 + 0.3j], [0.3 - 0.2j, 0.8 + 0.1j]])
Y = np.array([[0.7 - 1j, 2 + 0.5j], [0.1 + 0.4j, -1 + 1j]])
R = np.array([[0.3, -1.2], [2.0, 0.5]])

ALLOWED = {
    "abs of a difference": (lambda z, y: fg.sum(fg.abs(z - y) ** 2),
                            lambda a, b: ((a - b).abs() ** 2).sum()),
    "real scale and sum": (lambda z, y: fg.sum(fg.abs(fg.sum(z * R, axis=0) + y[0]) ** 3),
                           lambda a, b: ((a * torch.tensor(R)).sum(0) + b[0]).abs().pow(3).sum()),
    "transpose, real matmul": (lambda z, y: fg.sum(fg.abs(fg.transpose(z) @ R)),
                               lambda a, b: (a.T @ torch.tensor(R, dtype=a.dtype)).abs().sum()),
}


@pytest.mark.parametrize("name", list(ALLOWED))
def test_allowed_complex_gradients_are_torchs(name):
    f, tf = ALLOWED[name]
    with fg.Graph():
        z, y = fg.variable(Z, name="z"), fg.variable(Y, name="y")
        gz, gy = fg.run(fg.grad(f(z, y), [z, y]))
    a, b = torch.tensor(Z, requires_grad=True), torch.tensor(Y, requires_grad=True)
    tf(a, b).backward()
    np.testing.assert_allclose(gz, a.grad.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gy, b.grad.numpy() if b.grad is not None else 0, atol=1e-15)


@pytest.mark.parametrize("name, f", [
    ("exp", lambda z, y: fg.exp(z)), ("mul", lambda z, y: z * y),
    ("div by complex", lambda z, y: R / y), ("matmul", lambda z, y: z @ y),
    ("sin", lambda z, y: fg.sin(z))])
def test_holomorphic_rules_are_refused_for_complex_inputs(name, f):
    with fg.Graph():
        z, y = fg.variable(Z, name="z"), fg.variable(Y, name="y")
        loss = fg.sum(fg.abs(f(z, y)) ** 2)
        with pytest.raises(fg.DifferentiationError, match="PyTorch's convention") as info:
            fg.grad(loss, [z, y])
    assert __file__.rsplit("/", 1)[-1] in str(info.value).splitlines()[-1]


def test_abs_of_a_complex_is_declared_real():
    with fg.Graph():
        for dtype, real in ((np.complex128, np.float64), (np.complex64, np.float32)):
            a = fg.abs(fg.constant(np.array([3 + 4j], dtype)))
            assert a.dtype == real and fg.run(a).dtype == real and fg.run(a)[0] == 5.0
