"""Gradients that divide by a count N (mean, var, mse, softmax-CE's batch mean) on float16
values: N past 65504 rounds to inf in float16 (from 65520 on), and the gradient came
back 0 — silently — with static and run-time lengths. float16 values are now divided
in float32 and rounded back, as torch divides half values. Checked against torch's
float16 autograd at the first N that overflowed, 65520, and at 70000."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import flowgrad as fg


def _grads(n, shape):
    xv = np.random.default_rng(n).standard_normal(n).astype(np.float16)
    with fg.Graph():
        x = fg.placeholder("x", shape, dtype="float16")
        outs = [fg.grad(fg.mean(x), x), fg.grad(fg.var(x), x),
                fg.grad(fg.mse(x, 0 * x), x)]
        got = fg.run(outs, {x: xv})
    xt = torch.tensor(xv, requires_grad=True)
    want = [torch.autograd.grad(f(xt), xt)[0].numpy() for f in
            (torch.mean, lambda t: t.var(unbiased=False), lambda t: (t * t).mean())]
    return got, want


@pytest.mark.parametrize("n", [65520, 70000])
@pytest.mark.parametrize("run_time", [False, True])
def test_a_float16_mean_var_and_mse_gradient_past_65504_entries(n, run_time):
    got, want = _grads(n, (None,) if run_time else (n,))
    for g, w in zip(got, want):
        assert g.dtype == np.float16
        assert np.count_nonzero(g) > n // 2             # it was 0 everywhere
    np.testing.assert_array_equal(got[0], want[0])      # 1/N: one rounding either way
    np.testing.assert_allclose(got[1].astype(float), want[1].astype(float), rtol=2e-2,
                               atol=3e-7)               # 2(x − x̄)/N, rounded in float16
    # mse's rule rounds 2·x and ·g/N in float16 apart; torch's runs in float32 once
    np.testing.assert_allclose(got[2].astype(float), want[2].astype(float), rtol=2e-2,
                               atol=3e-7)


def test_wider_floats_build_the_same_gradient_as_before():
    """float32 and float64 means divide by N in their own dtype: no cast is added."""
    for dtype in ("float32", "float64"):
        with fg.Graph() as g:
            x = fg.placeholder("x", (None, 3), dtype=dtype)
            n0 = len(g)
            fg.grad(fg.mean(x), x)
            assert not any(nd.op is not None and nd.op.name == "astype"
                           for nd in g.nodes[n0:])
