"""fg.jvp's tangent dtype, as jax.jvp checks it: a float (or complex) input takes a
tangent of exactly its dtype, an integer or boolean input takes none (JAX's float0:
``None`` here). An int, bool or complex tangent for a float input was accepted
silently (a complex one made the result complex), and a float64 tangent for a float32
input widened the result to float64; each is a UsageError naming the input now.
Python numbers and lists carry no dtype of their own (JAX's weak types): they take
the input's. Values against numpy's closed forms."""
import numpy as np
import pytest

import flowgrad as fg

X = np.array([0.5, -1.25, 2.0])
T = np.array([1.0, 3.0, -2.0])


def _cube_jvp(dtype, tangent):
    """jvp of sum(x³) at X with ``tangent``; the closed form is Σ 3x² t."""
    with fg.Graph():
        x = fg.placeholder("x", (3,), dtype=dtype)
        j = fg.jvp(fg.sum(x * x * x), x, tangent)
        return j.dtype, fg.run(j, x=X.astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_tangent_of_the_inputs_dtype_is_accepted(dtype):
    got_dtype, got = _cube_jvp(dtype, T.astype(dtype))
    assert got_dtype == np.dtype(dtype) and got.dtype == np.dtype(dtype)
    want = np.sum(3 * X.astype(dtype) ** 2 * T.astype(dtype))
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_python_numbers_take_the_inputs_dtype(dtype):
    # ints and floats without a dtype of their own (weakly typed, as JAX's)
    got_dtype, got = _cube_jvp(dtype, [1, 3, -2.0])
    assert got_dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, np.sum(3 * X ** 2 * T), rtol=1e-6)


@pytest.mark.parametrize("tangent, dtype", [
    (T.astype(np.int64), "int64"), (T > 0, "bool"), (T + 0j, "complex128"),
    # the boundary: another float width is refused too (JAX: "dtypes must be equal")
    (T.astype(np.float32), "float32")])
def test_another_dtype_for_a_float64_input_is_refused(tangent, dtype):
    with pytest.raises(fg.UsageError, match=rf"jvp: the tangent for 'x' has dtype {dtype}, "
                                            r"but 'x' is float64.*\n  at .*test_jvp_tangent"):
        _cube_jvp("float64", tangent)


def test_a_float64_tangent_for_a_float32_input_is_refused():
    # it made the derivative float64 (a wider result than the function's), silently
    with pytest.raises(fg.UsageError, match="has dtype float64, but 'x' is float32"):
        _cube_jvp("float32", T)


def test_a_tangent_node_of_another_dtype_is_refused():
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        t = fg.placeholder("t", (3,), dtype="float32")
        with pytest.raises(fg.UsageError, match="has dtype float32, but 'x' is float64"):
            fg.jvp(fg.sum(x * x), x, t)


@pytest.mark.parametrize("tangent, what", [([1j, 0, 0], "complex128"),
                                           ([True, False, True], "bool")])
def test_python_values_of_another_kind_are_refused(tangent, what):
    with pytest.raises(fg.UsageError, match=f"holds {what} values, but 'x' is float64"):
        _cube_jvp("float64", tangent)


def test_a_python_value_beyond_float32_is_refused():
    with pytest.raises(fg.UsageError, match="beyond the range of float32"):
        _cube_jvp("float32", [1e300, 0.0, 0.0])
    _cube_jvp("float32", [3e38, 0.0, 0.0])       # within float32's range: accepted


def test_an_integer_input_takes_no_tangent():
    # y = Σ i·x²: the float input's tangent alone moves y; the integer input's is None
    with fg.Graph():
        i = fg.placeholder("i", (3,), dtype="int64")
        x = fg.placeholder("x", (3,))
        y = fg.sum(fg.astype(i, "float64") * x * x)
        both = fg.jvp(y, [x, i], [T, None])
        alone = fg.jvp(y, i, None)
        I = np.array([2, -1, 3])
        got = fg.run([both, alone], i=I, x=X)
        for bad in (np.zeros(3), np.zeros(3, np.int64)):
            with pytest.raises(fg.UsageError, match="tangent for 'i' must be None: 'i' is int64"):
                fg.jvp(y, [x, i], [T, bad])
        with pytest.raises(fg.UsageError, match="tangent for 'x' is None, but 'x' is float64"):
            fg.jvp(y, x, None)
    np.testing.assert_allclose(got[0], np.sum(I * 2 * X * T), rtol=1e-15)
    assert got[1] == 0.0


def test_hvp_checks_its_vector_as_jvp_its_tangent():
    # hvp is the jvp of the gradient: its vector is a tangent of x (H v = 6 x v here)
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        f = fg.sum(x * x * x)
        got = fg.run(fg.hvp(f, x, T), x=X)
        with pytest.raises(fg.UsageError, match="hvp: the vector for 'x' has dtype float32"):
            fg.hvp(f, x, T.astype(np.float32))
    np.testing.assert_allclose(got, 6 * X * T, rtol=1e-15)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("method", ["vectorize", "map"])
def test_jacobian_with_respect_to_an_integer_input_is_refused_in_both_modes(mode, method):
    # reverse mode refused it (grad's rule); forward mode handed back zeros, an answer
    # that looks like one (its tangent is JAX's float0, and jax.jacfwd refuses it too)
    with fg.Graph():
        i = fg.placeholder("i", (2,), dtype="int64")
        x = fg.placeholder("x", (2,))
        y = fg.astype(i, "float64") * x
        with pytest.raises(fg.DifferentiationError,
                           match="with respect to 'i' of dtype int64"):
            fg.jacobian(y, i, mode=mode, method=method)
        J = fg.run(fg.jacobian(y, x, mode=mode, method=method), i=np.array([2, 3]),
                   x=np.array([1.0, 5.0]))
    np.testing.assert_array_equal(J, np.diag([2.0, 3.0]))
