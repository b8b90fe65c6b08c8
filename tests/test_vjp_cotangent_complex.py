"""fg.vjp's cotangent dtype where complex values meet it, as PyTorch's grad_outputs.

An integer cotangent for a complex output was propagated in its own dtype: for z + z an
int8 cotangent of 100 came back as −56 (200 wrapped), silently; it is now read in the
output's complex dtype, as it is in a float output's float dtype. A complex cotangent
for a real output had its imaginary part dropped (the sweep keeps a real input's real
part): now a UsageError at the user's line, as torch refuses it."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
Z = np.array([1 + 1j, 2 - 0.5j])


def _programs(out):
    return [fg.compile(out, codegen=False), fg.compile(out), fg.compile(out, backend="dask")]


@pytest.mark.parametrize("dtype", ["int8", "uint8", "bool"])
def test_an_integer_cotangent_of_a_complex_output_is_read_in_its_dtype(dtype):
    ct = np.array([100, 1], dtype=dtype)
    with fg.Graph():
        z = fg.variable(Z, name="z")
        progs = _programs(fg.vjp(z + z, z, ct))
    a = torch.tensor(Z, requires_grad=True)
    (a + a).backward(torch.tensor(ct.astype(np.complex128)))
    for prog in progs:
        got = fg.to_numpy(prog())
        assert got.dtype == np.complex128
        np.testing.assert_allclose(got, a.grad.numpy(), rtol=1e-15)


def test_a_complex_cotangent_of_a_real_output_is_refused():
    with fg.Graph():
        x = fg.variable(np.array([1.0, 2.0]), name="x")
        y = fg.exp(x)
        with pytest.raises(fg.UsageError, match="is complex") as err:
            fg.vjp(y, x, np.array([1j, 1.0]))
        assert "test_vjp_cotangent_complex.py" in str(err.value)
        # the boundary: a real cotangent for that output, and one for a complex output
        np.testing.assert_allclose(fg.run(fg.vjp(y, x, np.array([2.0, 1.0]))),
                                   [2 * np.e, np.e ** 2], rtol=1e-15)
        got = fg.run(fg.vjp(fg.exp(x * 1j), x, np.array([1.0, 1.0])))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, -np.sin([1.0, 2.0]), rtol=1e-15)   # re(conj(i e^{ix}))
