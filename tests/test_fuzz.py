"""Fuzzed graphs (tests/fuzz_graphs.py): random graphs from the op table compute numpy's
values and pass fg.check_grads (both modes, first and second order); ops given operands
they cannot take refuse them with a fg.FlowgradError subclass, never a raw numpy error.

CI runs a bounded number of examples (profile "ci"); ``make fuzz`` runs the long profile
(``HYPOTHESIS_PROFILE=fuzz``). Hypothesis prints the failing graph's steps.
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import flowgrad as fg
from fuzz_graphs import HOSTILE, hostile_ops, valid_graphs

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=1500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _fits(declared, actual):
    return len(declared) == len(actual) and all(d is None or d == a
                                                for d, a in zip(declared, actual))


@settings(PROFILE)
@given(valid_graphs())
def test_random_graphs_compute_numpys_values(case):
    with case.graph:
        got = fg.run(case.out, case.feed)
    assert _fits(case.out.shape, np.shape(got)), (case.out.shape, np.shape(got))
    assert np.shape(got) == case.expected.shape
    np.testing.assert_allclose(got, case.expected, rtol=1e-11, atol=1e-12)


@settings(PROFILE)
@given(valid_graphs(max_steps=3))
def test_random_graphs_have_the_derivatives_of_finite_differences(case):
    with case.graph:
        f = fg.sum(fg.sin(case.out))
        fg.check_grads(f, case.inputs, feed=case.feed, order=2, rtol=1e-5, atol=1e-6)


@settings(PROFILE)
@given(valid_graphs())
def test_random_graphs_run_under_lockstep_verify_mode(case):
    """The program's executor (generated array or scalar code, numba regions on the
    second call) beside the reference interpreter on every call: fg.VerifyError at the
    first value that differs beyond the executor's promise (bitwise for most)."""
    with case.graph, np.errstate(all="ignore"):
        outs = [case.out] + list(fg.grad(fg.sum(fg.sin(case.out)), case.inputs))
        prog = fg.compile(outs, verify=True)
        assert prog.verify
        first = prog(case.feed)
        for a, b in zip(prog(case.feed), first):
            np.testing.assert_array_equal(a, b)


@settings(PROFILE)
@given(hostile_ops())
def test_ops_refuse_what_they_cannot_take_with_a_flowgrad_error(drawn):
    """Building either works — and then the node's shape and dtype are those of numpy's
    result — or raises a fg.FlowgradError subclass naming the op."""
    name, shapes, params = drawn
    n, make = HOSTILE[name]
    rng = np.random.default_rng(0)
    values = [rng.uniform(0.5, 1.5, s) + 2 * _eye_like(s) for s in shapes]
    with fg.Graph():
        nodes = [fg.placeholder(f"a{k}", shape=s) for k, s in enumerate(shapes)]
        try:
            out = make(fg, params)(*nodes)
        except fg.FlowgradError:
            return
        got = fg.run(out, dict(zip(nodes, values)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want = np.asarray(make(np, params)(*values))
        except Exception:   # flowgrad accepted what numpy refuses: a missing build-time check
            pytest.fail(f"{name}{tuple(shapes)} {params} was built (shape {out.shape}) "
                        f"but numpy refuses it")
    assert out.shape == want.shape and np.shape(got) == want.shape, (out.shape, want.shape)
    assert out.dtype == want.dtype == np.asarray(got).dtype
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _eye_like(shape):
    """A multiple of the identity on the last two axes (so square stacks are invertible)."""
    if len(shape) >= 2 and shape[-1] == shape[-2]:
        return np.broadcast_to(np.eye(shape[-1]), shape)
    return np.zeros(shape)


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 3, 10))
@given(valid_graphs(max_steps=3))
def test_random_graphs_and_their_gradients_on_dask(case):
    """The same values and gradients on dask (chunked), or a BackendError naming an op
    dask lacks when the program is compiled."""
    from flowgrad.backends.dask_backend import DaskBackend
    with case.graph:
        f = fg.sum(fg.sin(case.out))
        outs = [case.out, *fg.grad(f, case.inputs)]
        want = fg.compile(outs)(case.feed)
        try:
            prog = fg.compile(outs, backend=DaskBackend(chunks=2))
        except fg.BackendError:
            return
        got = prog(case.feed)
    for w, v in zip(want, got):
        np.testing.assert_allclose(fg.to_numpy(v), w, rtol=1e-10, atol=1e-12)
