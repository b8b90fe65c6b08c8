"""fg.var and fg.std of float16 values: the variance was summed in float16, so past 65504
(70000 values of spread 3, or 1000 of spread 20) it came back inf or NaN, silently,
where torch's half var accumulates in float32 and is right. Now var accumulates in
float32 and rounds once; std is the root of that float32 variance (a variance past
65504 is inf in float16, its root 300 is not, as torch's). Checked against torch's
float16 var/std and the float64 closed form, on every executor, static and run-time
lengths, first and later call; the drawn rule of var's gradient too."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import flowgrad as fg
from flowgrad.viz import rules as R
from flowgrad.viz.rule_expr import Ctx

EXECUTORS = [dict(codegen=False), {}, dict(backend="dask")]


def _cases():
    rng = np.random.default_rng(7)
    return {
        "70000 of spread 3": (rng.standard_normal((2, 70000)) * 3).astype(np.float16),
        "1000 of spread 20": (rng.standard_normal((2, 1000)) * 20).astype(np.float16),
        # var 90000 is past 65504 (inf, as torch's); std 300 is not
        "var past 65504": np.array([[300.0, -300.0] * 5] * 2, np.float16),
    }


def _half_close(got, want):
    """Equal within one float16 rounding (the two sums differ in their last float32 bits)."""
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(float), np.asarray(want, float), rtol=1e-3)


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("run_time", [False, True])
@pytest.mark.parametrize("kw", EXECUTORS, ids=["interpreter", "codegen", "dask"])
def test_float16_var_and_std_accumulate_in_float32(case, run_time, kw):
    a = _cases()[case]
    t = torch.tensor(a)
    want = [t.var(dim=1, unbiased=False), t.var(dim=1), t.std(dim=1, unbiased=False),
            t.std(dim=1)]
    exact = np.var(a.astype(np.float64), axis=1)
    with np.errstate(over="ignore"):            # 90000 rounds to inf in float16
        exact_half = exact.astype(np.float16)
    with fg.Graph():
        x = fg.placeholder("x", (2, None) if run_time else a.shape, dtype="float16")
        prog = fg.compile([fg.var(x, 1), fg.var(x, 1, ddof=1), fg.std(x, 1),
                           fg.std(x, 1, ddof=1)], **kw)
        for _ in range(2):                       # the first call and a later one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # var 90000 overflows float16 (as torch)
                got = [fg.to_numpy(v) for v in prog(x=a)]
            for g, w in zip(got, want):
                _half_close(g, w.numpy())
            _half_close(got[0], exact_half)
            _half_close(got[2], np.sqrt(exact).astype(np.float16))
            assert np.all(np.isfinite(got[2]))   # was inf or NaN in every case


def test_float16_std_gradient_is_torchs():
    """std's gradient on float16: (x − x̄)/(N std), taken in float32 and rounded back."""
    a = _cases()["70000 of spread 3"]
    t = torch.tensor(a.astype(np.float64), requires_grad=True)
    want = torch.autograd.grad(t.std(dim=1).sum(), t)[0].numpy()
    with fg.Graph():
        x = fg.placeholder("x", (2, None), dtype="float16")
        gx = fg.grad(fg.sum(fg.std(x, 1, ddof=1)), x)
        for kw in EXECUTORS:
            got = fg.to_numpy(fg.compile(gx, **kw)(x=a))
            assert got.dtype == np.float16
            # the gradient is ~1e-6, float16 subnormals: spaced 6e-8
            np.testing.assert_allclose(got.astype(float), want, rtol=2e-3, atol=6e-8)


def test_float16_var_drawn_rule_past_65504_entries():
    """The drawn rule of var's gradient divided by n in float16 (inf past 65504): its
    value was 0 everywhere; it is now 2(x − x̄)/n as torch's float16 gradient."""
    a = _cases()["70000 of spread 3"][0]
    t = torch.tensor(a, requires_grad=True)
    want = torch.autograd.grad(t.var(unbiased=False), t)[0].numpy().astype(float)
    c = Ctx(["x"], "y", [a.shape], (), {"axis": (0,), "ddof": 0, "keepdims": False}, 0,
            args=[a], out=np.var(a.astype(np.float32)).astype(np.float16), g=np.float16(1))
    got = np.asarray(R.rule("var", c).value(c), float)
    assert np.count_nonzero(got) > a.size // 2
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=3e-7)
