"""erf, Φ (normal_cdf) and gelu in float32 and float16 are their float64 values rounded.

The kernel ran in the input's precision, where Φ's series form ½(1 − erf(−x/√2))
cancels for −2.83 < x ≲ −1.4: the ulp of 1 became an absolute error, 1e−4 relative
for float32 Φ(−2.79) (gelu too) and 60% in float16; erf was off by 3.6 ulps. Now the
narrow types are computed in float64 and rounded once: within an ulp of scipy, as
torch's float32 erf is."""
import numpy as np
import pytest
import scipy.special as sp

import flowgrad as fg

X = np.concatenate([np.linspace(-6, 6, 5001), [-2.793, -2.814, -1.5, 1e-3, 0.0]])


def _ulps(got, want, dtype):
    want_r = want.astype(dtype).astype(np.float64)
    spacing = np.spacing(np.abs(want_r).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("n", [len(X), 7])          # the masked branches and the where
def test_narrow_floats_within_an_ulp_of_float64(dtype, codegen, n):
    xs = X[:: max(1, len(X) // n)][:n] if n < len(X) else X
    xs = np.append(xs, [-2.793, -2.814]).astype(dtype)
    x64 = xs.astype(np.float64)
    with fg.Graph():
        x = fg.placeholder("x", shape=xs.shape, dtype=np.dtype(dtype).name)
        prog = fg.compile([fg.erf(x), fg.ops.special.normal_cdf(x), fg.gelu(x)],
                          codegen=codegen)
    erf, cdf, gelu = prog(x=xs)
    for got, want in [(erf, sp.erf(x64)), (cdf, sp.ndtr(x64))]:
        assert got.dtype == dtype
        assert _ulps(got, want, dtype).max() <= 1.0
    # gelu = x·Φ(x) rounds twice (Φ, then the product): 2 ulps, where the result is a
    # normal number, as Φ is (a subnormal Φ's rounding is scaled by |x|)
    want = x64 * sp.ndtr(x64)
    normal = np.minimum(np.abs(want), sp.ndtr(x64)) >= np.finfo(dtype).tiny
    assert gelu.dtype == dtype
    assert _ulps(gelu[normal], want[normal], dtype).max() <= 2.0
