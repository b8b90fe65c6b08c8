"""Hypothesis strategies that build random flowgrad graphs from the op table.

``valid_graphs()`` draws a small random graph that is well-formed by construction: inputs
of random shapes (0-d to 3-d, some axes declared ``None``), then a few steps, each an op of
the table applied to the graph so far and, where the op needs one, a fresh partner input
of a fitting shape (broadcasting, matmul, concatenation). The same steps run on numpy
alongside, so every draw carries the value the graph must compute. Ops are applied where
they are smooth (log of x² + ½, …): the derivatives are checked against finite differences.

``hostile_ops()`` draws one op with operands of arbitrary static shapes and arbitrary
(integer) axes and indices — mostly combinations the op must refuse.

ops/nn.py's model ops are left out on purpose (they are being rewritten elsewhere).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import flowgrad as fg

FEED_RANGE = 1.0      # inputs are uniform in [-1, 1]


class Case:
    """A graph drawn by a strategy: its inputs, their values, its output and the value
    numpy computed for that output, and the steps (for a readable failure)."""

    def __init__(self, graph, inputs, feed, out, expected, steps):
        self.graph, self.inputs, self.feed = graph, inputs, feed
        self.out, self.expected, self.steps = out, expected, steps

    def __repr__(self):
        shapes = ", ".join(f"{p.name}{_fmt(p.shape)}={_fmt(self.feed[p].shape)}"
                           for p in self.inputs)
        return f"Case(inputs: {shapes}; " + " → ".join(self.steps) + ")"


def _fmt(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


# -- numpy twins of the ops that numpy spells differently --------------------------------
def _np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis if axis is not None else None)


def _np_log_softmax(x, axis=-1):
    return x - _np_logsumexp(x, axis, keepdims=True)


# -- the valid strategy --------------------------------------------------------------------
class _Builder:
    """Grows a graph and its numpy twin step by step; every node is paired with its
    true value (shape included) so partners can be drawn to fit."""

    def __init__(self, draw, rng):
        self.draw, self.rng = draw, rng
        self.inputs, self.feed, self.steps = [], {}, []

    def leaf(self, true_shape, none_ok=True):
        """A placeholder of ``true_shape``; axes of length ≥ 2 may be declared None."""
        declared = tuple(None if none_ok and n >= 2 and self.draw(st.booleans()) else n
                         for n in true_shape)
        p = fg.placeholder(f"x{len(self.inputs)}", shape=declared)
        value = self.rng.uniform(-FEED_RANGE, FEED_RANGE, true_shape)
        self.inputs.append(p)
        self.feed[p] = value
        return p, value

    def shape(self, min_rank=0, max_rank=3):
        rank = self.draw(st.integers(min_rank, max_rank))
        return tuple(self.draw(st.integers(1, 3)) for _ in range(rank))

    def broadcast_partner(self, node, value):
        """A fresh input that broadcasts against ``node``: a suffix of its axes, each the
        same (declared as node declares it) or a static 1."""
        lead = self.draw(st.integers(0, value.ndim))
        true, declared = [], []
        for n, d in zip(value.shape[lead:], node.shape[lead:]):
            if self.draw(st.booleans()):
                true.append(1), declared.append(1)
            else:
                true.append(n), declared.append(d)
        p = fg.placeholder(f"x{len(self.inputs)}", shape=tuple(declared))
        v = self.rng.uniform(-FEED_RANGE, FEED_RANGE, tuple(true))
        self.inputs.append(p)
        self.feed[p] = v
        return p, v

    def partner_like(self, node, value, axis=None, length=None):
        """A fresh input shaped like ``node`` (declared the same), except ``axis`` of
        ``length`` (static). ``node`` may be a plain array: all of it static."""
        true = list(value.shape)
        declared = list(node.shape) if isinstance(node, fg.Node) else list(value.shape)
        if axis is not None:
            true[axis] = declared[axis] = length
        p = fg.placeholder(f"x{len(self.inputs)}", shape=tuple(declared))
        v = self.rng.uniform(-FEED_RANGE, FEED_RANGE, tuple(true))
        self.inputs.append(p)
        self.feed[p] = v
        return p, v


def _axis(draw, ndim):
    return draw(st.integers(-ndim, ndim - 1))


def _axes(draw, ndim):
    """None, an int, or a tuple of distinct axes."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or ndim == 0:
        return None
    if kind == "int":
        return _axis(draw, ndim)
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(picked)


# each step: (name, applies to a value of this many dims at least, function)
def _step_unary(b, x, v, draw):
    name = draw(st.sampled_from(["neg", "exp", "log", "log1p", "sqrt", "tanh", "sin", "cos",
                                 "pow_const", "square_by_mul"]))
    table = {
        "neg": (lambda M, a: -a),
        "exp": (lambda M, a: M.exp(a * 0.5)),
        "log": (lambda M, a: M.log(a * a + 0.5)),
        "log1p": (lambda M, a: M.log1p(a * a)),
        "sqrt": (lambda M, a: M.sqrt(a * a + 0.5)),
        "tanh": (lambda M, a: M.tanh(a)),
        "sin": (lambda M, a: M.sin(a)),
        "cos": (lambda M, a: M.cos(a)),
        "pow_const": (lambda M, a: (a * a + 0.5) ** 1.5),
        "square_by_mul": (lambda M, a: a * a),
    }
    f = table[name]
    return f(fg, x), f(np, v), name


def _step_binary(b, x, v, draw):
    name = draw(st.sampled_from(["add", "sub", "mul", "div", "pow", "where"]))
    if draw(st.booleans()):
        y, w = b.broadcast_partner(x, v)
        args = (x, y), (v, w)
    else:
        y, w = b.broadcast_partner(x, v)
        args = (y, x), (w, v)          # the partner first: broadcasting on either side
    (p, q), (pv, qv) = args
    table = {
        "add": lambda M, a, c: a + c,
        "sub": lambda M, a, c: a - c,
        "mul": lambda M, a, c: a * c,
        "div": lambda M, a, c: a / (c * c + 0.5),
        "pow": lambda M, a, c: (a * a + 0.5) ** c,
        "where": lambda M, a, c: M.where(a > c, a * c, a - c),
    }
    f = table[name]
    return f(fg, p, q), f(np, pv, qv), f"{name}(·, x{len(b.inputs) - 1})"


def _step_reduce(b, x, v, draw):
    name = draw(st.sampled_from(["sum", "mean", "logsumexp"]))
    axis = _axes(draw, v.ndim)
    keepdims = draw(st.booleans())
    if name == "logsumexp":
        return fg.logsumexp(x, axis, keepdims), _np_logsumexp(v, axis, keepdims), \
            f"logsumexp(axis={axis}, keepdims={keepdims})"
    return getattr(fg, name)(x, axis=axis, keepdims=keepdims), \
        getattr(np, name)(v, axis=axis, keepdims=keepdims), \
        f"{name}(axis={axis}, keepdims={keepdims})"


def _step_softmax(b, x, v, draw):
    axis = _axis(draw, v.ndim)
    if draw(st.booleans()):
        return fg.log_softmax(x, axis), _np_log_softmax(v, axis), f"log_softmax({axis})"
    return fg.softmax(x, axis), np.exp(_np_log_softmax(v, axis)), f"softmax({axis})"


def _step_shape(b, x, v, draw):
    kind = draw(st.sampled_from(["reshape", "transpose", "expand_dims", "squeeze",
                                 "broadcast_to", "concatenate", "stack"]))
    if kind == "reshape":
        if None in x.shape and x.shape.count(None) > 1:
            return fg.reshape(x, (-1,)), v.reshape(-1), "reshape(-1)"
        new = (1, -1) if draw(st.booleans()) else (-1,)
        return fg.reshape(x, new), v.reshape(new), f"reshape({new})"
    if kind == "transpose":
        perm = tuple(draw(st.permutations(range(v.ndim))))
        return fg.transpose(x, perm), np.transpose(v, perm), f"transpose({perm})"
    if kind == "expand_dims":
        axis = draw(st.integers(-v.ndim - 1, v.ndim))
        return fg.expand_dims(x, axis), np.expand_dims(v, axis), f"expand_dims({axis})"
    if kind == "squeeze":
        ones = [a for a, n in enumerate(x.shape) if n == 1]
        if not ones:
            return fg.squeeze(x), v, "squeeze()"
        axis = draw(st.sampled_from(ones))
        return fg.squeeze(x, axis), np.squeeze(v, axis), f"squeeze({axis})"
    if kind == "broadcast_to":
        if None in x.shape:
            return x, v, "identity"
        shape = (2,) + tuple(v.shape)
        return fg.broadcast_to(x, shape), np.broadcast_to(v, shape), f"broadcast_to({shape})"
    if kind == "concatenate" and v.ndim >= 1:
        axis = _axis(draw, v.ndim)
        y, w = b.partner_like(x, v, axis % v.ndim, draw(st.integers(1, 3)))
        first = draw(st.booleans())
        parts, vals = ([x, y], [v, w]) if first else ([y, x, y], [w, v, w])
        return fg.concatenate(parts, axis), np.concatenate(vals, axis), f"concatenate({axis})"
    axis = draw(st.integers(-v.ndim - 1, v.ndim))
    y, w = b.partner_like(x, v)
    return fg.stack([x, y, x], axis), np.stack([v, w, v], axis), f"stack({axis})"


def _step_index(b, x, v, draw):
    axis = draw(st.integers(0, v.ndim - 1))
    n = v.shape[axis]
    head = (slice(None),) * axis
    kind = draw(st.sampled_from(["int", "slice", "reverse", "array", "take", "newaxis"]))
    if kind == "int":
        k = draw(st.integers(-n, n - 1))
        index = head + (k,)
    elif kind == "slice":
        start = draw(st.integers(0, n - 1))
        index = head + (slice(start, None),)
    elif kind == "reverse":
        index = head + (slice(None, None, -1),)
    elif kind == "newaxis":
        index = head + (None, Ellipsis)
    else:
        idx = np.array(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4)))
        if kind == "take":
            return fg.take(x, idx, axis), np.take(v, idx, axis), f"take({idx.tolist()}, {axis})"
        index = head + (idx,)
    return x[index], v[index], f"getitem({index})"


def _step_linalg(b, x, v, draw):
    kind = draw(st.sampled_from(["matmul", "dot", "outer", "trace", "norm"]))
    if kind in ("matmul", "dot"):
        k, n = v.shape[-1], draw(st.integers(1, 3))
        shape_t, shape_d = ((k, n), (x.shape[-1], n)) if draw(st.booleans()) else ((k,), (x.shape[-1],))
        p = fg.placeholder(f"x{len(b.inputs)}", shape=shape_d)
        w = b.rng.uniform(-FEED_RANGE, FEED_RANGE, shape_t)
        b.inputs.append(p)
        b.feed[p] = w
        if kind == "matmul":
            return x @ p, v @ w, f"matmul(·, x{len(b.inputs) - 1})"
        return fg.dot(x, p), np.dot(v, w), f"dot(·, x{len(b.inputs) - 1})"
    if kind == "outer" and v.ndim == 1:
        y, w = b.partner_like(x, v)
        return fg.outer(x, y), np.outer(v, w), "outer"
    if kind == "trace" and v.ndim >= 2:
        return fg.trace(x), np.trace(v), "trace"
    return fg.norm(x), np.linalg.norm(v.reshape(-1)), "norm"


def _step_nonsmooth(b, x, v, draw):
    """abs, maximum/minimum and max/min where they are differentiable: random inputs are
    never 0 nor tied, and a max is taken only along axes without ties."""
    kind = draw(st.sampled_from(["abs", "maximum", "minimum", "max", "min"]))
    if kind == "abs":
        return fg.abs(x), np.abs(v), "abs"
    if kind in ("maximum", "minimum"):
        y, w = b.broadcast_partner(x, v)
        return getattr(fg, kind)(x, y), getattr(np, kind)(v, w), f"{kind}(·, x{len(b.inputs) - 1})"
    axis = _axes(draw, v.ndim)
    keepdims = draw(st.booleans())
    ref = np.sort(v, axis=None) if axis is None else None
    if v.size == 0 or (ref is not None and np.any(np.diff(ref) == 0)) or (
            axis is not None and _ties(v, axis)):
        return x, v, "identity"
    return getattr(fg, kind)(x, axis, keepdims), getattr(np, kind)(v, axis=axis,
                                                                     keepdims=keepdims), \
        f"{kind}(axis={axis}, keepdims={keepdims})"


def _ties(v, axis):
    axes = (axis,) if isinstance(axis, int) else axis
    moved = np.moveaxis(v, axes, tuple(range(-len(axes), 0)))
    flat = np.sort(moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,)), axis=-1)
    return bool(np.any(np.diff(flat, axis=-1) == 0))


def _step_square(b, x, v, draw):
    """inv, solve, det, logdet, eigvalsh of a fresh well-conditioned matrix
    M = I + 0.2 A, combined with x."""
    k = v.shape[0] if v.ndim in (1, 2) else 2
    z = np.zeros((k, k))
    A, a = b.partner_like(z, z)              # declared static (k, k)
    eye = np.eye(k)
    M, m = eye + 0.2 * A, eye + 0.2 * a
    kind = draw(st.sampled_from(["inv", "solve", "det", "logdet", "eigvalsh"]))
    if kind == "solve" and v.ndim in (1, 2):
        return fg.solve(M, x), np.linalg.solve(m, v), f"solve(M{k}, ·)"
    if kind == "inv":
        return fg.inv(M) * fg.sum(x), np.linalg.inv(m) * np.sum(v), f"inv(M{k}) * sum"
    if kind == "det":
        return fg.det(M) * x, np.linalg.det(m) * v, f"det(M{k}) * ·"
    if kind == "logdet":
        return fg.logdet(M) + x, np.linalg.slogdet(m)[1] + v, f"logdet(M{k}) + ·"
    S, sv = M + fg.transpose(M), m + m.T
    return fg.eigvalsh(S) * fg.sum(x), np.linalg.eigvalsh(sv) * np.sum(v), f"eigvalsh(M{k})"


_STEPS = [(0, _step_unary), (0, _step_binary), (0, _step_reduce), (1, _step_softmax),
          (0, _step_shape), (1, _step_index), (1, _step_linalg), (0, _step_nonsmooth),
          (0, _step_square)]


# -- issue 22's vocabulary: smooth where drawn (clip's bounds and leaky_relu's 0 are
# never hit by random inputs; prod only over axes whose lengths are static) ---------------
def _np_vocab(name):
    from scipy.special import erf, ndtr
    return {"erf": erf, "gelu": lambda a: a * ndtr(a)}[name]


def _reduced_static(x, v, axis):
    axes = range(v.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
    axes = [a % v.ndim for a in axes] if v.ndim else []
    return all(x.shape[a] is not None for a in axes), int(np.prod([v.shape[a] for a in axes]))


def _step_vocab(b, x, v, draw):
    kind = draw(st.sampled_from(["erf", "gelu", "tan", "clip", "leaky_relu", "elu", "var",
                                 "prod", "cumsum", "pad", "einsum", "split", "decomposition"]))
    if kind == "decomposition":
        return _step_decomposition(b, x, v, draw)
    if kind in ("erf", "gelu"):
        return getattr(fg, kind)(x), _np_vocab(kind)(v), kind
    if kind == "tan":
        return fg.tan(x * 0.3), np.tan(v * 0.3), "tan(0.3·)"
    if kind == "clip":
        return fg.clip(x, -0.5, 0.6), np.clip(v, -0.5, 0.6), "clip(-0.5, 0.6)"
    if kind == "leaky_relu":
        return fg.leaky_relu(x, 0.1), np.where(v > 0, v, 0.1 * v), "leaky_relu(0.1)"
    if kind == "elu":
        return fg.elu(x), np.where(v > 0, v, np.expm1(np.minimum(v, 0))), "elu"
    if kind in ("var", "prod"):
        axis = _axes(draw, v.ndim)
        keepdims = draw(st.booleans())
        static, n = _reduced_static(x, v, axis)
        if kind == "var" and n >= 1:
            ddof = 1 if n > 1 else 0
            return fg.var(x, axis, ddof, keepdims), np.var(v, axis=axis, ddof=ddof,
                                                           keepdims=keepdims), \
                f"var(axis={axis}, ddof={ddof}, keepdims={keepdims})"
        if kind == "prod" and static:
            return fg.prod(x, axis, keepdims), np.prod(v, axis=axis, keepdims=keepdims), \
                f"prod(axis={axis}, keepdims={keepdims})"
        return x, v, "identity"
    if kind == "cumsum":
        axis = _axis(draw, v.ndim) if v.ndim else None
        return fg.cumsum(x, axis), np.cumsum(v, axis=axis), f"cumsum({axis})"
    if kind == "pad":
        widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in v.shape) \
            if v.ndim else 1
        return fg.pad(x, widths), np.pad(v, widths), f"pad({widths})"
    letters = "abcd"[:v.ndim]
    out = "".join(reversed(letters[1:])) if v.ndim else ""
    if kind == "einsum":
        spec = f"{letters},{letters}->{out}"
        return fg.einsum(spec, x, x), np.einsum(spec, v, v), f"einsum({spec!r})"
    static = [a for a, n in enumerate(x.shape) if n is not None and n >= 2]
    if not static:
        return x, v, "identity"
    axis = draw(st.sampled_from(static))
    return fg.split(x, [1], axis)[1], np.split(v, [1], axis)[1], f"split([1], {axis})[1]"


def _step_decomposition(b, x, v, draw):
    """cholesky, qr, svd (singular values) or lstsq of a fresh well-conditioned matrix
    M = [I; 0] + 0.2 A (4×3: distinct singular values, full rank), combined with x."""
    z = np.zeros((4, 3))
    A, a = b.partner_like(z, z)
    eye = np.eye(4, 3)
    M, m = eye + 0.2 * A, eye + 0.2 * a
    kind = draw(st.sampled_from(["cholesky", "qr", "svd", "lstsq"]))
    if kind == "cholesky":
        S, s = fg.matmul(fg.transpose(M), M), m.T @ m
        return fg.cholesky(S) * fg.sum(x), np.linalg.cholesky(s) * np.sum(v), "cholesky(MᵀM)"
    if kind == "qr":
        q, r = fg.qr(M)
        nq, nr = np.linalg.qr(m)
        return fg.sum(q * q * r[0]) + x, np.sum(nq * nq * nr[0]) + v, "qr(M)"
    if kind == "svd":
        return fg.sum(fg.svd(M)[1]) * x, np.sum(np.linalg.svd(m)[1]) * v, "svd(M)"
    rhs = fg.sum(x) * np.arange(1.0, 5.0)
    return fg.lstsq(M, rhs), np.linalg.lstsq(m, np.sum(v) * np.arange(1.0, 5.0),
                                             rcond=None)[0], "lstsq(M, ·)"


_STEPS.append((0, _step_vocab))


@st.composite
def valid_graphs(draw, max_steps=4):
    """A Case whose graph is well-formed, built in a fresh fg.Graph."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    graph = fg.Graph()
    with graph:
        b = _Builder(draw, rng)
        x, v = b.leaf(b.shape())
        for _ in range(draw(st.integers(1, max_steps))):
            allowed = [f for min_rank, f in _STEPS if v.ndim >= min_rank]
            step = draw(st.sampled_from(allowed))
            x, v, label = step(b, x, v, draw)
            v = np.asarray(v, dtype=np.float64)
            b.steps.append(label)
            if v.size and np.max(np.abs(v)) > 4:   # keep values where differences are exact
                x, v = fg.tanh(x), np.tanh(v)
                b.steps.append("tanh")
    return Case(graph, b.inputs, b.feed, x, v, b.steps)


# -- the hostile strategy -----------------------------------------------------------------
def _static_shape(draw, max_rank=3):
    return tuple(draw(st.lists(st.integers(0, 3), max_size=max_rank)))


HOSTILE = {
    # name: (number of operands, fn(fg-or-np, draw-made params) -> callable on operands)
    "add": (2, lambda M, p: lambda a, c: a + c),
    "matmul": (2, lambda M, p: lambda a, c: a @ c),
    "dot": (2, lambda M, p: lambda a, c: M.dot(a, c)),
    "outer": (2, lambda M, p: lambda a, c: M.outer(a, c)),
    "where": (3, lambda M, p: lambda a, c, d: M.where(a > 0, c, d)),
    "sum": (1, lambda M, p: lambda a: M.sum(a, axis=p["axis"], keepdims=p["keepdims"])),
    "max": (1, lambda M, p: lambda a: M.max(a, axis=p["axis"], keepdims=p["keepdims"])),
    "logsumexp": (1, lambda M, p: lambda a: (_np_logsumexp if M is np else M.logsumexp)(
        a, p["axis"], p["keepdims"])),
    "softmax": (1, lambda M, p: lambda a: (np.exp(_np_log_softmax(a, p["int_axis"]))
                                           if M is np else M.softmax(a, p["int_axis"]))),
    "reshape": (1, lambda M, p: lambda a: M.reshape(a, p["shape"])),
    "transpose": (1, lambda M, p: lambda a: M.transpose(a, p["perm"])),
    "expand_dims": (1, lambda M, p: lambda a: M.expand_dims(a, p["int_axis"])),
    "squeeze": (1, lambda M, p: lambda a: M.squeeze(a, p["int_axis"])),
    "broadcast_to": (1, lambda M, p: lambda a: M.broadcast_to(a, p["shape"])),
    "concatenate": (2, lambda M, p: lambda a, c: M.concatenate([a, c], p["int_axis"])),
    "stack": (2, lambda M, p: lambda a, c: M.stack([a, c], p["int_axis"])),
    "getitem": (1, lambda M, p: lambda a: a[p["index"]]),
    "take": (1, lambda M, p: lambda a: M.take(a, p["indices"], p["int_axis"])),
    "trace": (1, lambda M, p: lambda a: M.trace(a)),
    "inv": (1, lambda M, p: lambda a: (np.linalg.inv if M is np else M.inv)(a)),
    "solve": (2, lambda M, p: lambda a, c: (np.linalg.solve if M is np else M.solve)(a, c)),
    "det": (1, lambda M, p: lambda a: (np.linalg.det if M is np else M.det)(a)),
}
HOSTILE.update({   # issue 22's reductions and scans on arbitrary axes
    "prod": (1, lambda M, p: lambda a: M.prod(a, axis=p["axis"], keepdims=p["keepdims"])),
    "cumsum": (1, lambda M, p: lambda a: M.cumsum(a, p["int_axis"])),
    "var": (1, lambda M, p: lambda a: M.var(a, axis=p["axis"], keepdims=p["keepdims"])),
    "split": (1, lambda M, p: lambda a: M.split(a, list(p["shape"]), p["int_axis"])[-1]),
    "pad": (1, lambda M, p: lambda a: M.pad(a, p["int_axis"])),
})


@st.composite
def hostile_ops(draw):
    """(name, operand shapes, params): one op on arbitrary static shapes and axes."""
    name = draw(st.sampled_from(sorted(HOSTILE)))
    n = HOSTILE[name][0]
    shapes = [_static_shape(draw) for _ in range(n)]
    params = {
        "axis": draw(st.one_of(st.none(), st.integers(-4, 4),
                               st.lists(st.integers(-4, 4), min_size=1, max_size=3).map(tuple))),
        "int_axis": draw(st.integers(-4, 4)),
        "keepdims": draw(st.booleans()),
        "shape": tuple(draw(st.lists(st.integers(-1, 4), max_size=3))),
        "perm": tuple(draw(st.lists(st.integers(-3, 3), max_size=3))),
        "index": tuple(draw(st.lists(st.one_of(
            st.integers(-4, 4), st.none(), st.just(Ellipsis),
            st.builds(slice, st.one_of(st.none(), st.integers(-4, 4)),
                      st.one_of(st.none(), st.integers(-4, 4)),
                      st.one_of(st.none(), st.integers(-2, 2).filter(bool))),
            st.lists(st.integers(-4, 4), min_size=1, max_size=3).map(np.array)),
            max_size=3))),
        "indices": np.array(draw(st.lists(st.integers(-4, 4), max_size=3)), dtype=np.int64),
    }
    return name, shapes, params


# -- special values: ±0, ±inf, NaN, subnormals and extremes through every op ---------------------
# (tests/test_special_values.py runs them on every executor against the raw graph)

_SPECIAL_UNARY = {
    "neg": lambda x: -x, "exp": fg.exp, "log": fg.log, "log1p": fg.log1p, "sqrt": fg.sqrt,
    "tanh": fg.tanh, "sin": fg.sin, "abs": fg.abs, "sign": fg.sign, "sigmoid": fg.sigmoid,
    "softplus": fg.softplus, "relu": fg.relu, "erf": fg.erf, "gelu": fg.gelu,
    "clip": lambda x: fg.clip(x, 0, 1), "leaky_relu": lambda x: fg.leaky_relu(x, 0.1),
    "elu": fg.elu, "square": lambda x: x * x, "pow_half": lambda x: x ** 0.5,
    "pow_m1": lambda x: x ** -1, "pow_3": lambda x: x ** 3, "times_2": lambda x: x * 2.0,
    "plus_big": lambda x: x + 1e308, "minus_neg_zero": lambda x: -0.0 - x,
    "where_int": lambda x: fg.where(x > 0, x, 0), "maximum_0": lambda x: fg.maximum(x, 0.0),
    "sum": lambda x: fg.sum(x), "mean": lambda x: fg.mean(x), "max": lambda x: fg.max(x),
    "logsumexp": lambda x: fg.logsumexp(x), "tie": lambda x: fg.maximum(x, x) - x,
    "mse": lambda x: fg.mse(x, x * 0.5 + 1.0), "bce": lambda x: fg.bce_with_logits(x, x * 0.5),
    "astype32": lambda x: fg.astype(x, "float32"),
}
_SPECIAL_BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "maximum": fg.maximum,
    "minimum": fg.minimum, "where": lambda a, b: fg.where(a > b, a, b),
    "add_neg": lambda a, b: a + (-b), "sub_neg": lambda a, b: a - (-b),
    "neg_mul_neg": lambda a, b: (-a) * (-b), "comparisons": lambda a, b: (a > b) * 1.0 + a,
}
SPECIAL_FEEDS = (0.0, -0.0, np.inf, -np.inf, np.nan, 1e-308, -5e-324, 1e308, -1e308, 1.0,
                 -1.0, 0.5, -2.0, 3.0, 1e-20, 710.0, -745.5, 3.5e38)


@st.composite
def special_programs(draw, max_steps=4):
    """(graph, feed, outputs): inputs of one shape family (0-d: the scalar path; 72
    entries: numba regions on the second call) and dtypes (float64, float32, and ints
    and bools beside them), fed values drawn from SPECIAL_FEEDS; a few ops of the
    tables above; the outputs are the last value, one other, and the gradients (and
    one second derivative) of its sum."""
    base = draw(st.sampled_from([(), (), (4,), (8, 9)]))
    dtype = draw(st.sampled_from(["float64", "float64", "float32"]))
    graph, feed, nodes = fg.Graph(), {}, []
    with graph:
        for i in range(draw(st.integers(1, 3))):
            shape = draw(st.sampled_from([base, base[-1:]]))
            dt = draw(st.sampled_from([dtype] * 4 + ["int32", "bool", "float32"]))
            p = fg.placeholder(f"p{i}", shape=shape, dtype=dt)
            n = int(np.prod(shape))
            if dt == "bool":
                values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
            elif dt == "int32":
                values = draw(st.lists(st.sampled_from([0, 1, -1, 7, 2 ** 31 - 1, -2 ** 31]),
                                       min_size=n, max_size=n))
            else:
                values = draw(st.lists(st.sampled_from(SPECIAL_FEEDS), min_size=n, max_size=n))
            with np.errstate(over="ignore"):
                feed[p] = np.array(values, dtype=np.float64 if dt[0] == "f" else dt
                                   ).astype(dt).reshape(shape)
            nodes.append(p)
        inputs = list(nodes)
        for _ in range(draw(st.integers(1, max_steps))):
            binary = draw(st.booleans())
            table = _SPECIAL_BINARY if binary else _SPECIAL_UNARY
            f = table[draw(st.sampled_from(sorted(table)))]
            args = [draw(st.sampled_from(nodes)) for _ in range(2 if binary else 1)]
            try:
                nodes.append(f(*args))
            except fg.FlowgradError:      # an op refusing these dtypes: its own tests
                pass
        outs = [nodes[-1], draw(st.sampled_from(nodes))]
        floats = [p for p in inputs if p.dtype.kind == "f"]
        if floats and outs[0].dtype.kind == "f":
            grads = fg.grad(fg.sum(outs[0] * outs[0]), floats)
            outs += grads + fg.grad(fg.sum(grads[0]), floats[:1])
    return graph, feed, outs
