"""float16 parity with PyTorch's CPU float16 beyond plain sums (tests/test_float16_sums.py).

Where torch computes a half op in float32 and rounds once (its "opmath"), flowgrad's
float16 answer was far from torch's and from the float64 closed form rounded to float16:
a normalisation layer squared deviations past 256 in float16 (inf: every output 0),
average pooling added a window's values in float16 (inf past 65504), mse's mean divided
a float16 sum that had overflowed, and global-norm clipping squared the gradients in
float16 (300² is inf: the scale became 0 and the step vanished); Adam's and RMSProp's g²
likewise; l2's sum, the scatter-add of an embedding's gradient, softmax, prod and its
derivative, and dask's mean of a loss (its float16 count) too. Each case is checked on
the interpreter, generated code and dask, against torch's float16 result and the float64
closed form (the closed form alone where torch's half answer is itself off).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flowgrad as fg

EXECUTORS = [dict(codegen=False), {}, dict(backend="dask")]
IDS = ["interpreter", "codegen", "dask"]
ULP = 2.0 ** -10            # float16's relative spacing


def _run(build, arrays, kw, grad=True):
    """build(*placeholders)'s value (and the gradient of sum(y · cot) by each input),
    first and second call, which must agree; no warning on the way."""
    with fg.Graph():
        xs = [fg.placeholder(f"x{i}", a.shape, dtype=a.dtype) for i, a in enumerate(arrays)]
        y = build(*xs)
        outs = [y] + (list(fg.grad(fg.sum(y * fg.constant(_cot(y.shape))), xs)) if grad else [])
        prog = fg.compile(outs, **kw)
        feed = {f"x{i}": a for i, a in enumerate(arrays)}
        got = []
        for _ in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got.append([fg.to_numpy(v) for v in prog(**feed)])
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b)
    return got[0]


def _cot(shape):
    return (np.cos(np.arange(int(np.prod(shape)))) + 0.5).reshape(shape).astype(np.float16)


def _torch(fn, arrays, dtype, grad=True):
    ts = [torch.tensor(a.astype(np.float64)).to(dtype).requires_grad_(grad) for a in arrays]
    y = fn(*ts)
    outs = [y]
    if grad:
        outs += torch.autograd.grad((y * torch.tensor(_cot(tuple(y.shape))).to(dtype)).sum(), ts)
    return [o.detach().numpy() for o in outs]


def _close(got, want16, exact, ulps=4):
    """got is float16, within ``ulps`` float16 spacings of the tensor's scale of both
    torch's float16 answer and the float64 closed form."""
    assert got.dtype == np.float16, got.dtype
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(want16))
    scale = np.max(np.abs(exact))
    for want in (want16, exact):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=ulps * ULP * scale)


def _parity(build, tfn, arrays, kw, grad=True, ulps=4):
    got = _run(build, arrays, kw, grad)
    half = _torch(tfn, arrays, torch.float16, grad)
    exact = _torch(tfn, arrays, torch.float64, grad)
    for g, h, e in zip(got, half, exact):
        _close(g, h, e, ulps)


def _spread(shape, scale, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float16)


# -- normalisation layers: deviations past 256 -------------------------------------------

@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_layer_norm_of_float16_deviations_past_256(kw):
    """(x − x̄)² of a deviation past 256 is inf in float16: the variance was inf and every
    output 0 (torch: the normalised values, ±1.7 here)."""
    x = _spread((4, 64), 300.0)
    _parity(lambda v: fg.nn.LayerNorm(64)(v), lambda t: F.layer_norm(t, (64,)), [x], kw)


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_layer_norm_of_float16_values_near_1000(kw):
    """The float16 mean of values near 1000 rounds to a spacing of 0.5, a quarter of the
    unit deviation; in float32 it is exact enough (torch)."""
    x = (_spread((4, 256), 1.0) + np.float16(1000)).astype(np.float16)
    _parity(lambda v: fg.nn.LayerNorm(256)(v), lambda t: F.layer_norm(t, (256,)), [x], kw,
            grad=False)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_batch_norm_of_float16_deviations_past_256(kw, shape):
    x = _spread(shape, 300.0)
    _parity(lambda v: fg.nn.BatchNorm(3)(v),
            lambda t: F.batch_norm(t, None, None, training=True), [x], kw)


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_batch_norm_running_statistics_of_float16_deviations_past_256(kw):
    """The running variance moves toward the unbiased batch variance (~90000 · 0.1 here,
    finite in float16), not inf."""
    x = _spread((8, 3), 300.0, seed=1)
    tm, tv = torch.zeros(3, dtype=torch.float16), torch.ones(3, dtype=torch.float16)
    F.batch_norm(torch.tensor(x), tm, tv, training=True)
    with fg.Graph():
        v = fg.placeholder("x", x.shape, dtype="float16")
        bn = fg.nn.BatchNorm(3)
        prog = fg.compile(bn(v), **kw)
        prog(x=x)
        got = [fg.to_numpy(s.value) for s in bn.state]
    x64 = x.astype(np.float64)
    exact = [0.1 * x64.mean(0), 0.9 + 0.1 * x64.var(0, ddof=1)]
    for g, h, e in zip(got, [tm.numpy(), tv.numpy()], exact):
        _close(g, h, e)


# -- optimizers and clipping on float16 variables ------------------------------------------

GRAD = np.array([300.0, 1000.0, -2.0, 0.5], np.float16)   # g² of the first two: inf in float16

OPTIMIZERS = {
    # name: (flowgrad's, torch's, clip the gradients by a global norm of 1 first)
    "Adam": (lambda v: fg.optim.Adam([v], lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2),
             False),
    "AdamW": (lambda v: fg.optim.AdamW([v], lr=1e-2),
              lambda p: torch.optim.AdamW(p, lr=1e-2), False),
    "RMSProp": (lambda v: fg.optim.RMSProp([v], lr=1e-2),
                lambda p: torch.optim.RMSprop(p, lr=1e-2), False),
    "Momentum": (lambda v: fg.optim.Momentum([v], lr=1e-3),
                 lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9), False),
    "SGD, global_clipnorm": (lambda v: fg.optim.SGD([v], lr=1e-2, global_clipnorm=1.0),
                             lambda p: torch.optim.SGD(p, lr=1e-2), True),
    "SGD, clipnorm": (lambda v: fg.optim.SGD([v], lr=1e-2, clipnorm=1.0),
                      lambda p: torch.optim.SGD(p, lr=1e-2), True),
}


def _torch_steps(make, clip, dtype, steps):
    p = torch.nn.Parameter(torch.ones(len(GRAD), dtype=dtype))
    opt = make([p])
    for _ in range(steps):
        opt.zero_grad()
        (p * torch.tensor(GRAD.astype(np.float64)).to(dtype)).sum().backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p], 1.0)
        opt.step()
    return p.detach().numpy()


@pytest.mark.parametrize("backend", [None, "dask"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float16_variables_step_with_gradients_past_255(name, backend):
    """Adam's and RMSProp's s = β s + (1 − β) g² and the clipping norm √Σg² were inf in
    float16 for g = 300: the step m/√s (the clipping scale) was 0 and the variable did
    not move. Two steps land within 2 float16 spacings of torch's half optimizer (which
    computes each step in float32) and of the float64 closed form."""
    ours, theirs, clip = OPTIMIZERS[name]
    with fg.Graph():
        v = fg.variable(np.ones(len(GRAD), np.float16), name="v")
        opt = ours(v)
        prog = opt.training_program(fg.sum(v * fg.constant(GRAD)), backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(2):
                opt.step(prog)
        got = fg.to_numpy(v.value)
        assert all(a.dtype == np.float16 for s in opt.state for a in s.values())
    assert got.dtype == np.float16
    half = _torch_steps(theirs, clip, torch.float16, 2)
    exact = _torch_steps(theirs, clip, torch.float64, 2)
    assert not np.allclose(exact, 1.0, atol=4e-3)      # every case moves the variables
    for want in (half, exact):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=2 * ULP)


def test_float16_adam_leaves_a_zero_gradient_entry_where_it_is():
    """In float16 eps = 1e-8 is 0, so a zero gradient made m/(√s + eps) = 0/0 = NaN
    (torch's half Adam too); in float32 it is 0, the float64 closed form's step."""
    with fg.Graph():
        v = fg.variable(np.ones(2, np.float16), name="v")
        opt = fg.optim.Adam([v], lr=1e-2)
        prog = opt.training_program(fg.sum(v * fg.constant(np.array([0.0, 2.0], np.float16))))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt.step(prog)
        got = fg.to_numpy(v.value)
    np.testing.assert_array_equal(got, np.array([1.0, 1.0 - 1e-2], np.float16))


# -- average pooling and mse: float16 sums that overflowed ---------------------------------

@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_average_pooling_of_values_near_the_top(kw):
    """Nine values of 30000 summed to inf in float16 before the division by 9 (torch:
    30000); ordinary values are added in float32 and rounded once as well."""
    x = np.full((1, 2, 6, 6), 30000.0, np.float16)
    x[0, 1] = _spread((6, 6), 3.0, seed=2)
    _parity(lambda v: fg.avg_pool2d(v, 3), lambda t: F.avg_pool2d(t, 3), [x], kw)
    _parity(lambda v: fg.avg_pool2d(v, 3, 1), lambda t: F.avg_pool2d(t, 3, 1), [x], kw)


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_mse_mean_of_squares_past_65504(kw):
    """Three squares of 200 sum to 120000 (inf in float16), but their mean is 40000:
    numpy's vdot rounds the float16 sum before the division (torch divides in float32)."""
    y = np.array([200.0, -200.0, 200.0], np.float16)
    t = np.zeros(3, np.float16)
    _parity(lambda a, b: fg.mse(a, b), lambda a, b: F.mse_loss(a, b), [y, t], kw)
    _parity(lambda a, b: fg.mse(a, b, "sum") / 4, lambda a, b: F.mse_loss(a, b, reduction="sum") / 4,
            [y / np.float16(2), t], kw)


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_mse_batched_by_vectorize(kw):
    """fg.vectorize builds mse from its parts (the mean of d²): d² of 300 was inf in
    float16, the row's mean (300² / 3 = 30000) is not."""
    y = np.array([[300.0, 0.0, 0.0], [0.0, -300.0, 0.0]], np.float16)
    with fg.Graph():
        x = fg.placeholder("x", (2, 3), dtype="float16")
        row = fg.placeholder("row", (3,), dtype="float16")
        out = fg.vectorize(fg.mse(row, fg.constant(np.zeros(3, np.float16))), {row: x})
        prog = fg.compile(out, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = fg.to_numpy(prog(x=y))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.full(2, 30000.0, np.float16))


@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_l2_of_a_sum_of_squares_past_65504(kw):
    """½ Σ w² of 4 × 150² is 45000; vdot rounded Σ w² = 90000 to inf before halving it.
    Batched by fg.vectorize (its decomposition: w² of 300 was inf), 45000 a row too."""
    w = np.full((4,), 150.0, np.float16)
    got = _run(lambda v: fg.l2(v), [w], kw)
    np.testing.assert_array_equal(got[0], np.float16(45000))
    np.testing.assert_array_equal(got[1], w * _cot(()))       # ∂/∂w = w
    rows = np.array([[300.0, 0.0], [0.0, 300.0]], np.float16)
    with fg.Graph():
        x = fg.placeholder("x", (2, 2), dtype="float16")
        row = fg.placeholder("row", (2,), dtype="float16")
        prog = fg.compile(fg.vectorize(fg.l2(row), {row: x}), **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = fg.to_numpy(prog(x=rows))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.full(2, 45000.0, np.float16))


# -- the adjoint of a gather: a scatter-add --------------------------------------------------

@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_embedding_gradient_of_2050_lookups_of_one_row(kw):
    """The adjoint of x[i] adds Ḡ at each repeated index: in float16 (numpy's add.at)
    2050 ones stalled at 2048. Summed in float32 it is 2050, the closed form (torch's
    CPU index and embedding backward still give 2048, so the reference here is exact)."""
    idx = np.zeros(3075, np.int64)
    idx[::3] = 1                                  # 1025 lookups of row 1, 2050 of row 0
    with fg.Graph():
        i = fg.placeholder("i", idx.shape, dtype="int64")
        x = fg.placeholder("x", (4, 2), dtype="float16")
        emb = fg.nn.Embedding(4, 2, dtype="float16", seed=0)
        outs = [fg.grad(fg.sum(fg.take(x, i)), x), fg.grad(fg.sum(x[i] * 3), x),
                fg.grad(fg.sum(emb(i)), emb.variables[0])]
        prog = fg.compile(outs, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = [fg.to_numpy(v) for v in prog(i=idx, x=np.ones((4, 2), np.float16))]
    counts = np.array([2050.0, 1025.0, 0.0, 0.0])[:, None] * np.ones(2)
    for g, scale in zip(got, [1, 3, 1]):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g, (scale * counts).astype(np.float16))


# -- softmax: in float32, rounded once ----------------------------------------------------

@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_softmax_rounds_once(kw):
    """In float16 exp(x − logsumexp x) rounded logsumexp first (spacing 2⁻⁷ near 8),
    which exp turned into up to 0.4 % (8 ulps) of error; torch's half softmax computes in
    float32: every entry is torch's, and the float64 closed form's rounded (½ ulp)."""
    x = _spread((3, 50), 3.0, seed=4)
    _parity(lambda v: fg.softmax(v, axis=1), lambda t: torch.softmax(t, 1), [x], kw, ulps=1)
    got = _run(lambda v: fg.softmax(v, axis=1), [x], kw, grad=False)[0]
    np.testing.assert_array_equal(got, torch.softmax(torch.tensor(x), 1).numpy())


# -- a mean of more than 65504 float16 losses ------------------------------------------------

@pytest.mark.parametrize("n", [65519, 65520])
@pytest.mark.parametrize("loss", ["bce_with_logits", "softmax_cross_entropy"])
@pytest.mark.parametrize("kw", EXECUTORS, ids=IDS)
def test_float16_loss_mean_over_more_than_65504_entries(kw, loss, n):
    """The mean of n float16 losses on dask counted them in float16: 65519 rounds to
    65504, 65520 is the first count that is inf, and the mean was 0. Averaged in float32
    and rounded once, as torch's."""
    rng = np.random.default_rng(5)
    if loss == "bce_with_logits":
        z = rng.standard_normal(n).astype(np.float16)
        p = rng.uniform(size=n).astype(np.float16)
        fg_loss, torch_loss = fg.bce_with_logits, F.binary_cross_entropy_with_logits
    else:
        z = rng.standard_normal((n, 2)).astype(np.float16)
        p = np.tile(np.array([[0.25, 0.75]], np.float16), (n, 1))
        fg_loss, torch_loss = fg.softmax_cross_entropy, F.cross_entropy
    got = _run(lambda a, b: fg_loss(a, b), [z, p], kw, grad=False)[0]
    half = torch_loss(torch.tensor(z), torch.tensor(p)).numpy()
    exact = torch_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(p, dtype=torch.float64))
    _close(got, half, exact.numpy(), ulps=2)


# -- prod: n − 1 roundings ------------------------------------------------------------------

def _chunked_dask():
    from flowgrad.backends.dask_backend import DaskBackend
    return dict(backend=DaskBackend(chunks=100))


@pytest.mark.parametrize("kw", EXECUTORS + ["chunked"], ids=IDS + ["dask, chunks of 100"])
def test_float16_prod_of_800_entries_near_1(kw):
    """numpy rounds each of a float16 product's 799 steps (1.8 % off here, as torch's
    half prod), dask's chunks 2.1 %, and the derivative's product tree (log₂ 800 levels
    in float16) 3.5 %. In float32, rounded once: the float64 closed form's float16,
    value and gradient, within an ulp."""
    kw = _chunked_dask() if kw == "chunked" else kw
    x = (1 + np.random.default_rng(1).standard_normal((800, 2)) * 0.02).astype(np.float16)
    got = _run(lambda v: fg.prod(v, axis=0), [x], kw)
    exact = _torch(lambda t: t.prod(0), [x], torch.float64)
    for g, e in zip(got, exact):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float64), e, rtol=ULP, atol=0)


@pytest.mark.parametrize("backend, options", [(None, {}), ("dask", {}), (None, dict(clipvalue=1e4))],
                         ids=["numpy", "dask", "numpy, clipvalue"])
def test_float16_sgd_rounds_its_step_once_on_every_path(backend, options):
    """w − lr·g of float16 w and g is the float64 closed form rounded once on every path:
    numpy's written-out SGD step (float16 arithmetic, lr·g rounded first) must not part
    from the general path (float32, as every built-in update of a float16 variable)."""
    rng = np.random.default_rng(0)
    g0 = (rng.standard_normal(1000) * 3).astype(np.float16)
    w0 = rng.standard_normal(1000).astype(np.float16)
    with fg.Graph():
        v = fg.variable(w0.copy(), name="v")
        opt = fg.optim.SGD([v], lr=0.0123, **options)
        opt.step(opt.training_program(fg.sum(v * fg.constant(g0)), backend=backend))
        got = fg.to_numpy(v.value)
    want = (w0.astype(np.float64) - 0.0123 * g0.astype(np.float64)).astype(np.float16)
    np.testing.assert_array_equal(got, want)
