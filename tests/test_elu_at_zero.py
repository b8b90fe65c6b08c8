"""elu's derivatives at 0 against torch's (float64 autograd, and torch.func's forward
mode). torch's first derivative at 0 is α (its ``x ≤ 0`` branch) but its second is 0
(its double backward takes ``x < 0``); flowgrad's second derivative at 0 and −0.0 was α,
in reverse, forward and mixed mode alike. Checked at 0, −0.0, tiny ± values and a
few ordinary ones, every mode, both executors, first and later call."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jacfwd, jacrev

import flowgrad as fg

POINTS = np.array([0.0, -0.0, 1e-300, -1e-300, 5e-324, -5e-324, 0.7, -0.7, -30.0])


def _torch(alpha):
    """torch's first and second derivative at each point: reverse over reverse and
    forward over forward (the two agree; both are pinned)."""
    f = lambda t: F.elu(t, alpha=alpha)
    out = []
    for v in POINTS:
        t = torch.tensor(v, dtype=torch.float64)
        d1, d2 = jacrev(f)(t).item(), jacrev(jacrev(f))(t).item()
        assert (d1, d2) == (jacfwd(f)(t).item(), jacfwd(jacfwd(f))(t).item())
        out.append((d1, d2))
    return np.array(out).T


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("kw", [dict(codegen=False), {}], ids=["interpreter", "codegen"])
def test_elu_first_and_second_derivative_match_torch_at_zero(alpha, kw):
    d1, d2 = _torch(alpha)
    assert d2[0] == d2[1] == 0.0 and d1[0] == alpha     # what torch says at 0
    with fg.Graph():
        x = fg.placeholder("x", shape=(len(POINTS),), dtype="float64")
        y = fg.sum(fg.elu(x, alpha=alpha))
        g = fg.grad(y, x)                                # elementwise: one entry each
        ones = np.ones(len(POINTS))
        fwd = fg.jvp(fg.elu(x, alpha=alpha), x, ones)
        outs = {"reverse": g, "forward": fwd,
                "reverse over reverse": fg.grad(fg.sum(g), x),
                "forward over forward": fg.jvp(fwd, x, ones),
                "forward over reverse": fg.jvp(g, x, ones),
                "reverse over forward": fg.grad(fg.sum(fwd), x)}
        prog = fg.compile(list(outs.values()), **kw)
        for _ in range(2):
            got = dict(zip(outs, prog(x=POINTS)))
            for name, value in got.items():
                want = d1 if name in ("reverse", "forward") else d2
                np.testing.assert_array_equal(value, want, err_msg=name)
