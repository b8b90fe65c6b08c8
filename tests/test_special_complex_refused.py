"""erf and Φ (normal_cdf, which gelu's rule uses) refuse complex input.

Their kernel picks the series by |x| < 2 and otherwise the continued fraction of the
real erfc, with the sign by x < 0: for complex x with |x| ≥ 2 the value was silently
wrong (erf(0.1 + 3j) off by ~100%, against scipy). torch.special.erf refuses complex
as well; real inputs are unchanged."""
import numpy as np
import pytest
import scipy.special as sp

import flowgrad as fg


@pytest.mark.parametrize("build", [fg.erf, fg.ops.special.normal_cdf])
def test_complex_is_refused(build):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype="complex128")
        with pytest.raises(fg.ShapeError, match="complex values are not supported"):
            build(x)


def test_real_erf_and_tan_unchanged():
    v = np.array([-3.0, -0.5, 0.0, 1.5, 2.0, 6.0])
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        prog = fg.compile([fg.erf(x), fg.ops.special.normal_cdf(x)])
    e, p = prog(x=v)
    np.testing.assert_allclose(e, sp.erf(v), rtol=1e-14)
    np.testing.assert_allclose(p, sp.ndtr(v), rtol=1e-13)
    z = np.array([0.3 + 0.2j, 2 - 1j])
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype="complex128")
        got = fg.run(fg.tan(x), {x: z})       # tan's kernel is numpy's, right for complex
    np.testing.assert_allclose(got, np.tan(z), rtol=1e-14)
