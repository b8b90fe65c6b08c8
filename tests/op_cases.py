"""One table of op cases, shared by the op tests (values and derivatives against
finite differences) and the mode-consistency tests (jvp rows = vjp columns).

Each case: (id, fn over nodes, input arrays, numpy reference or None).
Inputs are float64; shapes cover broadcasting, 0-d arrays and batches.
Ops with a restricted domain get inputs inside it.
"""
import numpy as np

import flowgrad as fg

_r = np.random.default_rng(7)


def randn(*shape):
    return _r.standard_normal(shape)


def pos(*shape):
    return _r.uniform(0.5, 2.0, shape)


CASES = [
    # elementwise, with broadcasting and 0-d inputs
    ("add (3,1)+(1,4)", lambda a, b: a + b, [randn(3, 1), randn(1, 4)], np.add),
    ("add scalar+(2,3)", lambda a, b: a + b, [randn(), randn(2, 3)], np.add),
    ("sub (2,3)-(3,)", lambda a, b: a - b, [randn(2, 3), randn(3)], np.subtract),
    ("mul (3,1)*(1,4)", lambda a, b: a * b, [randn(3, 1), randn(1, 4)], np.multiply),
    ("mul 0-d*0-d", lambda a, b: a * b, [randn(), randn()], np.multiply),
    ("div (2,3)/(3,)", lambda a, b: a / b, [randn(2, 3), pos(3)], np.divide),
    ("neg", lambda a: -a, [randn(2, 3)], np.negative),
    ("pow x**3", lambda a: a ** 3, [randn(4)], lambda a: a ** 3),
    ("pow x**y", lambda a, b: a ** b, [pos(2, 3), randn(3)], np.power),
    ("exp", fg.exp, [randn(2, 3)], np.exp),
    ("log", fg.log, [pos(2, 3)], np.log),
    ("tanh", fg.tanh, [randn(2, 3)], np.tanh),
    ("sin", fg.sin, [randn(5)], np.sin),
    ("cos", fg.cos, [randn()], np.cos),
    ("x*x (shared input)", lambda a: a * a, [randn(3)], lambda a: a * a),
    ("x used by three children", lambda a: fg.exp(a) * fg.sin(a) + a,
     [randn(3)], lambda a: np.exp(a) * np.sin(a) + a),
    # reductions
    ("sum all", fg.sum, [randn(2, 3)], np.sum),
    ("sum axis=0", lambda a: fg.sum(a, axis=0), [randn(2, 3)], lambda a: a.sum(0)),
    ("sum axis=(0,2) keepdims", lambda a: fg.sum(a, axis=(0, 2), keepdims=True),
     [randn(2, 3, 2)], lambda a: a.sum((0, 2), keepdims=True)),
    ("sum 0-d", fg.sum, [randn()], np.sum),
    ("mean axis=-1", lambda a: fg.mean(a, axis=-1), [randn(2, 3)], lambda a: a.mean(-1)),
    ("mean all", fg.mean, [randn(4)], np.mean),
    # shape
    ("reshape", lambda a: fg.reshape(a, (3, -1)), [randn(2, 3)], lambda a: a.reshape(3, -1)),
    ("transpose .T", lambda a: a.T, [randn(2, 3)], lambda a: a.T),
    ("transpose axes", lambda a: fg.transpose(a, (1, 2, 0)), [randn(2, 3, 4)],
     lambda a: a.transpose(1, 2, 0)),
    ("broadcast_to", lambda a: fg.broadcast_to(a, (2, 3)), [randn(3)],
     lambda a: np.broadcast_to(a, (2, 3))),
    ("expand_dims", lambda a: fg.expand_dims(a, 0), [randn(3)], lambda a: a[None]),
    ("squeeze", lambda a: fg.squeeze(a, 1), [randn(3, 1)], lambda a: a[:, 0]),
    # matmul, every rank combination
    ("matmul 2d@2d", fg.matmul, [randn(2, 3), randn(3, 4)], np.matmul),
    ("matmul 2d@1d", fg.matmul, [randn(2, 3), randn(3)], np.matmul),
    ("matmul 1d@2d", fg.matmul, [randn(3), randn(3, 4)], np.matmul),
    ("matmul 1d@1d", fg.matmul, [randn(3), randn(3)], np.matmul),
    ("matmul batched (2,2,3)@(3,2)", fg.matmul, [randn(2, 2, 3), randn(3, 2)], np.matmul),
    ("matmul batched (2,3)@(4,3,2)", fg.matmul, [randn(2, 3), randn(4, 3, 2)], np.matmul),
    # model ops
    ("linear", fg.linear, [randn(4, 3), randn(3), randn()], lambda x, w, b: x @ w + b),
    ("sigmoid", fg.sigmoid, [randn(2, 3)], lambda a: 1 / (1 + np.exp(-a))),
    ("softplus", fg.softplus, [randn(2, 3)], lambda a: np.log1p(np.exp(a))),
    ("mse", fg.mse, [randn(5), randn(5)], lambda y, t: np.mean((y - t) ** 2)),
    ("mse sum", lambda y, t: fg.mse(y, t, reduction="sum"), [randn(5), randn(5)],
     lambda y, t: np.sum((y - t) ** 2)),
    ("l2", fg.l2, [randn(3)], lambda w: 0.5 * np.sum(w ** 2)),
    ("bce_with_logits", fg.bce_with_logits, [randn(5), _r.uniform(0, 1, 5)],
     lambda z, t: np.mean(np.log1p(np.exp(z)) - z * t)),
    ("bce_with_logits none", lambda z, t: fg.bce_with_logits(z, t, reduction="none"),
     [randn(2, 3), _r.uniform(0, 1, (2, 3))], lambda z, t: np.log1p(np.exp(z)) - z * t),
]


# -- the rest of API.md §1 (issue 3) ---------------------------------------------------

def away(*shape):
    """Entries of random sign, |x| ≥ 0.3: away from kinks at 0 and from ties."""
    return _r.choice([-1.0, 1.0], shape) * _r.uniform(0.3, 2.0, shape)


def wellcond(*shape):
    """A (batch of) well-conditioned square matrices: I·n plus noise."""
    n = shape[-1]
    return n * np.eye(n) + randn(*shape)


def spd(*shape):
    a = randn(*shape)
    return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])


def distinct(*shape):
    """Non-symmetric matrices whose lower-triangle symmetrization has spread eigenvalues."""
    n = shape[-1]
    return np.diag(np.arange(1.0, n + 1) * 1.5) + 0.3 * randn(*shape)


def _lse(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _sym_lower(a):
    return np.tril(a) + np.swapaxes(np.tril(a, -1), -1, -2)


_labels = np.array([2, 0, 1, 2])

CASES += [
    # elementwise
    ("log1p", fg.log1p, [_r.uniform(-0.5, 2.0, (2, 3))], np.log1p),
    ("sqrt", fg.sqrt, [pos(2, 3)], np.sqrt),
    ("sqrt 0-d", fg.sqrt, [pos()], np.sqrt),
    ("abs", fg.abs, [away(2, 3)], np.abs),
    ("maximum (3,1),(1,4)", fg.maximum, [away(3, 1), away(1, 4)], np.maximum),
    ("maximum with scalar", lambda a: fg.maximum(a, 0.1), [away(5)],
     lambda a: np.maximum(a, 0.1)),
    ("minimum (2,3),(3,)", fg.minimum, [away(2, 3), away(3)], np.minimum),
    ("where (list condition)", lambda a, b: fg.where([True, False, True], a, b),
     [randn(2, 3), randn(3)], lambda a, b: np.where([True, False, True], a, b)),
    ("where 0-d branch", lambda a, b: fg.where(np.array([[True], [False]]), a, b),
     [randn(2, 3), randn()], lambda a, b: np.where([[True], [False]], a, b)),
    ("pow tensor exponent 0-d", lambda a, b: a ** b, [pos(4), randn()], np.power),
    ("pow <x,x>^<x,x>", lambda a: fg.sum(a * a) ** fg.sum(a * a),
     [_r.uniform(0.2, 0.6, 3)], lambda a: np.sum(a * a) ** np.sum(a * a)),
    ("relu", fg.relu, [away(2, 3)], lambda a: np.maximum(a, 0)),
    ("softplus 0-d", fg.softplus, [randn()], lambda a: np.log1p(np.exp(a))),
    # reductions
    ("max all", fg.max, [randn(2, 3)], np.max),
    ("max axis=1", lambda a: fg.max(a, axis=1), [randn(2, 3)], lambda a: a.max(1)),
    ("max axis=(0,2) keepdims", lambda a: fg.max(a, axis=(0, 2), keepdims=True),
     [randn(2, 3, 2)], lambda a: a.max((0, 2), keepdims=True)),
    ("max 0-d", fg.max, [randn()], np.max),
    ("min axis=0", lambda a: fg.min(a, axis=0), [randn(3, 2)], lambda a: a.min(0)),
    ("logsumexp all", fg.logsumexp, [randn(2, 3)], _lse),
    ("logsumexp axis=-1", lambda a: fg.logsumexp(a, axis=-1), [randn(2, 3)],
     lambda a: _lse(a, -1)),
    ("logsumexp axis=0 keepdims", lambda a: fg.logsumexp(a, axis=0, keepdims=True),
     [randn(3, 2, 2)], lambda a: _lse(a, 0, True)),
    ("softmax", fg.softmax, [randn(2, 4)], _softmax),
    ("softmax axis=0", lambda a: fg.softmax(a, axis=0), [randn(3, 2)],
     lambda a: _softmax(a, 0)),
    ("log_softmax", fg.log_softmax, [randn(2, 3)], lambda a: np.log(_softmax(a))),
    ("softmax_cross_entropy one-hot", fg.softmax_cross_entropy,
     [randn(4, 3), np.eye(3)[_labels]],
     lambda z, t: np.mean(-np.sum(t * np.log(_softmax(z)), -1))),
    ("softmax_cross_entropy probabilities sum",
     lambda z, t: fg.softmax_cross_entropy(z, t, reduction="sum"),
     [randn(4, 3), _softmax(randn(4, 3))],
     lambda z, t: np.sum(-np.sum(t * np.log(_softmax(z)), -1))),
    ("softmax_cross_entropy labels none",
     lambda z: fg.softmax_cross_entropy(z, _labels, reduction="none"), [randn(4, 3)],
     lambda z: -np.log(_softmax(z))[np.arange(4), _labels]),
    ("softmax_cross_entropy batched labels",
     lambda z: fg.softmax_cross_entropy(z, _labels.reshape(2, 2)), [randn(2, 2, 3)],
     lambda z: np.mean(-np.log(_softmax(z))[np.arange(2)[:, None], np.arange(2),
                                            _labels.reshape(2, 2)])),
    # shape and indexing
    ("concatenate axis=0", lambda a, b: fg.concatenate([a, b]), [randn(2, 3), randn(1, 3)],
     lambda a, b: np.concatenate([a, b])),
    ("concatenate axis=-1 three", lambda a, b, c: fg.concatenate([a, b, c], axis=-1),
     [randn(2, 1), randn(2, 3), randn(2, 2)], lambda a, b, c: np.concatenate([a, b, c], -1)),
    ("stack axis=0", lambda a, b: fg.stack([a, b]), [randn(3), randn(3)],
     lambda a, b: np.stack([a, b])),
    ("stack 0-d", lambda a, b: fg.stack([a, b, a]), [randn(), randn()],
     lambda a, b: np.stack([a, b, a])),
    ("stack axis=-1", lambda a, b: fg.stack([a, b], axis=-1), [randn(2, 3), randn(2, 3)],
     lambda a, b: np.stack([a, b], -1)),
    ("getitem int", lambda a: a[1], [randn(3, 2)], lambda a: a[1]),
    ("getitem slices", lambda a: a[::2, 1:], [randn(4, 3)], lambda a: a[::2, 1:]),
    ("getitem negative step", lambda a: a[::-1, -1], [randn(3, 2)], lambda a: a[::-1, -1]),
    ("getitem newaxis+ellipsis", lambda a: a[None, ..., 0], [randn(2, 3)],
     lambda a: a[None, ..., 0]),
    ("getitem int array repeats", lambda a: a[[0, 2, 0]], [randn(3, 2)],
     lambda a: a[[0, 2, 0]]),
    ("getitem two arrays", lambda a: a[[0, 1], [2, 2]], [randn(2, 3)],
     lambda a: a[[0, 1], [2, 2]]),
    ("getitem separated arrays", lambda a: a[[0, 1], :, [1, 0]], [randn(2, 3, 2)],
     lambda a: a[[0, 1], :, [1, 0]]),
    ("getitem mask", lambda a: a[np.array([True, False, True])], [randn(3, 2)],
     lambda a: a[[True, False, True]]),
    ("take", lambda a: fg.take(a, [2, 0], axis=1), [randn(2, 3)],
     lambda a: np.take(a, [2, 0], axis=1)),
    ("expand_dims two axes", lambda a: fg.expand_dims(a, (0, -1)), [randn(2)],
     lambda a: a[None, :, None]),
    ("squeeze all", fg.squeeze, [randn(1, 3, 1)], np.squeeze),
    # linear algebra
    ("dot 1d.1d", fg.dot, [randn(3), randn(3)], np.dot),
    ("dot 2d.1d", fg.dot, [randn(2, 3), randn(3)], np.dot),
    ("dot 0-d", fg.dot, [randn(), randn(3)], np.dot),
    ("dot 3d.3d", fg.dot, [randn(2, 1, 3), randn(2, 3, 2)], np.dot),
    ("outer", fg.outer, [randn(3), randn(2)], np.outer),
    ("outer 2d", fg.outer, [randn(2, 2), randn(3)], np.outer),
    ("trace", fg.trace, [randn(3, 3)], np.trace),
    ("trace offset rect", lambda a: fg.trace(a, offset=1), [randn(3, 4)],
     lambda a: np.trace(a, 1)),
    ("trace batched", lambda a: fg.trace(a, axis1=-2, axis2=-1), [randn(2, 3, 3)],
     lambda a: np.trace(a, axis1=-2, axis2=-1)),
    ("det", fg.det, [wellcond(3, 3)], np.linalg.det),
    ("det batched", fg.det, [wellcond(2, 3, 3)], np.linalg.det),
    ("det 2x2", fg.det, [wellcond(2, 2)], np.linalg.det),
    ("logdet spd", fg.logdet, [spd(3, 3)], lambda a: np.linalg.slogdet(a)[1]),
    ("logdet batched", fg.logdet, [spd(2, 2, 2)], lambda a: np.linalg.slogdet(a)[1]),
    ("inv", fg.inv, [wellcond(3, 3)], np.linalg.inv),
    ("inv batched", fg.inv, [wellcond(2, 2, 2)], np.linalg.inv),
    ("solve matrix", fg.solve, [wellcond(3, 3), randn(3, 2)], np.linalg.solve),
    ("solve vector", fg.solve, [wellcond(3, 3), randn(3)], np.linalg.solve),
    ("solve batched, vector b", fg.solve, [wellcond(2, 3, 3), randn(3)], np.linalg.solve),
    ("solve batch broadcast", fg.solve, [wellcond(2, 2, 2), randn(2, 1)], np.linalg.solve),
    ("eigvalsh", fg.eigvalsh, [distinct(3, 3)], np.linalg.eigvalsh),
    ("eigvalsh UPLO=U", lambda a: fg.eigvalsh(a, UPLO="U"), [distinct(3, 3).T],
     lambda a: np.linalg.eigvalsh(a, UPLO="U")),
    ("eigvalsh batched", fg.eigvalsh, [distinct(2, 3, 3)], np.linalg.eigvalsh),
    ("eigh V diag(w^2) V^T", lambda a: _vfv(*fg.eigh(a)), [distinct(3, 3)],
     lambda a: _sym_lower(a) @ _sym_lower(a)),
    ("eigh |V|", lambda a: fg.abs(fg.eigh(a)[1]), [distinct(3, 3)],
     lambda a: np.abs(np.linalg.eigh(a)[1])),
    ("norm vector", fg.norm, [randn(4)], np.linalg.norm),
    ("norm vector axis=-1 keepdims", lambda a: fg.norm(a, axis=-1, keepdims=True),
     [randn(2, 3)], lambda a: np.linalg.norm(a, axis=-1, keepdims=True)),
    ("norm vector ord=1", lambda a: fg.norm(a, 1), [away(4)], lambda a: np.linalg.norm(a, 1)),
    ("norm vector ord=inf", lambda a: fg.norm(a, np.inf), [away(4)],
     lambda a: np.linalg.norm(a, np.inf)),
    ("norm fro", lambda a: fg.norm(a, "fro"), [randn(2, 3)],
     lambda a: np.linalg.norm(a, "fro")),
    ("norm 3-d flattened", fg.norm, [randn(2, 2, 2)], np.linalg.norm),
    ("norm spectral", lambda a: fg.norm(a, 2), [randn(3, 3)], lambda a: np.linalg.norm(a, 2)),
    ("norm spectral wide", lambda a: fg.norm(a, 2), [randn(2, 4)],
     lambda a: np.linalg.norm(a, 2)),
    ("norm spectral batched keepdims",
     lambda a: fg.norm(a, 2, axis=(-2, -1), keepdims=True), [randn(2, 3, 2)],
     lambda a: np.linalg.norm(a, 2, axis=(-2, -1), keepdims=True)),
    ("norm spectral axes (2,0)", lambda a: fg.norm(a, 2, axis=(2, 0)), [randn(3, 2, 2)],
     lambda a: np.linalg.norm(a, 2, axis=(2, 0))),
    ("norm matrix ord=1", lambda a: fg.norm(a, 1), [away(3, 3)],
     lambda a: np.linalg.norm(a, 1)),
    ("norm matrix ord=inf batched", lambda a: fg.norm(a, np.inf, axis=(1, 2)), [away(2, 3, 2)],
     lambda a: np.linalg.norm(a, np.inf, axis=(1, 2))),
]


def _vfv(w, v):
    """V diag(w²) Vᵀ: a sign-invariant function of the eigenvectors (= S² for S = VΛVᵀ)."""
    return fg.matmul(v * fg.expand_dims(w * w, -2), v.T)


# -- convolution and pooling, NCHW (issue 22); its own generator, so that the order in
# which blocks are added to this table never changes another block's inputs ------------

_rc = np.random.default_rng(2222)


def _conv_ref(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0)):
    """Direct loops over the output positions (independent of flowgrad's im2col)."""
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    (sh, sw), (kh, kw) = stride, w.shape[2:]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty((x.shape[0], w.shape[0], oh, ow))
    for p in range(oh):
        for q in range(ow):
            patch = xp[:, :, p * sh:p * sh + kh, q * sw:q * sw + kw]
            out[:, :, p, q] = np.einsum("ncij,ocij->no", patch, w)
    return out if b is None else out + b[:, None, None]


def _pool_ref(x, size, stride, reduce):
    (kh, kw), (sh, sw) = size, stride
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    return np.stack([np.stack([reduce(x[:, :, p * sh:p * sh + kh, q * sw:q * sw + kw],
                                      axis=(2, 3)) for q in range(ow)], -1)
                     for p in range(oh)], -2)


CASES += [
    ("conv2d stride 2 pad (1,0) bias",
     lambda x, w, b: fg.conv2d(x, w, b, stride=2, padding=(1, 0)),
     [_rc.standard_normal((2, 2, 6, 5)), _rc.standard_normal((3, 2, 3, 2)),
      _rc.standard_normal(3)],
     lambda x, w, b: _conv_ref(x, w, b, (2, 2), (1, 1, 0, 0))),
    ("conv2d same", lambda x, w: fg.conv2d(x, w, padding="same"),
     [_rc.standard_normal((1, 2, 5, 4)), _rc.standard_normal((2, 2, 3, 2))],
     lambda x, w: _conv_ref(x, w, None, (1, 1), (1, 1, 0, 1))),
    ("max_pool2d (2,3) stride (2,1)", lambda x: fg.max_pool2d(x, (2, 3), stride=(2, 1)),
     [_rc.permutation(70).reshape(2, 1, 7, 5) / 9.0],   # distinct entries: no ties
     lambda x: _pool_ref(x, (2, 3), (2, 1), np.max)),
    ("avg_pool2d 3 stride 2", lambda x: fg.avg_pool2d(x, 3, 2),
     [_rc.standard_normal((2, 2, 7, 6))], lambda x: _pool_ref(x, (3, 3), (2, 2), np.mean)),
]


# -- issue 22's vocabulary ------------------------------------------------------------------

def _erf(a):
    from scipy.special import erf
    return erf(a)


def _gelu(a):
    from scipy.special import ndtr
    return a * ndtr(a)


def _with_zeros(*shape):
    """Random entries with exact zeros in some slices (prod's rules must not divide)."""
    a = randn(*shape)
    a.flat[::3] = 0.0
    return a


CASES += [
    ("clip scalar bounds", lambda a: fg.clip(a, -0.5, 0.7), [away(3, 4)],
     lambda a: np.clip(a, -0.5, 0.7)),
    ("clip node bounds broadcast", fg.clip, [away(2, 3), -pos(3) / 3, pos(2, 1)],
     lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi)),
    ("clip 0-d", lambda a: fg.clip(a, None, 0.1), [away()], lambda a: np.minimum(a, 0.1)),
    ("leaky_relu", lambda a: fg.leaky_relu(a, 0.2), [away(2, 3)],
     lambda a: np.where(a > 0, a, 0.2 * a)),
    ("elu", fg.elu, [away(2, 3)], lambda a: np.where(a > 0, a, np.expm1(a))),
    ("elu alpha 0-d", lambda a: fg.elu(a, alpha=1.5), [-pos()], lambda a: 1.5 * np.expm1(a)),
    ("gelu", fg.gelu, [3 * randn(2, 3)], _gelu),
    ("gelu 0-d", fg.gelu, [randn()], _gelu),
    ("erf", fg.erf, [2 * randn(2, 4)], _erf),
    ("erf 0-d", fg.erf, [randn()], _erf),
    ("tan", fg.tan, [_r.uniform(-1.2, 1.2, (2, 3))], np.tan),
    ("var all", fg.var, [randn(3, 4)], np.var),
    ("var axis=0 ddof=1 keepdims", lambda a: fg.var(a, axis=0, ddof=1, keepdims=True),
     [randn(3, 2)], lambda a: np.var(a, axis=0, ddof=1, keepdims=True)),
    ("var ddof=n-1", lambda a: fg.var(a, axis=-1, ddof=2), [randn(2, 3)],
     lambda a: np.var(a, axis=-1, ddof=2)),
    ("std axis=(0,2)", lambda a: fg.std(a, axis=(0, 2)), [randn(2, 3, 2)],
     lambda a: np.std(a, axis=(0, 2))),
    ("prod all", fg.prod, [pos(2, 3)], np.prod),
    ("prod axis=1 with zeros", lambda a: fg.prod(a, axis=1), [_with_zeros(3, 5)],
     lambda a: np.prod(a, axis=1)),
    ("prod axes (0,2) keepdims", lambda a: fg.prod(a, axis=(0, 2), keepdims=True),
     [randn(3, 2, 3)], lambda a: np.prod(a, axis=(0, 2), keepdims=True)),
    ("prod 0-d", fg.prod, [randn()], np.prod),
    ("cumsum axis=1", lambda a: fg.cumsum(a, axis=1), [randn(2, 4)],
     lambda a: np.cumsum(a, axis=1)),
    ("cumsum flat", fg.cumsum, [randn(2, 3)], np.cumsum),
    ("einsum matmul", lambda a, b: fg.einsum("ij,jk->ik", a, b), [randn(2, 3), randn(3, 4)],
     lambda a, b: np.einsum("ij,jk->ik", a, b)),
    ("einsum implicit sums and a free letter", lambda a, b: fg.einsum("ijk,jl", a, b),
     [randn(2, 3, 2), randn(3, 2)], lambda a, b: np.einsum("ijk,jl", a, b)),
    ("einsum three operands to 0-d", lambda a, b, c: fg.einsum("i,ij,j->", a, b, c),
     [randn(3), randn(3, 2), randn(2)], lambda a, b, c: np.einsum("i,ij,j->", a, b, c)),
    ("einsum transpose", lambda a: fg.einsum("ij->ji", a), [randn(2, 3)], lambda a: a.T),
    ("pad", lambda a: fg.pad(a, ((1, 0), (2, 1))), [randn(2, 3)],
     lambda a: np.pad(a, ((1, 0), (2, 1)))),
    ("pad value", lambda a: fg.pad(a, 1, value=0.5), [randn(3)],
     lambda a: np.pad(a, 1, constant_values=0.5)),
    ("split sections", lambda a: fg.split(a, 2, axis=1)[1] * 2.0, [randn(2, 4)],
     lambda a: np.split(a, 2, axis=1)[1] * 2.0),
    ("split indices", lambda a: fg.concatenate(fg.split(a, [1, 3])[::-1]), [randn(4, 2)],
     lambda a: np.concatenate(np.split(a, [1, 3])[::-1])),
]
