"""A chain of 100,000 nodes builds, compiles, runs and differentiates without recursion."""
import sys

import numpy as np
import pytest

import flowgrad as fg

N = 100_000


def test_long_chain_builds_compiles_and_differentiates():
    assert sys.getrecursionlimit() < N  # a recursive walk would fail here
    with fg.Graph() as g:
        x = fg.placeholder("x")
        y = x
        for _ in range(N):
            y = fg.sin(y)
        dy = fg.grad(y, x)
        assert len(g) > 2 * N
        value, deriv = fg.compile([y, dy])(x=0.5)
    # Reference by hand: y_{k+1} = sin(y_k), dy_{k+1} = cos(y_k) dy_k.
    v, d = 0.5, 1.0
    for _ in range(N):
        v, d = np.sin(v), d * np.cos(v)
    assert value == pytest.approx(v, rel=1e-12)
    assert deriv == pytest.approx(d, rel=1e-9)


def test_long_chain_frees_values_after_last_use():
    with fg.Graph():
        x = fg.placeholder("x", shape=(1000,))
        y = x
        for _ in range(2000):
            y = fg.tanh(y)
        prog = fg.compile(y)
    vals = prog.run_reference(prog.bind((), {"x": np.ones(1000)}))
    live = [v for v in vals if v is not None]
    assert len(live) == 1  # only the output survives the run
