"""Seeded random graphs over the wave-3 features, for tests/test_fuzz_wave3.py.

``build_case(seed)`` draws a small graph from ``np.random.default_rng(seed)`` (so a seed
names one graph, on every machine): a base dtype (float64, float32, float16, complex64,
int32 or int8), a shape family (0-d, static, a run-time length ``None``, two axes), one or
two inputs of it (and, where a step wants one, an int or bool side input), then a few
steps, each of which keeps the shape and the dtype of the value it is given so that any
step follows any other:

* elementwise ops with weak Python scalars (``0.5 * x`` keeps float32 float32);
* identities the simplifier removes (``x * 1``, ``x + 0``, ``reshape`` to its shape): an
  output may be an input, and must still not alias the caller's array;
* ``fg.stop_gradient`` in forms whose derivative is still the function's (``x + sg(u) -
  sg(u)``, a stopped side input), so finite differences can judge it;
* ``fg.custom_vjp``/``fg.custom_jvp`` whose rules are the true derivatives;
* loops: ``fg.scan`` over the leading axis (either direction), ``fg.fori_loop`` with a
  static or a fed bound, ``fg.while_loop`` with an int counter in its carry, ``fg.cond``
  on a computed or a fed predicate;
* ``fg.vectorize`` of a per-example graph over the leading axis;
* nn layers: LayerNorm over the last axis, an Embedding looked up by an int side input.

The case holds two feeds (the second fresh: other values, other run-time lengths) and
the inputs that finite differences may check (float64 graphs only).
"""
from __future__ import annotations

import warnings

import numpy as np

import flowgrad as fg

FLOAT_DTYPES = ("float64", "float32", "float16")
DTYPES = ("float64", "float64", "float64", "float32", "float32", "float16", "complex64",
          "int32", "int8")
# (declared shape, true lengths of the two feeds); None marks a run-time length
SHAPES = (((), ((), ())), ((3,), ((3,), (3,))), ((None,), ((3,), (4,))),
          ((2, 3), ((2, 3), (2, 3))), ((None, 3), ((2, 3), (4, 3))))


class Case:
    """A drawn graph: its outputs, feeds (two dicts), the inputs finite differences
    check (``diff``), its base dtype and the labels of its steps."""

    def __init__(self, graph, outs, feeds, inputs, diff, dtype, steps, seed):
        self.graph, self.outs, self.feeds, self.inputs = graph, outs, feeds, inputs
        self.diff, self.dtype, self.steps, self.seed = diff, dtype, steps, seed

    def __repr__(self):
        return f"Case(seed={self.seed}, {self.dtype}: " + " -> ".join(self.steps) + ")"


def _values(rng, dtype, shape):
    """Feed values of ``dtype``: floats in [-1, 1] (away from 0 and kinks by chance),
    ints small and of both signs, complex with both parts."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.random(shape) < 0.5
    if kind in "iu":
        return rng.integers(-5, 6, shape).astype(dtype)
    v = rng.uniform(-1, 1, shape)
    if kind == "c":
        v = v + 1j * rng.uniform(-1, 1, shape)
    return v.astype(dtype)


class _Builder:
    """Grows a graph: ``pool`` holds nodes of the base shape and dtype; ``feeds`` two
    feed dicts; ``leaf`` adds a placeholder fed in both."""

    def __init__(self, rng, dtype, shape, lengths):
        self.rng, self.dtype, self.shape, self.lengths = rng, np.dtype(dtype), shape, lengths
        self.feeds, self.inputs, self.steps = [{}, {}], [], []
        self.exact_grads = self.dtype == np.float64
        self.stopped = set()       # inputs seen only through stop_gradient

    def leaf(self, shape, dtype, true=None, values=None):
        p = fg.placeholder(f"p{len(self.inputs)}", shape=shape, dtype=dtype)
        for k, feed in enumerate(self.feeds):
            t = self.lengths[k] if true is None else true
            feed[p] = values[k] if values is not None else _values(self.rng, dtype, t)
        self.inputs.append(p)
        return p

    @property
    def kind(self):
        return self.dtype.kind

    def scalar(self, v):
        """A weak Python scalar of the base kind (an int for int graphs)."""
        return int(round(v * 2)) or 1 if self.kind in "iu" else v


# -- steps: each takes (builder, x) and returns a node of x's shape and dtype -----------
def _elementwise(b, x):
    r = b.rng.integers(0, 6)
    if b.kind in "iu":
        return [x * 2 - 1, fg.maximum(x, 0) + x, fg.where(x > 1, x, -x), -x + 3,
                fg.minimum(x, 2) * x, fg.abs(x) - 1][r], "int-elementwise"
    if b.kind == "c":
        return [x * 0.5 + 1, x * x * 0.5, fg.exp(x * 0.3), fg.sin(x), 2.0 - x,
                x * fg.conj(x) * 0.5][r], "complex-elementwise"
    return [0.5 * x + fg.tanh(x), fg.sin(x) * 1.5, fg.exp(0.5 * x) - 1.0, x * x - 0.25,
            fg.where(x > 0.1, x, 0.3 * x), x / (x * x + 1.5)][r], "elementwise"


def _identity(b, x):
    r = b.rng.integers(0, 7)
    if r == 6:               # numpy's einsum of one operand is a view of it
        letters = "ijk"[:len(x.shape)]
        return fg.einsum(f"{letters}->{letters}", x), "einsum(identity)"
    one = 1 if b.kind in "iu" else 1.0
    zero = 0 if b.kind in "iu" else 0.0
    return [x * one, x + zero, one * x, x - zero, fg.reshape(x, tuple(
        -1 if n is None else n for n in x.shape)) if x.shape.count(None) <= 1 else x,
        fg.squeeze(fg.expand_dims(x, 0), 0)][r], "identity"


def _stop_gradient(b, x):
    """Forms whose derivative finite differences still see."""
    r = b.rng.integers(0, 3)
    if r == 0:
        u = x * x if b.kind != "c" else x
        return x + fg.stop_gradient(u) - fg.stop_gradient(u), "x+sg(u)-sg(u)"
    if r == 1:    # a side input the gradient does not ask about, stopped
        side = b.leaf(x.shape, b.dtype)
        b.stopped.add(side)
        return x * fg.stop_gradient(side * b.scalar(0.5) + b.scalar(1.0)), "x*sg(side)"
    b.exact_grads = False      # the value is x's, its gradient none: not for differences
    return fg.stop_gradient(x) * b.scalar(1.0) + x * 0 if b.kind in "iu" else \
        fg.stop_gradient(x) + 0.0 * x, "sg(x)"


@fg.custom_vjp
def _scaled_sin(x):
    return fg.sin(x) * 1.5


@_scaled_sin.defvjp
def _scaled_sin_vjp(g, ans, x):
    return (g * (1.5 * fg.cos(x)),)


@fg.custom_jvp
def _log1pexp(x):
    return fg.log1p(fg.exp(x))


@_log1pexp.defjvp
def _log1pexp_jvp(tangents, ans, x):
    return tangents[0] * fg.sigmoid(x)


@fg.custom_vjp
def _times_one(x):
    return x * 1.0


@_times_one.defvjp
def _times_one_vjp(g, ans, x):
    return (g,)


def _custom(b, x):
    if b.kind not in "f":
        return x, "custom(skipped)"
    r = b.rng.integers(0, 3)
    return [_scaled_sin, _log1pexp, _times_one][r](x), ["custom_vjp(sin)", "custom_jvp",
                                                         "custom_vjp(x*1)"][r]


def _row_step(b):
    """A scan step on one slice (carry and x of one shape)."""
    if b.kind in "iu":
        return lambda c, r: (c + r, c * 2 - r)
    if b.kind == "c":
        return lambda c, r: (c * 0.5 + r, c * r + 1.0)
    return lambda c, r: (c * 0.5 + fg.tanh(r), c * r + fg.sin(c))


def _scan(b, x):
    if len(x.shape) == 0:
        return _fori(b, x)
    reverse = bool(b.rng.integers(0, 2))
    init = x[0] * 0 if b.kind in "iu" else x[0] * 0.25
    c, ys = fg.scan(_row_step(b), init, x, reverse=reverse)
    return ys + c, f"scan(reverse={reverse})"


def _fori(b, x):
    if b.rng.integers(0, 2):
        n = b.leaf((), "int32", values=[np.int32(2), np.int32(3)])
        label = "fori(fed bound)"
    else:
        n, label = int(b.rng.integers(0, 3)), "fori(static)"
    if b.kind in "iu":
        body = (lambda i, c: c * 2 - fg.astype(i, c.dtype))
    elif b.kind == "c":
        body = (lambda i, c: c * 0.5 + 1.0)
    else:
        body = (lambda i, c: c * 0.75 + 0.25 * fg.sin(c))
    return fg.fori_loop(0, n, body, x), label


def _while(b, x):
    step = (lambda c: c + 1) if b.kind in "iu" else (lambda c: c * 0.5 + 0.25 * fg.tanh(c)) \
        if b.kind == "f" else (lambda c: c * 0.5)
    start = b.leaf((), "int8", values=[np.int8(0), np.int8(1)])
    out, _ = fg.while_loop(lambda c: c[1] < 3, lambda c: (step(c[0]), c[1] + 1),
                           (x, start))
    return out, "while(int8 counter)"


def _cond(b, x):
    if b.rng.integers(0, 2):
        pred = b.leaf((), "bool", values=[np.True_, np.False_])
        label = "cond(fed)"
    else:
        pred = fg.sum(fg.real(x) if b.kind == "c" else x) > 0
        label = "cond(sum>0)"
    if b.kind in "iu":
        return fg.cond(pred, lambda a: a * 2, lambda a: a, x), label
    return fg.cond(pred, lambda a: a * 0.5 + fg.sin(a), lambda a: a, x), label


def _vectorize(b, x):
    if len(x.shape) == 0:
        return _elementwise(b, x)
    b.n_examples = getattr(b, "n_examples", 0) + 1
    e = fg.placeholder(f"e{b.n_examples}", shape=x.shape[1:], dtype=x.dtype)
    if b.kind in "iu":
        y = e * fg.sum(e) + 1
    elif b.kind == "c":
        y = e * 0.5 + fg.sum(e) * 0.25
    else:
        y = fg.tanh(e) * fg.sum(e * e) + 0.5 * e
    return fg.vectorize(y, {e: x}), "vectorize"


def _layer_norm(b, x):
    if b.kind != "f" or len(x.shape) == 0 or x.shape[-1] is None:
        return _elementwise(b, x)
    ln = fg.nn.LayerNorm(x.shape[-1], dtype=str(b.dtype))
    return ln(x) * 0.5 + x, "layer_norm"


def _embedding(b, x):
    if b.kind != "f" or len(x.shape) == 0:
        return _elementwise(b, x)
    idx_shape = x.shape[:-1] if len(x.shape) > 1 else ()
    true = [tuple(t[:-1]) if len(t) > 1 else () for t in b.lengths]
    dims = [t[-1] for t in b.lengths]
    if dims[0] != dims[1]:        # the embedding's width is static
        return _elementwise(b, x)
    idx = b.leaf(idx_shape, "int64", values=[b.rng.integers(0, 4, t) for t in true])
    emb = fg.nn.Embedding(4, dims[0], dtype=str(b.dtype), seed=int(b.rng.integers(1000)))
    return x * emb(idx), "embedding"


STEPS = [_elementwise, _identity, _stop_gradient, _custom, _scan, _fori, _while, _cond,
         _vectorize, _layer_norm, _embedding]


def build_case(seed, max_steps=4) -> Case:
    """The graph of ``seed``: outputs are the last value, an earlier one (or an input)
    and, for float graphs, the gradients of a scalar loss for the inputs."""
    rng = np.random.default_rng(seed)
    dtype = DTYPES[rng.integers(len(DTYPES))]
    shape, lengths = SHAPES[rng.integers(len(SHAPES))]
    graph = fg.Graph()
    with graph:
        b = _Builder(rng, dtype, shape, lengths)
        x0 = b.leaf(shape, dtype)
        pool = [x0]
        if rng.integers(0, 2):
            pool.append(b.leaf(shape, dtype))
        x = pool[-1]
        for _ in range(rng.integers(1, max_steps + 1)):
            x, label = STEPS[rng.integers(len(STEPS))](b, x)
            if rng.integers(0, 3) == 0:       # join another value of the pool
                x = x + pool[rng.integers(len(pool))]
                label += " +pool"
            b.steps.append(label)
            pool.append(x)
        diff = [p for p in b.inputs if p.dtype == b.dtype and p not in b.stopped]
        outs = [x, pool[rng.integers(len(pool))]]
        if b.kind == "c":      # numpy's real part of a complex array is a view of it
            outs.append(fg.real(pool[rng.integers(len(pool))]))
        if b.kind in "fc":
            loss = fg.sum(fg.real(x * fg.conj(x)) if b.kind == "c" else fg.sin(x))
            grads = fg.grad(loss, diff)
            outs += grads
    case = Case(graph, outs, b.feeds, b.inputs, diff if b.exact_grads else [], dtype,
                b.steps, seed)
    case.grads = grads if b.kind in "fc" else []
    return case


# -- nn models: a layer of each kind on a run-time batch length, in each float dtype ------
def _conv_model(x):
    conv = fg.nn.Conv2D(3, 3, padding="same", seed=1, dtype=x.dtype)
    h = conv(x)
    return fg.nn.MaxPool2D(2)(fg.relu(h)) + fg.nn.AvgPool2D(2)(h), conv.variables


def _batch_norm_model(x):
    bn = fg.nn.BatchNorm(x.shape[1], dtype=x.dtype)
    return bn(x) * fg.sin(x), bn.variables


def _recurrent_model(cls):
    def model(x):
        layer = getattr(fg.nn, cls)(4, return_sequences=True, seed=2, dtype=x.dtype)
        return layer(x), layer.variables
    return model


NN_MODELS = {  # name: (model, declared input shape, the true shapes of the two feeds)
    "conv+pool": (_conv_model, (None, 2, 4, 4), ((2, 2, 4, 4), (3, 2, 4, 4))),
    "batch_norm": (_batch_norm_model, (None, 3, 2, 2), ((4, 3, 2, 2), (2, 3, 2, 2))),
    "lstm": (_recurrent_model("LSTM"), (None, None, 3), ((2, 3, 3), (3, 1, 3))),
    "gru": (_recurrent_model("GRU"), (None, None, 3), ((2, 3, 3), (1, 4, 3))),
    "rnn": (_recurrent_model("RNN"), (None, None, 3), ((2, 2, 3), (3, 3, 3))),
}


def nn_case(name, dtype, seed=0) -> Case:
    """An nn layer of ``name`` on a fed ``dtype`` input: its output and the gradients of
    a loss for the input and the layer's variables."""
    model, shape, lengths = NN_MODELS[name]
    rng = np.random.default_rng(seed)
    graph = fg.Graph()
    with graph:
        x = fg.placeholder("x", shape=shape, dtype=dtype)
        feeds = [{x: _values(rng, dtype, t)} for t in lengths]
        y, variables = model(x)
        grads = fg.grad(fg.sum(fg.tanh(y)), [x] + list(variables))
    case = Case(graph, [y] + grads, feeds, [x], [x] if dtype == "float64" else [], dtype,
                [name], seed)
    case.grads = grads
    return case


def call_quietly(prog, feed):
    """(outputs as a list, None) or (None, the exception), with numpy's warnings quiet
    (overflow of an int8 graph is numpy's wraparound, the same in every executor and
    backend); the differential tests compare either with the reference's."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return list(prog(feed)), None
        except Exception as exc:
            return None, exc
