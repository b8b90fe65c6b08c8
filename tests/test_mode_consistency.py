"""Forward and reverse mode agree for every case of op_cases (whatever CASES holds when
the suite runs): ⟨u, J v⟩ from jvp equals ⟨vjp(u), v⟩; the Jacobian from forward mode
equals the one from reverse mode (its rows are the stacked vjps) and J v equals the jvp;
and, for a scalar reduction of each case, hvp (both modes) equals hessian @ v."""
import zlib

import numpy as np
import pytest

import flowgrad as fg
from op_cases import CASES

TOL = dict(rtol=1e-9, atol=1e-11)


def _build(fn, arrays):
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    nodes = [fg.placeholder(f"a{i}", shape=a.shape) for i, a in enumerate(arrays)]
    out = fn(*nodes)
    if out.dtype.kind not in "fc":
        pytest.skip(f"output of dtype {out.dtype} has no derivative")
    return nodes, out, dict(zip(nodes, arrays))


@pytest.mark.parametrize("name,fn,arrays,reference", CASES, ids=[c[0] for c in CASES])
def test_jvp_and_vjp_agree(name, fn, arrays, reference):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    nodes, out, feed = _build(fn, arrays)
    u = rng.standard_normal(out.shape)
    vs = [rng.standard_normal(n.shape) for n in nodes]
    jv = fg.jvp(out, nodes, [fg.constant(v) for v in vs])
    ujs = fg.vjp(out, nodes, fg.constant(u))
    jv_v, *uj_v = fg.run([jv, *ujs], feed)
    lhs = np.sum(u * jv_v)
    rhs = sum(np.sum(a * v) for a, v in zip(uj_v, vs))
    size = np.sum(np.abs(u * jv_v)) + sum(np.sum(np.abs(a * v)) for a, v in zip(uj_v, vs))
    assert abs(lhs - rhs) <= 1e-12 * size + 1e-300

    for node, v in zip(nodes, vs):
        J_fwd = fg.jacobian(out, node, mode="fwd")
        J_rev = fg.jacobian(out, node, mode="rev")
        assert J_fwd.shape == J_rev.shape == out.shape + node.shape
        jf, jr, jv_one = fg.run([J_fwd, J_rev, fg.jvp(out, node, fg.constant(v))], feed)
        np.testing.assert_allclose(jf, jr, **TOL)
        # J v: the rows of J (the stacked vjps) times v equal the forward-mode product
        Jm = jr.reshape(int(np.prod(out.shape)), int(np.prod(node.shape)))
        np.testing.assert_allclose((Jm @ v.ravel()).reshape(out.shape), jv_one, **TOL)


@pytest.mark.parametrize("name,fn,arrays,reference", CASES, ids=[c[0] for c in CASES])
def test_hvp_equals_hessian_times_v(name, fn, arrays, reference):
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)
    nodes, out, feed = _build(fn, arrays)
    w = rng.standard_normal(out.shape)
    f = fg.sum(fg.sin(out) * fg.constant(w))     # a scalar with curvature in every op
    for node in nodes:
        v = rng.standard_normal(node.shape)
        H = fg.hessian(f, node)
        assert H.shape == node.shape + node.shape
        hv_fr = fg.hvp(f, node, fg.constant(v))
        hv_rr = fg.hvp(f, node, fg.constant(v), mode="rev-rev")
        Hv, a, b = fg.run([H, hv_fr, hv_rr], feed)
        n = int(np.prod(node.shape))
        expected = (Hv.reshape(n, n) @ v.ravel()).reshape(node.shape)
        np.testing.assert_allclose(a, expected, **TOL)
        np.testing.assert_allclose(b, expected, **TOL)
        np.testing.assert_allclose(Hv.reshape(n, n), Hv.reshape(n, n).T, rtol=1e-8, atol=1e-10)
