"""Complex gradients follow PyTorch's convention (the conjugate Wirtinger derivative, what
torch's .grad holds for a real loss). The ops whose rules give it are allowed, the
holomorphic ones included (their reverse rules conjugate the derivative factor:
tests/test_complex_grad.py checks each); ops whose rules are written for real values
only are refused by the reverse and forward sweeps, naming the op, rather than give a
derivative of neither convention (also for a real input next to a complex one)."""
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


HOLOMORPHIC = {   # refused before the rules conjugated their factors; now torch's numbers
    "exp": (lambda z, y: fg.exp(z), lambda a, b: torch.exp(a)),
    "mul": (lambda z, y: z * y, lambda a, b: a * b),
    "div by complex": (lambda z, y: R / y, lambda a, b: torch.tensor(R) / b),
    "matmul": (lambda z, y: z @ y, lambda a, b: a @ b),
    "sin": (lambda z, y: fg.sin(z), lambda a, b: torch.sin(a)),
}


@pytest.mark.parametrize("name", list(HOLOMORPHIC))
def test_holomorphic_rules_give_torchs_gradients(name):
    f, tf = HOLOMORPHIC[name]
    with fg.Graph():
        z, y = fg.variable(Z, name="z"), fg.variable(Y, name="y")
        gz, gy = fg.run(fg.grad(fg.sum(fg.abs(f(z, y)) ** 2), [z, y]))
    a, b = torch.tensor(Z, requires_grad=True), torch.tensor(Y, requires_grad=True)
    (tf(a, b).abs() ** 2).sum().backward()
    for got, t in ((gz, a), (gy, b)):
        want = t.grad.numpy() if t.grad is not None else np.zeros_like(Z)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name, f, wrt", [
    ("sigmoid", lambda z, y, r: fg.sigmoid(z), "complex input 'z'"),
    ("prod", lambda z, y, r: fg.prod(z, axis=0), "complex input 'z'"),
    ("logsumexp", lambda z, y, r: fg.logsumexp(z), "complex input 'z'"),
    ("sign", lambda z, y, r: fg.sign(z) * y, "complex input 'z'"),
    ("solve", lambda z, y, r: fg.solve(r, y), "input 'r'"),     # real, beside a complex
    ("maximum", lambda z, y, r: fg.maximum(r, z), "input 'r'")])
def test_rules_for_real_values_only_are_refused(name, f, wrt):
    with fg.Graph():
        z, y = fg.variable(Z, name="z"), fg.variable(Y, name="y")
        r = fg.variable(R, name="r")
        out = f(z, y, r)
        for mode, build in (("reverse", lambda: fg.grad(fg.sum(fg.abs(out) ** 2), [z, y, r])),
                            ("forward", lambda: fg.jvp(out, [z, y, r], [Z, Y, R]))):
            with pytest.raises(fg.DifferentiationError, match="PyTorch's convention") as info:
                build()
            msg = str(info.value)
            assert f"({name}) with respect to its {wrt} in {mode} mode" in msg
            assert "holomorphic ops cos, div, einsum, exp" in msg
            assert __file__.rsplit("/", 1)[-1] in msg.splitlines()[-1]


def test_abs_of_a_complex_is_declared_real():
    with fg.Graph():
        for dtype, real in ((np.complex128, np.float64), (np.complex64, np.float32)):
            a = fg.abs(fg.constant(np.array([3 + 4j], dtype)))
            assert a.dtype == real and fg.run(a).dtype == real and fg.run(a)[0] == 5.0
