"""Sums of float16 values accumulate in float32 and round once, as torch's and JAX's do.

numpy adds a float16 array in float16 along a leading axis: past 2048 a float16 is
spaced by 2, so adding 1 rounds back and 2050 ones summed to 2048; 60000 + 60000
overflowed to inf although the whole sum was 0. fg.sum, the adjoint of a broadcast
(sum_to: the gradient of a bias over a batch of 2050 was 2048), cumsum, einsum, the
2-norm (x² of a float16 past 255 is inf) and the summed losses gave numpy's float16
answer on the numpy backend while fg.mean (np.mean sums float16 in float32), the dask
backend and torch gave the right one. Checked against torch's float16 results and the
float64 closed form rounded once, on every executor, first and later call. The
boundary: 2048 ones are exact either way; 2050 is the first count float16 loses.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import flowgrad as fg

EXECUTORS = [dict(codegen=False), {}, dict(backend="dask")]
IDS = ["interpreter", "codegen", "dask"]


def _run(build, a, kw):
    with fg.Graph():
        x = fg.placeholder("x", a.shape, dtype="float16")
        out = build(x)
        prog = fg.compile(out, **kw)
        got = []
        for _ in range(2):                       # the first call and a later one
            with warnings.catch_warnings():
                warnings.simplefilter("error")   # no overflow warning on the way either
                got.append(fg.to_numpy(prog(x=a)))
    np.testing.assert_array_equal(got[0], got[1])
    return got[0]


def _same_half(got, want):
    want = np.asarray(want)
    assert got.dtype == np.float16, got.dtype
    np.testing.assert_array_equal(got, want.astype(np.float16))


def _ones(n):
    return np.ones((n, 3), np.float16)


CASES = {
    # name: (flowgrad build, torch reference of the float16 tensor)
    "sum over axis 0": (lambda x: fg.sum(x, axis=0), lambda t: t.sum(0)),
    "cumsum over axis 0": (lambda x: fg.cumsum(x, axis=0)[-1], lambda t: t.cumsum(0)[-1]),
    "einsum ij->j": (lambda x: fg.einsum("ij->j", x), lambda t: torch.einsum("ij->j", t)),
    "einsum ij,ik->jk": (lambda x: fg.einsum("ij,ik->jk", x, x),
                         lambda t: torch.einsum("ij,ik->jk", t, t)),
}


@pytest.mark.parametrize("n", [2048, 2050])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_sums_of_ones_count_past_2048(case, n, kw):
    build, ref = CASES[case]
    a = _ones(n)
    got = _run(build, a, kw)
    want = ref(torch.tensor(a))
    assert want.dtype == torch.float16
    _same_half(got, want.numpy())
    assert np.all(got == n)                       # the closed form: n, exact in float16


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_partial_sums_past_65504_do_not_overflow(kw):
    a = np.array([[60000.0], [60000.0], [-60000.0], [-60000.0]], np.float16)
    got = _run(lambda x: fg.sum(x, axis=0), a, kw)
    _same_half(got, torch.tensor(a).sum(0).numpy())
    assert got[0] == 0.0


@pytest.mark.parametrize("n", [2048, 2050])
@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_gradient_of_a_bias_over_a_batch(n, kw):
    """The adjoint of broadcasting b over n rows sums n ones: torch's b.grad is n."""
    a = _ones(n)
    tb = torch.ones(3, dtype=torch.float16, requires_grad=True)
    (torch.tensor(a) * tb).sum().backward()
    with fg.Graph():
        x = fg.placeholder("x", a.shape, dtype="float16")
        b = fg.placeholder("b", (3,), dtype="float16")
        prog = fg.compile(fg.grad(fg.sum(x * b), b), **kw)
        got = fg.to_numpy(prog(x=a, b=np.ones(3, np.float16)))
    _same_half(got, tb.grad.numpy())
    assert np.all(got == n)


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_two_norm_of_values_past_255(kw):
    """x² of 300 is past 65504 in float16; the norm √(3·300²) = 519.6 is not (torch)."""
    a = np.full((3,), 300.0, np.float16)
    got = _run(lambda x: fg.norm(x), a, kw)
    want = torch.linalg.vector_norm(torch.tensor(a))
    _same_half(got, want.numpy())
    _same_half(got, np.sqrt(3 * 300.0 ** 2))


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_softmax_cross_entropy_over_4000_classes_on_axis_0(kw):
    """The log of the sum of 4000 exp(0) is log 4000, not log 2048 (torch, which sums
    its classes in float32), and 3 columns of it sum to 3 log 4000."""
    z = np.zeros((4000, 3), np.float16)
    p = np.zeros((4000, 3), np.float16)
    p[0] = 1.0                                   # one-hot targets: the first class
    with fg.Graph():
        x = fg.placeholder("x", z.shape, dtype="float16")
        t = fg.placeholder("t", p.shape, dtype="float16")
        prog = fg.compile(fg.softmax_cross_entropy(x, t, reduction="sum", axis=0), **kw)
        got = fg.to_numpy(prog(x=z, t=p))
    want = torch.nn.functional.cross_entropy(torch.tensor(z.T), torch.tensor(p.T),
                                             reduction="sum")
    _same_half(got, want.numpy())
    # each column's loss rounds to float16 before the sum: within 2 ulps of the closed form
    np.testing.assert_allclose(float(got), 3 * np.log(4000.0), rtol=2 * 2.0 ** -10)


LSE_CASES = {
    "logsumexp": (lambda x: fg.logsumexp(x, axis=0), lambda t: torch.logsumexp(t, 0),
                  np.log(4000.0)),
    "softmax": (lambda x: fg.softmax(x, axis=0)[0], lambda t: torch.softmax(t, 0)[0],
                1 / 4000),
    "log_softmax": (lambda x: fg.log_softmax(x, axis=0)[0],
                    lambda t: torch.log_softmax(t, 0)[0], -np.log(4000.0)),
    "max's gradient (4000 ties)": (lambda x: fg.grad(fg.sum(fg.max(x, axis=0)), x)[0],
                                   None, 1 / 4000),
}


@pytest.mark.parametrize("case", list(LSE_CASES))
@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_normalisers_over_4000_entries_on_axis_0(case, kw):
    """log Σ exp(0) over 4000 entries is log 4000 = 8.29, not log 2048 = 7.62 (torch);
    each of 4000 tied maxima gets 1/4000 of max's gradient (torch splits it evenly too)."""
    build, ref, exact = LSE_CASES[case]
    a = np.zeros((4000, 3), np.float16)
    got = _run(build, a, kw)
    # (softmax: a float16 x is taken in float32 and rounded once, as torch's, so it is
    # torch's 1/4000 exactly; in float16 exp(−logsumexp) was 0.3 % off)
    if ref is not None:
        _same_half(got, ref(torch.tensor(a)).numpy())
    _same_half(got, np.full(3, exact))
