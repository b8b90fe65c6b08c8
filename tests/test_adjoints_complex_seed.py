"""``fg.adjoints`` of a complex output without a seed is refused, as ``fg.grad`` refuses
it and as torch's ``backward()`` ("grad can be implicitly created only for real scalar
outputs") and JAX's ``vjp`` (an explicit cotangent) do: it seeded 1 and handed back
numbers, picking torch's ``backward(1)`` silently. An explicit seed is read as
``fg.vjp`` reads its cotangent: a complex one for a complex output gives torch's
numbers; a complex one for a real output, whose imaginary part the sweep dropped
(x̄ came back 0.0), is refused as vjp refuses it."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")
Z0 = 1 + 2j


def test_a_complex_output_without_a_seed_is_refused_naming_it_and_the_line():
    with fg.Graph():
        for dtype in ("complex128", "complex64"):
            z = fg.placeholder(f"z_{dtype}", (), dtype)
            y = (z * z).named(f"y_{dtype}")
            with pytest.raises(fg.DifferentiationError,
                               match=rf"adjoints needs a real scalar output, but 'y_{dtype}'"
                               rf" is {dtype} \(built at .*test_adjoints_complex_seed.py:"
                               rf"\d+\).*seed=.*\n  at .*test_adjoints_complex_seed.py"):
                fg.adjoints(y)
        # the boundary: a real scalar output still takes the seed 1 (d(x·x)/dx = 2x)
        for dtype in ("float32", "float64"):
            x = fg.placeholder(f"x_{dtype}", (), dtype)
            gx = fg.adjoints(x * x)[x]
            got = fg.compile(gx)(**{f"x_{dtype}": np.asarray(3, dtype)})
            assert got.dtype == dtype and got == 6


def test_a_non_scalar_output_without_a_seed_names_adjoints():
    with fg.Graph():
        v = fg.placeholder("v", (3,))
        with pytest.raises(fg.DifferentiationError, match="adjoints needs a scalar output"):
            fg.adjoints(v * 2)


@pytest.mark.parametrize("seed", [1, 1j, 0.5 - 2j, np.complex64(1j)])
def test_an_explicit_complex_seed_gives_torchs_backward(seed):
    with fg.Graph():
        z = fg.placeholder("z", (), "complex128")
        y = fg.exp(z) * z
        got = fg.compile(fg.adjoints(y, seed=seed)[z])(z=Z0)
    a = torch.tensor(Z0, dtype=torch.complex128, requires_grad=True)
    (torch.exp(a) * a).backward(torch.tensor(complex(seed), dtype=torch.complex128))
    assert got.dtype == np.complex128
    np.testing.assert_allclose(got, a.grad.numpy(), rtol=1e-14)


def test_an_explicit_seed_is_read_as_vjps_cotangent():
    with fg.Graph():
        x = fg.placeholder("x", (), "float64")
        # a complex seed for a real output: x̄ was re(2x·1j) = 0.0, silently
        with pytest.raises(fg.UsageError, match="adjoints: the cotangent for .* is "
                           "complex.*\n  at .*test_adjoints_complex_seed.py"):
            fg.adjoints(x * x, seed=1j)
        # an int seed is read in the output's float dtype (x̄ = 2x·3 = 12 at x = 2)
        gx = fg.adjoints(x * x, seed=np.int8(3))[x]
        assert fg.compile(gx)(x=2.0) == 12.0
        v = fg.placeholder("v", (3,))
        with pytest.raises(fg.DifferentiationError, match=r"seed has shape \(2,\)"):
            fg.adjoints(v * 2, seed=np.ones(2))
        gv = fg.adjoints(v * v, seed=np.array([1.0, 2.0, 3.0]))[v]
        np.testing.assert_array_equal(fg.compile(gv)(v=np.array([1.0, 1.0, 2.0])),
                                      [2.0, 4.0, 12.0])


def test_a_trace_of_a_complex_output_records_no_adjoints():
    # prog.trace seeded 1 through fg.adjoints: it records values only now, as it does
    # for a non-scalar first output
    with fg.Graph():
        z = fg.placeholder("z", (), "complex128")
        y = z * z
        tr = fg.compile(y).trace(z=Z0)
        assert tr[y] == Z0 * Z0 and not tr.adjoint_nodes
        with pytest.raises(fg.UsageError, match="not a scalar, or is complex"):
            tr.adjoint(z)
        x = fg.placeholder("x", ())
        tr = fg.compile(x * x).trace(x=3.0)
        assert tr.adjoint(x) == 6.0
