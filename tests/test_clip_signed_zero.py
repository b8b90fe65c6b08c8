"""clip and signed zeros: where lo ≤ x ≤ hi the value is x itself, the sign of its zero
too, as np.clip with number bounds (clip(0.0, -1, -0.0) is 0.0; min(max(x, lo), hi) gave
−0.0, numpy's maximum and minimum handing back their second argument on a tie)."""
import itertools

import numpy as np
import pytest

import flowgrad as fg

N = 100   # above regions.MIN_SIZE


@pytest.mark.parametrize("shape", [(), (N,)])
def test_clip_keeps_x_and_its_zero_sign_at_a_bound_as_numpy(shape):
    """Every sign combination of x, lo and hi among ±0 (and −1, 1 as far bounds): the
    value and the sign of zero of np.clip with number bounds (x is kept where
    lo ≤ x ≤ hi), on every path, bounds as numbers and as fed nodes."""
    zeros = [0.0, -0.0]
    for xv, lov, hiv in itertools.product(zeros, zeros + [-1.0], zeros + [1.0]):
        want = np.clip(np.float64(xv), lov, hiv)
        with fg.Graph():
            x = fg.placeholder("x", shape=shape)
            lo, hi = fg.placeholder("lo"), fg.placeholder("hi")
            outs = [fg.clip(x, lo, hi), fg.clip(x, lov, hiv)]
            for kw in (dict(codegen=False), {}, dict(verify=True), dict(backend="dask")):
                prog = fg.compile(outs, **kw)
                for call in range(2):
                    for got in prog(x=np.full(shape, xv), lo=lov, hi=hiv):
                        got = np.asarray(fg.to_numpy(got))
                        where = f"clip({xv}, {lov}, {hiv}) {kw} call {call}"
                        assert (got == want).all(), where
                        assert (np.signbit(got) == np.signbit(want)).all(), where


def test_clip_still_gives_hi_when_bounds_cross_and_nan_anywhere():
    with fg.Graph():
        x = fg.placeholder("x", shape=(4,))
        lo, hi = fg.placeholder("lo"), fg.placeholder("hi")
        y = fg.clip(x, lo, hi)
        data = np.array([0.0, 1.5, 5.0, np.nan])
        for kw in (dict(codegen=False), {}):
            prog = fg.compile(y, **kw)
            np.testing.assert_array_equal(prog(x=data, lo=2.0, hi=1.0), [1.0, 1.0, 1.0, np.nan])
            assert np.isnan(prog(x=data, lo=np.nan, hi=1.0)).all()
            assert np.isnan(prog(x=data, lo=0.0, hi=np.nan)).all()

