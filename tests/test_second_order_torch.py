"""Second derivatives of the wave-3 vocabulary against PyTorch's autograd in float64.

Every case is a scalar function of a few inputs (placeholders, and a layer's variables),
built once in flowgrad and once in torch. From the flowgrad graph it takes, for random
directions v, every way flowgrad offers to a second derivative:

* ``fwd_rev``: ``fg.hvp`` (a jvp of the gradient, forward over reverse);
* ``rev_rev``: ``fg.hvp(..., mode="rev-rev")`` and a hand-nested ``fg.grad`` of ⟨∇f, v⟩;
* ``rev_fwd``: ``fg.grad`` of ``fg.jvp(f, x, v)`` (reverse over forward);
* ``hessian``: ``fg.hessian`` with respect to the first input (batched, and by map);

and compares each with torch's double backward (``torch.autograd.grad`` with
``create_graph=True``) and ``torch.autograd.functional.hessian`` — never flowgrad with
itself. Each program runs on generated code and on the reference interpreter
(``codegen=False``); a secondary check compares H v with central differences of
flowgrad's own gradient. Points are away from kinks (ReLU at 0, max pooling's ties) except
where a test pins the convention at one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import flowgrad as fg

EXECUTORS = [True, False]          # codegen: generated code, or the reference interpreter
RTOL, ATOL = 1e-9, 1e-11


# -- the harness -----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _torch_in_float64():
    """torch's default dtype float64 while a test here runs (torch.zeros, modules), put
    back after it: set at import, it leaked into every later test module."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _directions(values, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(np.shape(v)) for v in values]


def _flowgrad_nodes(f, wrt, vs, hessian=True):
    """Every second-derivative form of f at the inputs ``wrt`` along ``vs``, as named
    lists of nodes."""
    gs = fg.grad(f, wrt)
    dot = fg.sum(gs[0] * vs[0])
    for g, v in zip(gs[1:], vs[1:]):
        dot = dot + fg.sum(g * v)
    outs = {"grad": gs,
            "fwd_rev": fg.hvp(f, wrt, vs),
            "rev_rev": fg.hvp(f, wrt, vs, mode="rev-rev"),
            "nested": fg.grad(dot, wrt),
            "rev_fwd": fg.grad(fg.jvp(f, wrt, vs), wrt)}
    if hessian:
        outs["hessian"] = [fg.hessian(f, wrt[0])]
        outs["hessian_rev"] = [fg.hessian(f, wrt[0], mode="rev")]
        if _size(wrt[0]) <= MAP_SIZE:      # one program run per basis vector: small only
            outs["hessian_map"] = [fg.hessian(f, wrt[0], method="map")]
    return outs


MAP_SIZE = 24


def _size(node):
    return int(np.prod(node.shape))


def _torch_reference(torch_fn, values, vs, hessian=True):
    ts = [torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for v in values]
    out = torch_fn(*ts)
    gs = torch.autograd.grad(out, ts, create_graph=True, allow_unused=True)
    gs = [torch.zeros_like(t) if g is None else g for t, g in zip(ts, gs)]
    dot = sum((g * torch.tensor(v)).sum() for g, v in zip(gs, vs))
    hv = torch.autograd.grad(dot, ts, allow_unused=True) if dot.requires_grad else [None] * len(ts)
    hv = [np.zeros(np.shape(v)) if h is None else h.detach().numpy() for v, h in zip(values, hv)]
    ref = {"value": out.detach().numpy(), "grad": [g.detach().numpy() for g in gs], "hv": hv}
    if hessian:
        rest = [torch.tensor(np.asarray(v, dtype=np.float64)) for v in values[1:]]
        H = torch.autograd.functional.hessian(lambda a: torch_fn(a, *rest),
                                              torch.tensor(np.asarray(values[0], np.float64)))
        ref["hessian"] = H.numpy()
    return ref


def _close(got, want, what, rtol=RTOL, atol=ATOL):
    got = fg.to_numpy(got)
    assert got.dtype == np.float64, f"{what}: dtype {got.dtype}"
    assert got.shape == np.shape(want), f"{what}: shape {got.shape} != {np.shape(want)}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def check_second_order(build, torch_fn, values, codegen, feed=None, hessian=True, fd=True,
                       rtol=RTOL, atol=ATOL, torch_fn_of_run=None, backend=None):
    """Build ``f = build(*placeholders)`` (it may return ``(f, [(variable, value), …])``
    to differentiate a layer's variables too), take every second-derivative form and
    compare with torch on ``codegen``'s executor.

    ``torch_fn_of_run(run_values)`` makes the torch function from the values of the
    extra outputs ``build`` returned (a dropout mask drawn in that very run)."""
    values = list(values)
    feed = dict(feed or {})
    with fg.Graph():
        phs = [fg.placeholder(f"p{k}", np.shape(v)) for k, v in enumerate(values)]
        built = build(*phs)
        extra, seen = [], []
        if isinstance(built, tuple):
            f, extra = built[0], list(built[1])
            seen = list(built[2]) if len(built) > 2 else []
        else:
            f = built
        for var, val in extra:
            var.value = np.asarray(val, dtype=np.float64)
        wrt = phs + [var for var, _ in extra]
        all_values = values + [np.asarray(val, np.float64) for _, val in extra]
        vs = _directions(all_values)
        nodes = _flowgrad_nodes(f, wrt, vs, hessian=hessian)
        flat = [f] + seen + [n for group in nodes.values() for n in group]
        prog = fg.compile(flat, codegen=codegen, backend=backend)
        run_feed = {**{p: v for p, v in zip(phs, values)}, **feed}
        res = prog(run_feed)
        if not seen:   # later calls (compiled loops, scalar source) give the same numbers
            for _ in range(2):
                again = prog(run_feed)
                for a, b in zip(res, again):
                    np.testing.assert_array_equal(a, b)
        fn = torch_fn if torch_fn_of_run is None else torch_fn_of_run(res[1:1 + len(seen)])
        ref = _torch_reference(fn, all_values, vs, hessian=hessian)
        _compare(res[0], res[1 + len(seen):], nodes, ref, f"codegen={codegen}", rtol, atol)
        if fd and not seen:
            grads = fg.compile(nodes["grad"], codegen=codegen)
            _finite_differences(grads, phs, values, extra, vs, run_feed, ref["hv"])


def _compare(value, results, nodes, ref, where, rtol, atol):
    """Each second-derivative form's results (in ``nodes``' order) against torch's."""
    _close(value, ref["value"], "value", rtol, atol)
    at = 0
    for k, group in nodes.items():
        got = results[at:at + len(group)]
        at += len(group)
        want = ref["grad"] if k == "grad" else [ref["hessian"]] if k.startswith("hessian") \
            else ref["hv"]
        for j, (a, b) in enumerate(zip(got, want)):
            _close(a, b, f"{k}[{j}] ({where})", rtol, atol)


def _finite_differences(prog, phs, values, extra, vs, run_feed, hv):
    """H v ≈ (∇f(x + h v) − ∇f(x − h v)) / 2h, from flowgrad's own first derivative: a
    secondary check, loose (O(h²) and cancellation)."""
    h = 1e-5
    grads = []
    for sign in (1.0, -1.0):
        feed = dict(run_feed)
        for p, v, d in zip(phs, values, vs):
            feed[p] = np.asarray(v, np.float64) + sign * h * d
        for (var, val), d in zip(extra, vs[len(phs):]):
            var.value = np.asarray(val, np.float64) + sign * h * d
        grads.append(prog(feed))
    for (var, val) in extra:
        var.value = np.asarray(val, np.float64)
    for j, (gp, gm) in enumerate(zip(*grads)):
        fd = (np.asarray(gp) - np.asarray(gm)) / (2 * h)
        scale = max(1.0, float(np.max(np.abs(hv[j]), initial=0.0)))
        np.testing.assert_allclose(fd, hv[j], rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f"finite differences of the gradient [{j}]")


def _rand(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# -- elementwise: broadcasting, 0-d inputs, kinks away from the kink ------------------------

ELEMENTWISE = {
    # name: (values, fg function, torch function)
    "broadcast_0d_times_matrix": (
        [np.array(0.7), _rand(3, 4, seed=1), _rand(4, seed=2)],
        lambda a, x, b: fg.sum(fg.tanh(a * x + b) ** 2) * a,
        lambda a, x, b: (torch.tanh(a * x + b) ** 2).sum() * a),
    "relu_leaky_abs_off_the_kink": (
        [np.array([[-1.3, 0.4, 2.0], [0.7, -0.2, -2.5]]), _rand(3, seed=3)],
        lambda x, w: fg.sum(fg.relu(x * w) ** 3 + fg.leaky_relu(x, 0.1) * fg.abs(x * w)
                            + fg.elu(x * w) ** 2),
        lambda x, w: (F.relu(x * w) ** 3 + F.leaky_relu(x, 0.1) * (x * w).abs()
                      + F.elu(x * w) ** 2).sum()),
    "maximum_minimum_where_clip": (
        [_rand(2, 3, seed=4), _rand(3, seed=5)],
        lambda x, y: fg.sum(fg.maximum(x, y) ** 2 * fg.minimum(x, y)
                            + fg.where(x > 0.0, fg.exp(x), fg.sin(y)) * y
                            + fg.clip(x * y, -0.3, 0.3) * x),
        lambda x, y: (torch.maximum(x, y) ** 2 * torch.minimum(x, y)
                      + torch.where(x > 0, torch.exp(x), torch.sin(y)) * y
                      + torch.clamp(x * y, -0.3, 0.3) * x).sum()),
    "softplus_sigmoid_gelu_erf": (
        [_rand(5, seed=6)],
        lambda x: fg.sum(fg.softplus(x) * fg.sigmoid(x) + fg.gelu(x) ** 2 + fg.erf(x) * x),
        lambda x: (F.softplus(x) * torch.sigmoid(x) + F.gelu(x) ** 2
                   + torch.erf(x) * x).sum()),
    "reductions_softmax_logsumexp": (
        [_rand(3, 4, seed=8)],
        lambda x: fg.sum(fg.softmax(x) * x) + fg.sum(fg.logsumexp(x, axis=0) ** 2)
        + fg.sum(fg.max(x, axis=1) ** 2) + fg.sum(fg.var(x, axis=1) * fg.mean(x, axis=1)),
        lambda x: (torch.softmax(x, -1) * x).sum() + (torch.logsumexp(x, 0) ** 2).sum()
        + (x.max(1).values ** 2).sum() + (x.var(1, unbiased=False) * x.mean(1)).sum()),
    "zero_d_only": (
        [np.array(0.3), np.array(-1.2)],
        lambda a, b: fg.exp(a * b) * fg.sin(a) + b ** 3 / (1.0 + a * a),
        lambda a, b: torch.exp(a * b) * torch.sin(a) + b ** 3 / (1.0 + a * a)),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_second_order(name, codegen):
    values, fgf, tf = ELEMENTWISE[name]
    check_second_order(fgf, tf, values, codegen)


# -- convolution and pooling --------------------------------------------------------------

def _conv_case(stride, padding, torch_padding):
    x, w, b = _rand(2, 2, 5, 4, seed=10), _rand(3, 2, 3, 2, seed=11, scale=0.3), _rand(3, seed=12)

    def fgf(x, w, b):
        return fg.sum(fg.tanh(fg.conv2d(x, w, b, stride=stride, padding=padding)) ** 2)

    def tf(x, w, b):
        xp = F.pad(x, torch_padding) if torch_padding else x
        return (torch.tanh(F.conv2d(xp, w, b, stride=stride)) ** 2).sum()
    return [x, w, b], fgf, tf


CONV = {
    "valid_stride1": _conv_case(1, "valid", None),
    "stride_2x1_pad_1": _conv_case((2, 1), 1, (1, 1, 1, 1)),
    "stride_2_pad_pair": _conv_case(2, (2, 1), (1, 1, 2, 2)),
    "same_stride1": _conv_case(1, "same", (0, 1, 1, 1)),     # odd zero at the bottom/right
    "same_stride2": _conv_case(2, "same", (0, 0, 1, 1)),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(CONV))
def test_conv2d_second_order(name, codegen):
    values, fgf, tf = CONV[name]
    check_second_order(fgf, tf, values, codegen)


POOL = {
    "max_2x2": (lambda x: fg.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2)),
    "max_3x3_stride_2_overlapping": (lambda x: fg.max_pool2d(x, 3, 2),
                                     lambda x: F.max_pool2d(x, 3, 2)),
    "max_2x3_stride_1x2": (lambda x: fg.max_pool2d(x, (2, 3), (1, 2)),
                           lambda x: F.max_pool2d(x, (2, 3), (1, 2))),
    "avg_2x2": (lambda x: fg.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2)),
    "avg_3x2_stride_2x1": (lambda x: fg.avg_pool2d(x, (3, 2), (2, 1)),
                           lambda x: F.avg_pool2d(x, (3, 2), (2, 1))),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(POOL))
def test_pooling_second_order(name, codegen):
    pool, tpool = POOL[name]
    x, w = _rand(1, 2, 7, 6, seed=20), _rand(6, seed=21)      # distinct values: no ties
    check_second_order(lambda x, w: fg.sum(pool(fg.tanh(x * w)) ** 3),
                       lambda x, w: (tpool(torch.tanh(x * w)) ** 3).sum(), [x, w], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_conv_layer_then_pool_second_order(codegen):
    # fg.nn.Conv2D (its W and b differentiated too) feeding a max pool
    x = _rand(2, 2, 6, 6, seed=22)
    W, b = _rand(3, 2, 3, 3, seed=23, scale=0.4), _rand(3, seed=24)

    def build(x):
        layer = fg.nn.Conv2D(3, 3, stride=1, padding="same", activation=fg.tanh)
        y = fg.max_pool2d(layer(x), 2)
        return fg.sum(y ** 2 * fg.sigmoid(y)), [(layer.W, W), (layer.b, b)]

    def tf(x, W, b):
        y = F.max_pool2d(torch.tanh(F.conv2d(x, W, b, padding="same")), 2)
        return (y ** 2 * torch.sigmoid(y)).sum()
    check_second_order(build, tf, [x], codegen)


# -- normalisation, embedding, dropout ---------------------------------------------------------

def _bn_case(shape, training, seed):
    x = _rand(*shape, seed=seed)
    C = shape[1]
    gamma, beta = 1 + 0.3 * _rand(C, seed=seed + 1), _rand(C, seed=seed + 2)
    rm, rv = 0.2 * _rand(C, seed=seed + 3), 0.5 + np.abs(_rand(C, seed=seed + 4))
    weights = _rand(*shape[1:], seed=seed + 5)
    per = (1, C) + (1,) * (len(shape) - 2)

    def build(x):
        layer = fg.nn.BatchNorm(C, training=training)
        y = layer(x)           # builds gamma, beta and the running statistics
        layer.running_mean.value, layer.running_var.value = rm.copy(), rv.copy()
        return fg.sum(fg.tanh(y) * weights + y * y * y), [(layer.gamma, gamma),
                                                          (layer.beta, beta)]

    def tf(x, g, b):
        y = F.batch_norm(x, torch.tensor(rm), torch.tensor(rv), g, b,
                         training=training, eps=1e-5)
        return (torch.tanh(y) * torch.tensor(weights) + y ** 3).sum()
    return [x], build, tf


NORM = {
    "batch_norm_train_2d": _bn_case((5, 3), True, 30),
    "batch_norm_train_4d": _bn_case((3, 2, 3, 2), True, 31),
    "batch_norm_eval_2d": _bn_case((4, 3), False, 32),
    "batch_norm_eval_4d": _bn_case((2, 2, 3, 3), False, 33),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(NORM))
def test_batch_norm_second_order(name, codegen):
    values, build, tf = NORM[name]
    check_second_order(build, tf, values, codegen)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("codegen", EXECUTORS)
def test_batch_norm_with_a_training_placeholder_second_order(training, codegen):
    x = _rand(4, 3, seed=34)
    gamma, beta = 1 + 0.3 * _rand(3, seed=35), _rand(3, seed=36)
    weights = _rand(3, seed=37)

    def build(x):
        layer = fg.nn.BatchNorm(3, training=fg.placeholder("training", (), dtype="bool"))
        y = layer(x)
        return fg.sum(fg.tanh(y) * weights + y ** 3), [(layer.gamma, gamma), (layer.beta, beta)]

    def tf(x, g, b):   # running statistics start at 0 and 1; training runs move them,
        # evaluating runs read them: only these evaluate
        y = F.batch_norm(x, torch.zeros(3), torch.ones(3), g, b, training=training, eps=1e-5)
        return (torch.tanh(y) * torch.tensor(weights) + y ** 3).sum()
    check_second_order(build, tf, [x], codegen, feed={"training": training})


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("features", [4, (3, 4)])
def test_layer_norm_second_order(features, codegen):
    x = _rand(2, 3, 4, seed=40)
    shape = (features,) if isinstance(features, int) else features
    gamma, beta = 1 + 0.3 * _rand(*shape, seed=41), _rand(*shape, seed=42)
    weights = _rand(*shape, seed=43)

    def build(x):
        layer = fg.nn.LayerNorm(features)
        y = layer(x)
        return fg.sum(fg.tanh(y) * weights + y ** 3), [(layer.gamma, gamma), (layer.beta, beta)]

    def tf(x, g, b):
        y = F.layer_norm(x, shape, g, b, eps=1e-5)
        return (torch.tanh(y) * torch.tensor(weights) + y ** 3).sum()
    check_second_order(build, tf, [x], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_embedding_second_order(codegen):
    idx = np.array([[0, 3, 3], [4, 0, 1]])      # repeated indices add their adjoints
    table = _rand(5, 2, seed=44)
    scale = _rand(2, seed=45)

    def build(s):
        layer = fg.nn.Embedding(5, 2)
        e = layer(fg.constant(idx))
        return fg.sum(fg.tanh(e * s) ** 2 * e), [(layer.table, table)]

    def tf(s, t):
        e = F.embedding(torch.tensor(idx), t)
        return (torch.tanh(e * s) ** 2 * e).sum()
    check_second_order(build, tf, [scale], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_dropout_second_order_with_the_runs_mask(codegen):
    # the mask is drawn fresh every run: read it from the same run (y / h, h ≠ 0)
    x, w = _rand(4, 5, seed=46), _rand(5, seed=47)
    seen = {}

    def build(x, w):
        h = fg.tanh(x * w)
        y = fg.nn.dropout(h, 0.4, training=True, seed=5)
        return fg.sum(fg.sin(y) * y), [], [y, h]

    def tf_of_run(run):
        y, h = run
        mask = torch.tensor(np.asarray(y) / np.asarray(h))   # 0 or 1/0.6
        assert set(np.round(mask.numpy(), 12).ravel()) <= {0.0, round(1 / 0.6, 12)}
        seen["mask"] = mask
        return lambda x, w: (torch.sin(torch.tanh(x * w) * mask)
                             * torch.tanh(x * w) * mask).sum()
    check_second_order(build, None, [x, w], codegen, torch_fn_of_run=tf_of_run)
    assert 0 < float((seen["mask"] == 0).sum()) < 20       # the mask dropped something


# -- losses ----------------------------------------------------------------------------------

LABELS = np.array([2, 0, 1, 2])
LOSSES = {
    "sce_int_labels_mean": (
        [_rand(4, 3, seed=50)],
        lambda z: fg.softmax_cross_entropy(z * z, LABELS),
        lambda z: F.cross_entropy(z * z, torch.tensor(LABELS))),
    "sce_int_labels_sum_axis1": (
        [_rand(2, 3, 4, seed=51)],
        lambda z: fg.softmax_cross_entropy(fg.tanh(z), np.array([[0, 2, 1, 1], [2, 2, 0, 1]]),
                                           reduction="sum", axis=1),
        lambda z: F.cross_entropy(torch.tanh(z), torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]]),
                                  reduction="sum")),
    "sce_probabilities_wrt_both": (
        [_rand(4, 3, seed=52), np.abs(_rand(4, 3, seed=53))],
        lambda z, t: fg.softmax_cross_entropy(z, t / fg.sum(t, axis=-1, keepdims=True)),
        lambda z, t: F.cross_entropy(z, t / t.sum(-1, keepdim=True))),
    "sce_none_weighted": (
        [_rand(4, 3, seed=54), _rand(4, seed=55)],
        lambda z, w: fg.sum(fg.softmax_cross_entropy(z, LABELS, reduction="none") * w ** 2),
        lambda z, w: (F.cross_entropy(z, torch.tensor(LABELS), reduction="none") * w ** 2).sum()),
    "bce_mean_wrt_both": (
        [_rand(3, 4, seed=56), _rand(3, 4, seed=57)],
        lambda z, t: fg.bce_with_logits(z * fg.abs(z), fg.sigmoid(t)),
        lambda z, t: F.binary_cross_entropy_with_logits(z * z.abs(), torch.sigmoid(t))),
    "bce_sum_large_logits": (
        [np.array([-30.0, -2.0, 0.5, 25.0]), np.array([0.0, 1.0, 0.3, 1.0])],
        lambda z, t: fg.bce_with_logits(z, t, reduction="sum") * fg.sum(z * t),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="sum") * (z * t).sum()),
    "bce_scalar_target": (
        [_rand(5, seed=58)],
        lambda z: fg.bce_with_logits(z * z, 1.0),
        lambda z: F.binary_cross_entropy_with_logits(z * z, torch.ones(5))),
    "mse_mean_wrt_both": (
        [_rand(3, 2, seed=59), _rand(3, 2, seed=60)],
        lambda y, t: fg.mse(fg.tanh(y), t * y),
        lambda y, t: F.mse_loss(torch.tanh(y), t * y)),
    "mse_sum_scalar_target": (
        [_rand(6, seed=61)],
        lambda y: fg.mse(fg.sin(y), 0.5, reduction="sum"),
        lambda y: F.mse_loss(torch.sin(y), torch.full((6,), 0.5), reduction="sum")),
    "mse_none_0d": (
        [np.array(0.8), np.array(-0.3)],
        lambda y, t: fg.mse(fg.exp(y), t, reduction="none") * y,
        lambda y, t: F.mse_loss(torch.exp(y), t, reduction="none") * y),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_second_order(name, codegen):
    values, fgf, tf = LOSSES[name]
    check_second_order(fgf, tf, values, codegen)


# -- recurrent layers (each one fg.scan) -------------------------------------------------------

def _torch_recurrent(kind, D, H):
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        D, H, batch_first=True)

    def run(x, W, U, b, state=None):
        if kind == "gru":
            bih, bhh = b[0], b[1]
        else:
            bih, bhh = b, torch.zeros_like(b)
        params = {"weight_ih_l0": W.T, "weight_hh_l0": U.T, "bias_ih_l0": bih,
                  "bias_hh_l0": bhh}
        out, _ = torch.func.functional_call(module, params, (x, state) if state else (x,))
        return out
    return run


RECURRENT = {
    "rnn_last": ("rnn", fg.nn.RNN, False),
    "rnn_sequences": ("rnn", fg.nn.RNN, True),
    "lstm_last": ("lstm", fg.nn.LSTM, False),
    "lstm_sequences": ("lstm", fg.nn.LSTM, True),
    "gru_last": ("gru", fg.nn.GRU, False),
    "gru_sequences": ("gru", fg.nn.GRU, True),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_layer_second_order(name, codegen):
    kind, Layer, seqs = RECURRENT[name]
    N, T, D, H = 2, 3, 2, 3
    k = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    x = _rand(N, T, D, seed=70)
    W, U = _rand(D, k * H, seed=71, scale=0.5), _rand(H, k * H, seed=72, scale=0.5)
    b = _rand(*((2, k * H) if kind == "gru" else (k * H,)), seed=73, scale=0.3)
    weights = _rand(*((N, T, H) if seqs else (N, H)), seed=74)
    torch_layer = _torch_recurrent(kind, D, H)

    def build(x):
        layer = Layer(H, return_sequences=seqs)
        h = layer(x)
        return fg.sum(h * weights) + fg.sum(h * h), [(layer.W, W), (layer.U, U), (layer.b, b)]

    def tf(x, W, U, b):
        out = torch_layer(x, W, U, b)
        h = out if seqs else out[:, -1]
        return (h * torch.tensor(weights)).sum() + (h * h).sum()
    check_second_order(build, tf, [x], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_lstm_initial_state_second_order(codegen):
    # the initial (h0, c0) differentiated too: the scan's carries at second order
    N, T, D, H = 2, 2, 2, 2
    x, h0, c0 = _rand(N, T, D, seed=75), _rand(N, H, seed=76), _rand(N, H, seed=77)
    W, U, b = (_rand(D, 4 * H, seed=78, scale=0.5), _rand(H, 4 * H, seed=79, scale=0.5),
               _rand(4 * H, seed=80, scale=0.3))
    torch_layer = _torch_recurrent("lstm", D, H)

    def build(h0, c0, x):
        layer = fg.nn.LSTM(H)
        h = layer(x, (h0, c0))
        return fg.sum(fg.sin(h)), [(layer.W, W), (layer.U, U), (layer.b, b)]

    def tf(h0, c0, x, W, U, b):
        out = torch_layer(x, W, U, b, (h0[None], c0[None]))
        return torch.sin(out[:, -1]).sum()
    check_second_order(build, tf, [h0, c0, x], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_lstm_cell_by_hand_over_scan_second_order(codegen):
    # an LSTM cell written with fg ops in an fg.scan body, against torch.nn.LSTMCell
    T, N, D, H = 3, 2, 2, 2
    xs = _rand(T, N, D, seed=81)
    Wih, Whh, bih = (_rand(4 * H, D, seed=82, scale=0.5), _rand(4 * H, H, seed=83, scale=0.5),
                     _rand(4 * H, seed=84, scale=0.3))

    def build(xs, Wih, Whh, bih):
        def step(carry, x):
            h, c = carry
            z = x @ fg.transpose(Wih) + h @ fg.transpose(Whh) + bih
            i, f, g, o = (z[:, j * H:(j + 1) * H] for j in range(4))
            c = fg.sigmoid(f) * c + fg.sigmoid(i) * fg.tanh(g)
            h = fg.sigmoid(o) * fg.tanh(c)
            return (h, c), fg.sum(h * h)
        zero = fg.constant(np.zeros((N, H)))
        (hT, cT), ys = fg.scan(step, (zero, zero), xs)
        return fg.sum(ys) + fg.sum(hT * cT)

    cell = torch.nn.LSTMCell(D, H)

    def tf(xs, Wih, Whh, bih):
        params = {"weight_ih": Wih, "weight_hh": Whh, "bias_ih": bih,
                  "bias_hh": torch.zeros(4 * H)}
        h = c = torch.zeros(N, H)
        total = 0
        for t in range(T):
            h, c = torch.func.functional_call(cell, params, (xs[t], (h, c)))
            total = total + (h * h).sum()
        return total + (h * c).sum()
    check_second_order(build, tf, [xs, Wih, Whh, bih], codegen)


# -- loops -----------------------------------------------------------------------------------

def _t_scan(step, carry, xs, reverse=False):
    ys = []
    order = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in order:
        carry, y = step(carry, xs[t])
        ys.append(y)
    if reverse:
        ys = ys[::-1]
    return carry, torch.stack(ys)


def _fg_rnn(a, W, xs, reverse=False):
    return fg.scan(lambda h, x: (fg.tanh(h @ W + x * a), fg.sum(h * h) * a), _h0(W), xs,
                   reverse=reverse)


def _h0(W):
    return fg.constant(np.full(W.shape[0], 0.1))


def _t_rnn(a, W, xs, reverse=False):
    return _t_scan(lambda h, x: (torch.tanh(h @ W + x * a), (h * h).sum() * a),
                   torch.full((W.shape[0],), 0.1), xs, reverse)


def _fg_nested(a, W, xs):
    def outer(h, row):                         # row (3, 2): an inner scan over its entries
        inner, _ = fg.scan(lambda c, x: (fg.sin(c * a + x) + c @ W, None), h, row)
        return fg.tanh(inner), fg.sum(inner)
    return fg.scan(outer, _h0(W), xs)


def _t_nested(a, W, xs):
    def outer(h, row):
        c = h
        for x in row:
            c = torch.sin(c * a + x) + c @ W
        return torch.tanh(c), c.sum()
    return _t_scan(outer, torch.full((W.shape[0],), 0.1), xs)


LOOP_VALUES = [np.array(0.7), _rand(2, 2, seed=90, scale=0.5), _rand(4, 2, seed=91)]
NESTED_VALUES = [np.array(0.7), _rand(2, 2, seed=92, scale=0.3), _rand(3, 4, 2, seed=93)]

LOOPS = {
    "scan": (LOOP_VALUES,
             lambda a, W, xs: (lambda r: fg.sum(r[0] ** 2) + fg.sum(fg.sin(r[1])))(
                 _fg_rnn(a, W, xs)),
             lambda a, W, xs: (lambda r: (r[0] ** 2).sum() + torch.sin(r[1]).sum())(
                 _t_rnn(a, W, xs))),
    "scan_reverse": (LOOP_VALUES,
                     lambda a, W, xs: (lambda r: fg.sum(r[0] ** 3) + fg.sum(r[1] * r[1]))(
                         _fg_rnn(a, W, xs, reverse=True)),
                     lambda a, W, xs: (lambda r: (r[0] ** 3).sum() + (r[1] * r[1]).sum())(
                         _t_rnn(a, W, xs, reverse=True))),
    "scan_in_scan": (NESTED_VALUES,
                     lambda a, W, xs: (lambda r: fg.sum(r[0] ** 2) + fg.sum(r[1] ** 2))(
                         _fg_nested(a, W, xs)),
                     lambda a, W, xs: (lambda r: (r[0] ** 2).sum() + (r[1] ** 2).sum())(
                         _t_nested(a, W, xs))),
    "fori_loop_int_bounds": (
        [np.array(0.6), _rand(3, seed=94)],
        lambda a, x: fg.sum(fg.fori_loop(1, 4, lambda i, c: fg.sin(c * a) + c * fg.astype(
            i, "float64"), x) ** 2),
        lambda a, x: (lambda c: (c ** 2).sum())(
            _t_fori(1, 4, lambda i, c: torch.sin(c * a) + c * i, x))),
    "while_loop_fixed_trips": (
        [np.array(0.6), _rand(3, seed=95)],
        lambda a, x: fg.sum(fg.while_loop(
            lambda s: s[0] < 3, lambda s: (s[0] + 1, fg.tanh(s[1] * a + 0.5) * s[1]),
            (fg.constant(np.int64(0)), x))[1]),
        lambda a, x: _t_fori(0, 3, lambda i, c: torch.tanh(c * a + 0.5) * c, x).sum()),
}


def _t_fori(lo, hi, body, c):
    for i in range(lo, hi):
        c = body(i, c)
    return c


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_second_order(name, codegen):
    values, fgf, tf = LOOPS[name]
    check_second_order(fgf, tf, values, codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_fori_loop_with_node_bounds_second_order(codegen):
    # node bounds make a while loop: the trip count is read at run time
    box = {}

    def build(a, x):
        box["n"] = fg.placeholder("n", (), dtype="int64")
        out = fg.fori_loop(fg.constant(np.int64(0)), box["n"],
                           lambda i, c: c * fg.cos(c * a) + a, x)
        return fg.sum(out ** 2)

    def tf(a, x):
        return (_t_fori(0, 3, lambda i, c: c * torch.cos(c * a) + a, x) ** 2).sum()
    check_second_order(build, tf, [np.array(0.4), _rand(3, seed=96)], codegen,
                       feed={"n": 3})


@pytest.mark.parametrize("taken", [True, False])
@pytest.mark.parametrize("codegen", EXECUTORS)
def test_cond_second_order_both_branches(taken, codegen):
    def build(a, x):
        p = fg.placeholder("pred", (), dtype="bool")
        y = fg.cond(p, lambda a, x: fg.sin(x * a) * x, lambda a, x: fg.exp(a) * x ** 3, a, x)
        return fg.sum(y * y)

    def tf(a, x):
        y = torch.sin(x * a) * x if taken else torch.exp(a) * x ** 3
        return (y * y).sum()
    check_second_order(build, tf, [np.array(0.3), _rand(2, 3, seed=97)], codegen,
                       feed={"pred": taken})


# -- custom rules, stop_gradient, remat, vectorize ----------------------------------------

@fg.custom_vjp(name="tests.second_order.sin_vjp")
def sin_vjp(x):
    return fg.sin(x)


@sin_vjp.defvjp
def _sin_vjp_rule(g, ans, x):
    """x̄ = v̄ cos x, in fg ops: differentiable again"""
    return (g * fg.cos(x),)


@fg.custom_vjp(name="tests.second_order.mul_vjp")
def mul_vjp(x, y):
    return x * y


@mul_vjp.defvjp
def _mul_vjp_rule(g, ans, x, y):
    return (g * y, fg.sum(g * x, axis=0))       # y broadcast along axis 0


@fg.custom_jvp(name="tests.second_order.log1pexp")
def log1pexp(x):
    return fg.maximum(x, 0.0) + fg.log1p(fg.exp(-fg.abs(x)))


@log1pexp.defjvp
def _log1pexp_jvp(tangents, ans, x):
    return tangents[0] * fg.sigmoid(x)


@fg.custom_jvp(name="tests.second_order.xy_jvp")
def xy_jvp(x, y):
    return fg.tanh(x) * y


@xy_jvp.defjvp
def _xy_jvp_rule(tangents, ans, x, y):
    tx, ty = tangents
    return tx * (1.0 - fg.tanh(x) ** 2) * y + fg.tanh(x) * ty


CUSTOM = {
    "custom_vjp_sin": (
        [_rand(4, seed=100)],
        lambda x: fg.sum(sin_vjp(x * x) * x),
        lambda x: (torch.sin(x * x) * x).sum()),
    "custom_vjp_two_inputs_broadcast": (
        [_rand(3, 2, seed=101), _rand(2, seed=102)],
        lambda x, y: fg.sum(fg.exp(mul_vjp(x, y)) * x),
        lambda x, y: (torch.exp(x * y) * x).sum()),
    "custom_jvp_log1pexp": (
        [np.array([-40.0, -1.5, 0.3, 2.0, 35.0])],
        lambda x: fg.sum(log1pexp(x) * x),
        lambda x: (F.softplus(x) * x).sum()),
    "custom_jvp_two_inputs": (
        [_rand(3, seed=103), _rand(3, seed=104)],
        lambda x, y: fg.sum(xy_jvp(x, y) ** 2),
        lambda x, y: ((torch.tanh(x) * y) ** 2).sum()),
    "stop_gradient_in_second_derivative": (
        [_rand(4, seed=105), _rand(4, seed=106)],
        lambda x, y: fg.sum(x ** 3 * fg.stop_gradient(x * y) + fg.sin(fg.stop_gradient(x) * y)),
        lambda x, y: (x ** 3 * (x * y).detach() + torch.sin(x.detach() * y)).sum()),
    "remat_block": (
        [_rand(3, 3, seed=107, scale=0.5), _rand(2, 3, seed=108)],
        lambda W, x: fg.sum(fg.remat(lambda h, W: fg.tanh(fg.tanh(h @ W) @ W))(x, W) ** 2),
        lambda W, x: (torch.tanh(torch.tanh(x @ W) @ W) ** 2).sum()),
    "remat_reads_a_weight_it_does_not_take": (
        [_rand(3, 3, seed=109, scale=0.5), _rand(2, 3, seed=110)],
        lambda W, x: fg.sum(fg.remat(lambda h: fg.sin(h @ W) * h)(x) ** 2),
        lambda W, x: ((torch.sin(x @ W) * x) ** 2).sum()),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_second_order(name, codegen):
    values, fgf, tf = CUSTOM[name]
    # finite differences see a stop_gradient's value move, as they should
    check_second_order(fgf, tf, values, codegen, fd="stop_gradient" not in name)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_custom_vjp_in_a_scan_body_second_order(codegen):
    def build(a, xs):
        h, ys = fg.scan(lambda h, x: (sin_vjp(h * a + x), h * h), fg.constant(0.2), xs)
        return h * h + fg.sum(ys)

    def tf(a, xs):
        h, ys = _t_scan(lambda h, x: (torch.sin(h * a + x), h * h), torch.tensor(0.2), xs)
        return h * h + ys.sum()
    check_second_order(build, tf, [np.array(0.9), _rand(4, seed=111)], codegen)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_per_example_gradients_differentiated_again(codegen):
    # fg.vectorize of a per-example gradient, then a gradient penalty differentiated
    # through it (Σ_i ‖∇_w loss_i‖²), and the per-example Hessian-vector products
    X, T = _rand(5, 3, seed=112), np.array([0.0, 1, 1, 0, 1])
    w0, v = _rand(3, seed=113), _rand(3, seed=114)
    with fg.Graph():
        w = fg.placeholder("w", (3,))
        x_i, t_i = fg.placeholder("x_i", (3,)), fg.placeholder("t_i", ())
        loss_i = fg.bce_with_logits(fg.dot(x_i, w), t_i) + 0.1 * fg.sum(fg.sin(w * x_i))
        Xn, Tn = fg.placeholder("X", (None, 3)), fg.placeholder("T", (None,))
        per = fg.vectorize(fg.grad(loss_i, w), {x_i: Xn, t_i: Tn})
        penalty = fg.sum(per * per)
        outs = [per, fg.grad(penalty, w),
                fg.vectorize(fg.hvp(loss_i, w, v), {x_i: Xn, t_i: Tn})]
        got = fg.compile(outs, codegen=codegen)({w: w0, Xn: X, Tn: T})
    wt = torch.tensor(w0, requires_grad=True)
    rows, hvs = [], []
    for xi, ti in zip(torch.tensor(X), torch.tensor(T)):
        li = F.binary_cross_entropy_with_logits(xi @ wt, ti) + 0.1 * torch.sin(wt * xi).sum()
        g, = torch.autograd.grad(li, wt, create_graph=True)
        rows.append(g)
        hvs.append(torch.autograd.grad(g @ torch.tensor(v), wt, retain_graph=True)[0])
    per_t = torch.stack(rows)
    gp, = torch.autograd.grad((per_t * per_t).sum(), wt)
    _close(got[0], per_t.detach().numpy(), "per-example gradients")
    _close(got[1], gp.numpy(), "gradient of the penalty")
    _close(got[2], torch.stack(hvs).numpy(), "per-example hvp")


@pytest.mark.parametrize("fn", ["custom_vjp", "custom_jvp"])
@pytest.mark.parametrize("codegen", EXECUTORS)
def test_gradient_penalty_over_per_example_gradients_through_a_custom_function(fn, codegen):
    # The per-example gradient of Σ sin(w x_i)² reads the custom call's output, so the
    # vectorized gradient holds a batched call; differentiating it again (Σ_i ‖g_i‖², its
    # gradient and Hessian) was refused ("Differentiate first …"), the very order the
    # docs recommend. The rule now runs example by example: torch's loop over examples.
    X, w0, v = _rand(4, 3, seed=120), _rand(3, seed=121), _rand(3, seed=122)
    custom = sin_vjp if fn == "custom_vjp" else log1pexp
    tfn = torch.sin if fn == "custom_vjp" else F.softplus
    with fg.Graph():
        w, x_i = fg.placeholder("w", (3,)), fg.placeholder("x_i", (3,))
        Xn = fg.placeholder("X", (None, 3))
        per = fg.vectorize(fg.grad(fg.sum(custom(w * x_i) ** 2), w), {x_i: Xn})
        penalty = fg.sum(per * per)
        outs = [per, fg.grad(penalty, w), fg.hvp(penalty, w, v), fg.hessian(penalty, w),
                fg.hvp(penalty, w, v, mode="rev-rev")]
        got = fg.compile(outs, codegen=codegen)({w: w0, Xn: X})

    def per_t(wt):
        return torch.stack([torch.autograd.grad((tfn(wt * xi) ** 2).sum(), wt,
                                                create_graph=True)[0]
                            for xi in torch.tensor(X)])
    wt = torch.tensor(w0, requires_grad=True)
    rows = per_t(wt)
    gp, = torch.autograd.grad((rows * rows).sum(), wt)
    H = torch.autograd.functional.hessian(lambda a: (per_t(a) ** 2).sum(), torch.tensor(w0))
    _close(got[0], rows.detach().numpy(), "per-example gradients")
    _close(got[1], gp.numpy(), "gradient of the penalty")
    _close(got[2], H.numpy() @ v, "hvp of the penalty")
    _close(got[3], H.numpy(), "Hessian of the penalty")
    _close(got[4], H.numpy() @ v, "hvp (rev-rev) of the penalty")


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_custom_vjp_rule_that_is_not_the_derivative_differentiates_as_torch_function(codegen):
    # A rule is differentiated as written (as JAX's grad-of-grad and torch's double
    # backward through an autograd.Function do): here a clipped cotangent and a None term
    # for y, whose rule still reads y. Reverse over reverse is the Function's double
    # backward; the "Hessian" of such a rule is not symmetric, so forward over reverse
    # (the rule's own Jacobian) differs from it by design.
    @fg.custom_vjp(name="tests.second_order.clipped")
    def clipped(x, y):
        return x * fg.sin(y)

    @clipped.defvjp
    def _clipped_rule(g, ans, x, y):
        return (fg.clip(g, -0.4, 0.4) * fg.sin(y) * x, None)

    class Clipped(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * torch.sin(y)

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return torch.clamp(g, -0.4, 0.4) * torch.sin(y) * x, None

    xv, yv, vx, vy = (_rand(4, seed=k) for k in (123, 124, 125, 126))
    with fg.Graph():
        x, y = fg.placeholder("x", (4,)), fg.placeholder("y", (4,))
        f = fg.sum(clipped(x, y) * x)
        gx, gy = fg.grad(f, [x, y])
        outs = [gx, gy, *fg.grad(fg.sum(gx * vx) + fg.sum(gy * vy), [x, y]),
                *fg.hvp(f, [x, y], [vx, vy], mode="rev-rev")]
        got = fg.compile(outs, codegen=codegen)({x: xv, y: yv})
    X, Y = (torch.tensor(a, requires_grad=True) for a in (xv, yv))
    tgx, tgy = torch.autograd.grad((Clipped.apply(X, Y) * X).sum(), [X, Y],
                                   create_graph=True, allow_unused=True)
    assert tgy is None                                  # the rule's None: no gradient
    hv = torch.autograd.grad((tgx * torch.tensor(vx)).sum(), [X, Y])
    for k, want in enumerate([tgx, torch.zeros(4), hv[0], hv[1], hv[0], hv[1]]):
        _close(got[k], want.detach().numpy(), f"output {k}")


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_second_order_on_the_scalar_path(codegen):
    # every value 0-d float64: the generated program is plain Python floats and math
    # (its source compiled at the second call); the harness calls it three times
    values, fgf, tf = ELEMENTWISE["zero_d_only"]
    check_second_order(fgf, tf, values, codegen, hessian=False)
    with fg.Graph():
        a, b = fg.placeholder("a", ()), fg.placeholder("b", ())
        prog = fg.compile(fg.hvp(fgf(a, b), [a, b], [1.0, 2.0]), codegen=codegen)
        prog(a=0.3, b=-1.2)
        assert ("scalar" in prog.executor.name) == codegen


# -- compositions: loops around custom rules, stop_gradient and remat; run-time shapes -----

@fg.custom_vjp(name="tests.second_order.tanh_from_ans")
def tanh_from_ans(x):
    return fg.tanh(x)


@tanh_from_ans.defvjp
def _tanh_from_ans_rule(g, ans, x):
    """x̄ = v̄ (1 − y²): the rule reads the call's output, so a second derivative
    goes through the call again"""
    return (g * (1.0 - ans * ans),)


def _t_reduce(step, xs, init):
    c = init
    for x in xs:
        c = step(c, x)
    return c


def _t_newton_like(x):
    c = x
    while float((c * c).sum().detach()) < 50.0:   # the trip count is fixed at this point
        c = c * 1.5 + torch.sin(c)
    return c


COMPOSED = {
    "scan_length_without_xs": (
        [np.array(0.7)],
        lambda a: fg.scan(lambda c, _: (fg.sin(c * a) + c, None), a * 1.0, length=3)[0],
        lambda a: _t_reduce(lambda c, _: torch.sin(c * a) + c, range(3), a * 1.0)),
    "while_condition_reads_x": (
        [np.array([0.3, 0.5])],
        lambda x: fg.sum(fg.while_loop(lambda c: fg.sum(c * c) < 50.0,
                                       lambda c: c * 1.5 + fg.sin(c), x) ** 2),
        lambda x: (_t_newton_like(x) ** 2).sum()),
    "cond_predicate_reads_x": (
        [np.array([-0.3, 0.1])],
        lambda x: fg.sum(fg.cond(fg.sum(x) > 0.0, lambda x: fg.exp(x) * x,
                                 lambda x: x ** 3, x)),
        lambda x: (torch.exp(x) * x).sum() if float(x.sum().detach()) > 0 else (x ** 3).sum()),
    "custom_rule_reading_its_output_in_scan": (
        [np.array(0.4), _rand(3, seed=130)],
        lambda a, xs: fg.scan(lambda c, x: (tanh_from_ans(c * a + x), c), a, xs)[0] ** 2,
        lambda a, xs: _t_reduce(lambda c, x: torch.tanh(c * a + x), xs, a) ** 2),
    "custom_vjp_in_cond_branch": (
        [np.array([0.3, 0.4])],
        lambda x: fg.sum(fg.cond(fg.sum(x) > 0.0, lambda x: sin_vjp(x * x), lambda x: x ** 3,
                                 x) * x),
        lambda x: (torch.sin(x * x) * x).sum()),
    "custom_vjp_in_remat": (
        [np.array([0.3, 0.4])],
        lambda x: fg.sum(fg.remat(lambda x: sin_vjp(x * x) * x)(x) ** 2),
        lambda x: ((torch.sin(x * x) * x) ** 2).sum()),
    "custom_vjp_in_fori_with_a_captured_weight": (
        [_rand(2, seed=131), _rand(3, 2, seed=132)],
        lambda a, x: fg.sum(fg.fori_loop(0, 3, lambda i, c: mul_vjp(sin_vjp(c), a), x) ** 2),
        lambda a, x: (_t_reduce(lambda c, _: torch.sin(c) * a, range(3), x) ** 2).sum()),
    "custom_jvp_in_while": (
        [_rand(3, seed=133), _rand(3, seed=134)],
        lambda a, y: fg.sum(fg.while_loop(lambda s: s[0] < 2,
                                          lambda s: (s[0] + 1, xy_jvp(s[1], y)),
                                          (fg.constant(np.int64(0)), a))[1]),
        lambda a, y: (torch.tanh(torch.tanh(a) * y) * y).sum()),
    "stop_gradient_in_scan": (
        [np.array(0.7), _rand(3, seed=135)],
        lambda a, xs: fg.scan(lambda c, x: (c * fg.stop_gradient(c * a) + x * a, None),
                              a * 0.5, xs)[0] ** 2,
        lambda a, xs: _t_reduce(lambda c, x: c * (c * a).detach() + x * a, xs, a * 0.5) ** 2),
    "remat_in_scan": (
        [_rand(2, 2, seed=136, scale=0.5), _rand(3, 2, seed=137)],
        lambda W, xs: fg.sum(fg.scan(lambda h, x: (fg.remat(lambda h, x: fg.tanh(h @ W + x))(
            h, x), None), fg.constant(np.zeros(2)), xs)[0] ** 2),
        lambda W, xs: (_t_reduce(lambda h, x: torch.tanh(h @ W + x), xs, torch.zeros(2))
                       ** 2).sum()),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(COMPOSED))
def test_composed_second_order(name, codegen):
    values, fgf, tf = COMPOSED[name]
    check_second_order(fgf, tf, values, codegen, fd="stop_gradient" not in name)


def _check_run_time_shapes(decl, build, tf, xv, codegen, feed=None):
    """A first input declared with run-time lengths (None): the Hessian goes through the
    loop over basis vectors, hvp and the nested forms through the declared shapes."""
    v = _directions([xv])[0]
    with fg.Graph():
        x = fg.placeholder("x", decl)
        f = build(x)
        outs = [fg.grad(f, x), fg.hvp(f, x, v), fg.hvp(f, x, v, mode="rev-rev"),
                fg.grad(fg.jvp(f, x, v), x), fg.hessian(f, x)]
        got = fg.compile(outs, codegen=codegen)({x: xv, **(feed or {})})
    ref = _torch_reference(tf, [xv], [v])
    for k, want in enumerate([ref["grad"][0]] + [ref["hv"][0]] * 3 + [ref["hessian"]]):
        _close(got[k], want, f"output {k} (codegen={codegen})")


_K = _rand(2, 2, 3, 2, seed=140, scale=0.5)
_W3 = _rand(3, seed=141)
RUN_TIME_SHAPES = {
    "batch_norm_rows": ((None, 3), (4, 3),
                        lambda x: fg.sum(fg.tanh(fg.nn.BatchNorm(3)(x)) * _W3),
                        lambda x: (torch.tanh(F.batch_norm(x, None, None, torch.ones(3),
                                                           torch.zeros(3), training=True))
                                   * torch.tensor(_W3)).sum()),
    "conv_height_width": ((None, 2, None, None), (1, 2, 5, 4),
                          lambda x: fg.sum(fg.tanh(fg.conv2d(x, _K, stride=2, padding=1)) ** 2),
                          lambda x: (torch.tanh(F.conv2d(x, torch.tensor(_K), stride=2,
                                                         padding=1)) ** 2).sum()),
    "max_pool_height_width": ((None, 2, None, None), (1, 2, 4, 5),
                              lambda x: fg.sum(fg.max_pool2d(fg.tanh(x), 2) ** 3),
                              lambda x: (F.max_pool2d(torch.tanh(x), 2) ** 3).sum()),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(RUN_TIME_SHAPES))
def test_second_order_with_run_time_lengths(name, codegen):
    decl, shape, build, tf = RUN_TIME_SHAPES[name]
    _check_run_time_shapes(decl, build, tf, _rand(*shape, seed=142), codegen)


# -- at the kinks: ties, masked logits --------------------------------------------------------

TIES = {
    # max pooling routes v̄ to each window's first maximum, as torch does (on CPU), so the
    # second derivative at a tie agrees with torch's too
    "max_pool_ties": (
        [np.array([[[[1.0, 1.0, 0.0, 2.0], [0.5, 1.0, 2.0, 2.0]]]])],
        lambda x: fg.sum(fg.max_pool2d(x, 2) ** 2), lambda x: (F.max_pool2d(x, 2) ** 2).sum()),
    "max_pool_ties_overlapping": (
        [np.array([[[[1.0, -1.0, 0.0], [0.5, 1.0, 1.0], [1.0, 1.0, 1.0]]]])],
        lambda x: fg.sum(fg.max_pool2d(x * x, 2, 1) ** 2),
        lambda x: (F.max_pool2d(x * x, 2, 1) ** 2).sum()),
    # fg.max splits v̄ evenly among k tied entries, as torch.amax (torch.max(dim) picks one)
    "max_reduction_ties": (
        [np.array([[1.0, 1.0, 0.0], [2.0, 0.5, 2.0]])],
        lambda x: fg.sum(fg.max(x, axis=1) ** 2), lambda x: (torch.amax(x, 1) ** 2).sum()),
    # relu, leaky_relu, elu and abs exactly at 0: torch's one-sided conventions
    "activations_at_zero": (
        [np.array([0.0, 1.0, -1.0])],
        lambda x: fg.sum(fg.elu(x) ** 2 + fg.leaky_relu(x) ** 2 + fg.relu(x) ** 2
                         + fg.abs(x) ** 3),
        lambda x: (F.elu(x) ** 2 + F.leaky_relu(x, 0.01) ** 2 + F.relu(x) ** 2
                   + x.abs() ** 3).sum()),
}


@pytest.mark.parametrize("codegen", EXECUTORS)
@pytest.mark.parametrize("name", list(TIES))
def test_second_order_at_ties_follows_torch(name, codegen):
    values, fgf, tf = TIES[name]
    check_second_order(fgf, tf, values, codegen, fd=False)   # no derivative at a tie


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_cross_entropy_second_order_with_masked_logits(codegen):
    # A −inf logit with target 0 adds 0 (the documented policy): value, gradient and
    # Hessian stay finite, diag(p) − p pᵀ per row with p = 0 there. torch gives NaN for
    # the value; against a −1e300 logit (the same softmax) it agrees.
    z = np.array([[1.0, -np.inf, 0.3], [0.2, 0.1, -np.inf]])
    t = np.array([[0.6, 0.0, 0.4], [0.5, 0.5, 0.0]])
    finite = torch.tensor(np.where(np.isinf(z), -1e300, z))
    check_second_order(lambda w: fg.softmax_cross_entropy(fg.constant(z) + w, t),
                       lambda w: F.cross_entropy(finite + w, torch.tensor(t)),
                       [np.array([0.1, 0.2, 0.3])], codegen, fd=False)


@pytest.mark.parametrize("rows", [3, None])
def test_prod_derivative_needs_static_lengths_and_says_which_line_asked(rows):
    # prod's rule is a product tree built for the reduced lengths: with them static its
    # second derivative is torch's; a run-time length is refused at the user's line
    xv = np.array([[0.5, -2.0, 1.5], [1.2, 0.3, -0.7]]).T
    with fg.Graph():
        x = fg.placeholder("x", (rows, 2))
        f = fg.sum(fg.prod(x, axis=0) ** 2)
        if rows is None:
            with pytest.raises(fg.DifferentiationError, match="prod's derivative") as e:
                fg.grad(f, x)
            assert f"test_second_order_torch.py:{e.tb.tb_lineno}" in str(e.value)
            return
        H = fg.run(fg.hessian(f, x), {x: xv})
    want = torch.autograd.functional.hessian(lambda a: (a.prod(0) ** 2).sum(), torch.tensor(xv))
    _close(H, want.numpy(), "Hessian of prod")
