"""logsumexp's float32 derivatives at large logits ([1e30, 0], values near 88.7 where
float32's exp overflows, a 1e4 spread, ties at 3.4e38, −inf entries) against torch's
float32 and float64 autograd: the gradient exp(x − lse) reuses the output, so it is
finite wherever torch's is. A guard (this passed before): the gradient, a second
derivative and the forward rule, both executors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import flowgrad as fg

CASES = [[1e30, 0.0], [88.7, 88.0, -5.0], [1e4, -1e4, 5e3, 1e4 - 3], [100.0, 100.0, 99.0],
         [-1e30, -1e30 + 1e24, 0.0], [-np.inf, 0.0, 1.0]]


def _torch(a, dtype):
    t = torch.tensor(a, dtype=dtype, requires_grad=True)
    g, = torch.autograd.grad(torch.logsumexp(t, 0), t, create_graph=True)
    w = torch.arange(len(a), dtype=dtype)
    h, = torch.autograd.grad(g @ w, t)
    return g.detach().numpy(), h.numpy(), float(g.detach() @ w)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("kw", [dict(codegen=False), {}], ids=["interpreter", "codegen"])
def test_logsumexp_float32_derivatives_at_large_logits(case, kw):
    a = np.array(CASES[case], np.float32)
    w = np.arange(len(a), dtype=np.float32)
    with fg.Graph():
        x = fg.placeholder("x", shape=a.shape, dtype="float32")
        y = fg.logsumexp(x)
        g = fg.grad(y, x)
        prog = fg.compile([g, fg.grad(fg.sum(g * w), x), fg.jvp(y, x, w)], **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # exp(-inf) and the like, as torch
            got = prog(x=a)
    g32, h32, j32 = _torch(a, torch.float32)
    g64, h64, j64 = _torch(a.astype(np.float64), torch.float64)
    assert all(np.all(np.isfinite(v)) for v in got)
    for v, t32, t64 in zip(got, (g32, h32, j32), (g64, h64, j64)):
        assert np.asarray(v).dtype == np.float32
        np.testing.assert_allclose(v, t32, rtol=1e-6, atol=1e-7)
        # float32's x − lse at |x| ~ 1e4 is good to ~1e-3 absolute: torch's too
        np.testing.assert_allclose(v, t64, rtol=1e-3, atol=1e-4)
