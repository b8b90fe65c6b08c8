"""Shared helper for op tests: build fn over float64 placeholders and check every
derivative (reverse and forward mode, first and second order) against central
finite differences, and the forward value against a numpy reference."""
from __future__ import annotations

import numpy as np

import flowgrad as fg


def check_op(fn, *arrays, reference=None, order=2, modes=("rev", "fwd"), **tol):
    """``fn(*nodes)`` must match ``reference(*arrays)`` and pass fg.check_grads."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with fg.Graph():
        nodes = [fg.placeholder(f"a{i}", shape=a.shape) for i, a in enumerate(arrays)]
        out = fn(*nodes)
        feed = dict(zip(nodes, arrays))
        value = fg.run(out, feed)
        if reference is not None:
            expected = reference(*arrays)
            np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
            assert np.shape(value) == np.shape(expected) == out.shape
        fg.check_grads(out, nodes, feed=feed, modes=modes, order=order, **tol)
        return value
