"""Higher-order derivatives with complex values, against PyTorch in complex128.

hvp(mode='rev-rev') with a list of complex inputs differentiated Σ g·v, a complex
number, as if it were a real loss: the answer was neither torch's nor the one-input or
forward-over-reverse answer. It is now the gradient of re Σ g·conj(v), each block's vjp
with cotangent v. jacobian (and hessian) of a complex input or output answered by the
mode: the forward mode's columns held f′(z), the reverse mode's rows conj f′(z), and a
real output of a complex input (|z|²) a real row in one mode and a complex one in the
other. Such Jacobians are now refused in both modes and both methods (JAX's jacfwd /
jacrev refuse without holomorphic=True); complex values between a real input and a
real output still give the real Jacobian."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(5)


def _c(*shape):
    return RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)


Z, Y, V, U = _c(3), _c(2), _c(3), _c(2)


def _f(z, y, lib):
    if lib is fg:
        return fg.sum(fg.abs(fg.exp(z) * z) ** 2) + fg.sum(fg.real(fg.sin(z))) * fg.sum(
            fg.abs(y * z[:2]) ** 2)
    return (torch.abs(torch.exp(z) * z) ** 2).sum() + torch.sin(z).real.sum() * (
        (y * z[:2]).abs() ** 2).sum()


@pytest.mark.parametrize("mode", ["fwd-rev", "rev-rev"])
def test_hvp_of_two_complex_inputs_is_torchs(mode):
    a, b = (torch.tensor(v, requires_grad=True) for v in (Z, Y))
    ga, gb = torch.autograd.grad(_f(a, b, torch), [a, b], create_graph=True)
    want = torch.autograd.grad([ga, gb], [a, b], [torch.tensor(V), torch.tensor(U)])
    with fg.Graph():
        z, y = fg.variable(Z, name="z"), fg.variable(Y, name="y")
        out = fg.hvp(_f(z, y, fg), [z, y], [V, U], mode=mode)
        progs = [fg.compile(out, codegen=False), fg.compile(out), fg.compile(out, backend="dask")]
    for prog in progs:
        for got, w in zip(prog(), want):
            np.testing.assert_allclose(fg.to_numpy(got), w.numpy(), rtol=1e-12)


CASES = {
    "holomorphic": lambda z: fg.exp(z) * z,             # complex in, complex out
    "real of complex": lambda z: fg.abs(z) ** 2,        # complex in, real out
    "complex of real": lambda x: fg.exp(fg.real(x) * 1j),   # real in, complex out
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("method", ["vectorize", "map"])
def test_jacobian_of_a_complex_input_or_output_is_refused_in_both_modes(name, mode, method):
    with fg.Graph():
        x = fg.variable(Z.real.copy() if name == "complex of real" else Z, name="x")
        y = CASES[name](x)
        with pytest.raises(fg.DifferentiationError, match="is complex") as err:
            fg.jacobian(y, x, mode=mode, method=method)
    assert "test_complex_higher_order.py" in str(err.value)   # the user's line


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_hessian_with_respect_to_a_complex_input_is_refused(mode):
    with fg.Graph():
        z = fg.variable(Z, name="z")
        with pytest.raises(fg.DifferentiationError, match="input 'z' is complex"):
            fg.hessian(fg.sum(fg.abs(z) ** 2), z, mode=mode)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_complex_values_between_real_input_and_output_keep_the_real_jacobian(mode):
    """|x·(1+2j)|² = 5x², elementwise: J = diag(10x), in both modes (the boundary)."""
    x0 = RNG.standard_normal(3)
    with fg.Graph():
        x = fg.variable(x0, name="x")
        J = fg.run(fg.jacobian(fg.abs(x * (1 + 2j)) ** 2, x, mode=mode))
    assert J.dtype == np.float64
    np.testing.assert_allclose(J, np.diag(10 * x0), rtol=1e-14)
