"""A derivative's seed (jvp's tangent, vjp's cotangent, hvp's vector) for an input with a
run-time length is held to that input's shape per call: a (1, k) seed for a (None, k)
input fed (3, k) was broadcast — the answer for a seed of ones — and is now a FeedError
naming the seed, on every executor. (flowgrad/seeds.py)"""
import numpy as np
import pytest

import flowgrad as fg

W = np.array([[0.5, -0.2], [1.1, 0.3], [0.0, 2.0]])
T = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])
EXECUTORS = [dict(codegen=True), dict(codegen=False), dict(backend="dask")]


def _run(node, feed, how):
    out = fg.compile(node, **how)(feed)
    return np.asarray(out.compute() if hasattr(out, "compute") else out)


@pytest.mark.parametrize("how", EXECUTORS, ids=["codegen", "interpreter", "dask"])
def test_a_broadcastable_seed_of_the_wrong_run_time_length_is_refused(how):
    with fg.Graph():
        w = fg.placeholder("w", (None, 2))
        L = fg.sum(w * w * w)
        one_row = np.ones((1, 2))            # length 1: broadcasts against any length
        cases = {
            "tangent for w": fg.jvp(w * w, w, one_row),
            "tangent for w ": fg.jvp(2.0 * w, w, one_row),   # reads no value of w
            "cotangent for": fg.vjp(w * w, w, one_row),
            "vector for w": fg.hvp(L, w, one_row),
            "vector for w  ": fg.hvp(L, w, one_row, mode="rev-rev"),
        }
        for name, node in cases.items():
            with pytest.raises(fg.FeedError, match=f"'w' has length 3 on axis 0, but "
                                                   f"constant '{name.strip()}.*length 1"):
                _run(node, {w: W}, how)
        # the same seeds at the fed length: J t and H v in closed form (y = w², L = Σ w³)
        got = [_run(n, {w: W}, how) for n in (
            fg.jvp(w * w, w, T), fg.vjp(w * w, w, T), fg.hvp(L, w, T),
            fg.hvp(L, w, T, mode="rev-rev"))]
    for g, want in zip(got, [2 * W * T, 2 * W * T, 6 * W * T, 6 * W * T]):
        np.testing.assert_allclose(g, want, rtol=1e-15)


@pytest.mark.parametrize("how", EXECUTORS[:2], ids=["codegen", "interpreter"])
def test_a_seed_node_with_a_run_time_length_is_tied_to_the_input(how):
    with fg.Graph():
        w = fg.placeholder("w", (None, 2))
        v = fg.placeholder("v", (None, 2))
        t = fg.jvp(3.0 * w, w, v)          # its tangent 3 v: no op ties v to w but the seed
        with pytest.raises(fg.FeedError, match="'v' has length 2 on axis 0, but placeholder "
                                               "'w' has length 3"):
            _run(t, {w: W, v: T[:2]}, how)
        np.testing.assert_allclose(_run(t, {w: W, v: T}, how), 3 * T, rtol=1e-15)


def test_a_seed_disagreeing_in_rank_or_a_known_length_is_refused_when_built():
    with fg.Graph():
        w = fg.placeholder("w", (None, 2))
        for bad in (np.ones(2), np.ones((3, 3)), np.ones((3, 2, 1))):
            with pytest.raises(fg.DifferentiationError, match=r"jvp: the tangent has shape "
                                                              r".* but 'w' has shape \(None, 2\)"):
                fg.jvp(w * w, w, bad)
        with pytest.raises(fg.DifferentiationError, match="hvp: the vector has shape"):
            fg.hvp(fg.sum(w * w), w, np.ones((3, 1)))
        with pytest.raises(fg.DifferentiationError, match="vjp: the cotangent has shape"):
            fg.vjp(w * w, w, np.ones((2,)))
        # a known shape is still compared exactly, and builds no extra node
        x = fg.placeholder("x", (3,))
        with pytest.raises(fg.DifferentiationError, match=r"shape \(1,\), but 'x' has shape"):
            fg.jvp(x * x, x, np.ones(1))
        seed = fg.constant(np.ones(3))
        assert fg.jvp(x, x, seed) is seed
