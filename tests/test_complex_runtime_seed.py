"""A vjp of a complex output with a run-time length, differentiated again. Its
cotangent is read through ``shaped_like`` (held to the input's shape per call), whose
rule is the identity in the cotangent, but the op was missing from the complex-safe set:
the second derivative was refused ("the shaped_like rule is written for real values
only") where the static-shape graph answers. Against torch's double backward."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
Z = np.array([[1 + 1j, 0.5 - 2j, 0.3j], [-0.4 + 0.2j, 1.1, 0.7 - 0.6j]]) * 0.5
V = np.array([[0.2 - 1j, 1, 1j], [0.5, -1j, 0.3 + 0.3j]])


@pytest.mark.parametrize("shape", [(None, 3), (2, 3)])
def test_gradient_of_a_vjp_with_a_run_time_length_is_torchs(shape):
    with fg.Graph():
        z = fg.placeholder("z", shape=shape, dtype="complex128")
        t = fg.vjp(fg.exp(z) * z, z, V)
        g = fg.grad(fg.sum(fg.abs(t) ** 2), z)
        progs = [fg.compile(g, codegen=False), fg.compile(g), fg.compile(g, backend="dask")]
    a = torch.tensor(Z, requires_grad=True)
    (ta,) = torch.autograd.grad(torch.exp(a) * a, a, torch.tensor(V), create_graph=True)
    (want,) = torch.autograd.grad((ta.abs() ** 2).sum(), a)
    for prog in progs:
        np.testing.assert_allclose(fg.to_numpy(prog(z=Z)), want.numpy(), rtol=1e-12)
