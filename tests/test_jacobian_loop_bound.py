"""MAX_BATCHED_ENTRIES counts what a vectorized loop allocates (issue h27): the values its
batched body computes each iteration (body intermediates × batch) and the results it
stacks (length × batch × an entry), not only the nodes of the enclosing graph. Over the
bound, fg.jacobian refuses the vectorized path (method='vectorize': BatchingError) or
falls back to its loop over basis vectors (method=None); at the bound it vectorizes.
Values are checked against the Jacobian in closed form (the chain rule in numpy)."""
import re

import numpy as np
import pytest

import flowgrad as fg
from flowgrad import higher_order
from flowgrad.batching import BatchingError

N, WIDE = 6, 50          # x has N entries: the identity batch is N; the body's A @ h is WIDE


def _weights(rng):
    return rng.standard_normal((WIDE, N)) / 5, rng.standard_normal((N, WIDE)) / 5


def _scan_net(A, Bm, T):
    """y = tanh(h_T), h_{t+1} = Bm tanh(A h_t) · t-th scale, h_0 = x."""
    x = fg.placeholder("x", shape=(N,))
    a, b = fg.constant(A), fg.constant(Bm)
    scales = np.linspace(0.5, 1.5, T)

    def step(h, s):
        wide = fg.tanh(a @ h)                 # (WIDE,): batched, (N, WIDE) a step
        return (b @ wide) * s, None
    hT, _ = fg.scan(step, x, fg.constant(scales))
    return x, fg.tanh(hT), scales


def _closed_form(A, Bm, scales, xv):
    """dy/dx by the chain rule: J ← s · Bm diag(1 − tanh²(A h)) A J, then diag(1 − y²)."""
    h, J = xv, np.eye(N)
    for s in scales:
        t = np.tanh(A @ h)
        J = s * Bm @ ((1 - t * t)[:, None] * (A @ J))
        h = s * Bm @ t
    return (1 - np.tanh(h) ** 2)[:, None] * J


def _ops(node):
    g = node.graph
    return {g.node(i).op.name for i in g.ancestors([node.id]) if g.node(i).op is not None}


def _refused(y, x, entries, where):
    with pytest.raises(BatchingError) as info:
        fg.jacobian(y, x, mode="fwd", method="vectorize")
    assert str(info.value) == (
        f"jacobian: a batched intermediate ({where}) would hold {entries} entries (more "
        f"than {entries - 1}); method='map' loops over the basis vectors instead")


def _vectorized_at_the_bound(monkeypatch, y, x, entries):
    """The vectorized Jacobian, refused one entry below ``entries`` and built at it."""
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries - 1)
    with pytest.raises(BatchingError, match=re.escape(f"would hold {entries} entries")):
        fg.jacobian(y, x, mode="fwd", method="vectorize")
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries)
    return fg.jacobian(y, x, mode="fwd", method="vectorize")


def test_a_scans_batched_body_intermediates_count(rng, monkeypatch):
    A, Bm = _weights(rng)
    x, y, scales = _scan_net(A, Bm, T=4)
    entries = N * WIDE           # tanh(A @ h) batched: (N, WIDE) each iteration
    assert entries > 4 * N * N   # more than any value outside the body (the stacked carries)
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries - 1)   # just over
    _refused(y, x, entries, "in the body of the loop 'scan jvp'")
    J_map = fg.jacobian(y, x, mode="fwd")           # method=None: the basis loop instead
    assert "basis_map" in _ops(J_map)
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries)       # at the bound
    J_vec = fg.jacobian(y, x, mode="fwd", method="vectorize")
    assert "basis_map" not in _ops(J_vec) and "loop" in _ops(J_vec)
    xv = rng.standard_normal(N)
    want = _closed_form(A, Bm, scales, xv)
    a, b = fg.run([J_map, J_vec], {x: xv})
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b, want, rtol=1e-12, atol=1e-14)


def test_a_scans_stacked_results_count_length_times_batch(rng, monkeypatch):
    A, Bm = _weights(rng)
    T = 20
    x, y, scales = _scan_net(A, Bm, T)
    entries = T * N * N          # the batched scan's stacked tangent carries: (T, N, N)
    assert entries > N * WIDE
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries - 1)
    _refused(y, x, entries, "a result of the loop 'scan jvp'")
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", entries)
    J = fg.jacobian(y, x, mode="fwd", method="vectorize")
    xv = rng.standard_normal(N)
    np.testing.assert_allclose(fg.run(J, {x: xv}), _closed_form(A, Bm, scales, xv),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["fori_loop", "while_loop"])
def test_fori_and_while_bodies_count(rng, kind, monkeypatch):
    A, Bm = _weights(rng)
    x = fg.placeholder("x", shape=(N,))
    a, b = fg.constant(A), fg.constant(Bm)
    if kind == "fori_loop":
        hT = fg.fori_loop(0, 3, lambda i, h: b @ fg.tanh(a @ h), x)
    else:
        k, hT = fg.while_loop(lambda c: c[0] < 3,
                              lambda c: (c[0] + 1, b @ fg.tanh(a @ c[1])),
                              (fg.constant(np.int64(0)), x))
    y = fg.tanh(hT)
    entries = N * WIDE
    J = _vectorized_at_the_bound(monkeypatch, y, x, entries)
    xv = rng.standard_normal(N)
    np.testing.assert_allclose(fg.run(J, {x: xv}), _closed_form(A, Bm, [1.0] * 3, xv),
                               rtol=1e-12, atol=1e-14)


def test_a_straight_line_refusal_is_unchanged(rng, monkeypatch):
    x = fg.placeholder("x", shape=(N,))
    y = fg.tanh(fg.constant(rng.standard_normal((WIDE, N))) @ x)
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", N * WIDE - 1)
    with pytest.raises(BatchingError) as info:
        fg.jacobian(y, x, mode="fwd", method="vectorize")
    assert str(info.value) == (
        f"jacobian: a batched intermediate would hold {N * WIDE} entries (more than "
        f"{N * WIDE - 1}); method='map' loops over the basis vectors instead")
    monkeypatch.setattr(higher_order, "MAX_BATCHED_ENTRIES", N * WIDE)
    assert "basis_map" not in _ops(fg.jacobian(y, x, mode="fwd", method="vectorize"))


def test_a_loop_nested_in_a_body_counts(rng, monkeypatch):
    A, Bm = _weights(rng)
    x = fg.placeholder("x", shape=(N,))
    a, b = fg.constant(A), fg.constant(Bm)

    def outer(h, s):                          # the wide value lives in the inner body only
        inner, _ = fg.scan(lambda g, _: (b @ fg.tanh(a @ g), None), h, length=2)
        return inner * s, None
    hT, _ = fg.scan(outer, x, fg.constant(np.array([0.5, 1.5])))
    y = fg.tanh(hT)
    entries = N * WIDE
    J = _vectorized_at_the_bound(monkeypatch, y, x, entries)
    xv = rng.standard_normal(N)
    h, want = xv, np.eye(N)
    for s in (0.5, 1.5):                      # two inner steps, then the outer scale
        for _ in range(2):
            t = np.tanh(A @ h)
            want = Bm @ ((1 - t * t)[:, None] * (A @ want))
            h = Bm @ t
        h, want = s * h, s * want
    want = (1 - np.tanh(h) ** 2)[:, None] * want
    np.testing.assert_allclose(fg.run(J, {x: xv}), want, rtol=1e-12, atol=1e-14)
