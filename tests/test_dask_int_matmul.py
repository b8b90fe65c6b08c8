"""matmul of integers and bools on dask contracting a chunked axis: dask's sum of chunk
products promoted the dtype (uint8 came back uint64 and did not wrap, bool came back as
counts); now numpy's dtype and values (found by the dask parity probe)."""
import numpy as np
import pytest

import flowgrad as fg

pytest.importorskip("dask")
from flowgrad.backends.dask_backend import DaskBackend  # noqa: E402


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64", "bool"])
def test_integer_matmul_on_dask_is_numpys(dtype):
    rng = np.random.default_rng(4)
    X = rng.integers(0, 200, (5, 3)).astype(dtype)
    Y = rng.integers(0, 200, (5, 3)).astype(dtype)
    want = X.T @ Y
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3), dtype=dtype)
        y = fg.placeholder("y", shape=(None, 3), dtype=dtype)
        out = fg.transpose(x) @ y
        got = fg.compile(out, backend=DaskBackend(chunks=1))(x=X, y=Y)
    assert out.dtype == want.dtype and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
