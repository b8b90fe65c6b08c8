"""Run-time lengths as symbols: which ``None`` axes must agree, checked on every call.

A ``None`` in a placeholder's shape is a length known only when it is fed. The README
promises it matches its partner and is never a broadcast 1, so ``a * b`` of two
``(None,)`` placeholders says "a and b have one length", and ``a + c`` with ``c`` of
shape ``(5,)`` says "a has length 5". Each op's rule below lists the axes its node ties
together; a union-find over (node id, axis) joins them across the program's nodes.

``compile_checks`` runs once per Program and keeps only what concerns the placeholders:
a flat tuple of (slot, axis, group) to compare per call, so the per-call cost is a few
tuple reads, and none at all for a program without ``None`` lengths. An op without a
rule ties nothing: the checks may miss a mismatch there (numpy's error then names the
node), but never reject a valid feed.
"""
from __future__ import annotations

import numpy as np

from ..errors import FeedError, located

# -- what each op ties together -----------------------------------------------------------
# A rule gets (node shape, input shapes, attrs) and yields pairs (input index, input axis,
# output axis) meaning "this input axis has the output axis's length", or pairs of input
# axes (("in", i, a), ("in", j, b)) for operands that must agree without an output axis.

_BROADCAST = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "tie_weight",
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal",
    # one operand, same shape out: broadcasting of one is the identity
    "neg", "exp", "log", "tanh", "sin", "cos", "sign", "log1p", "sqrt", "abs",
    "sigmoid", "softplus", "relu", "zeros_like", "ones_like",
}


def _aligned(out_shape, in_shapes, which):
    """Right-aligned broadcasting of the inputs ``which`` against the output."""
    n = len(out_shape)
    for i in which:
        s = in_shapes[i]
        for a in range(len(s)):
            o = n - len(s) + a
            if s[a] != 1:  # a 1 broadcasts; a None or a known length matches the output
                yield (i, a, o)


def _broadcast(out, ins, attrs):
    n = len(out)
    for o in range(n):
        axes = [(i, len(s) - n + o) for i, s in enumerate(ins) if len(s) >= n - o]
        known = [p for p in axes if ins[p[0]][p[1]] == out[o]] if out[o] is not None else []
        for i, a in axes:
            if ins[i][a] is None:
                # pin to the operand that fixes the length, so an error can name it
                yield ("in", (i, a), known[0]) if known else (i, a, o)


def _first_like(out, ins, attrs):  # max_weights(x, ans): out has x's shape
    return ((0, a, a) for a in range(len(out)))


def _second_like(out, ins, attrs):  # broadcast_like / reshape_like(x, ref): ref's shape
    yield from ((1, a, a) for a in range(len(out)))


def _broadcast_like(out, ins, attrs):
    yield from _second_like(out, ins, attrs)
    yield from _aligned(out, ins, (0,))


def _to_target(out, ins, attrs):  # broadcast_to(x, shape), sum_to(x, shape)
    return _aligned(out, ins, (0,))


def _sum_to(out, ins, attrs):
    # x is summed down to out: x's axes where out is 1 are free, the others agree
    x, n = ins[0], len(out)
    for a in range(n):
        xa = len(x) - n + a
        if out[a] != 1 and x[xa] != 1:
            yield (0, xa, a)


def _transpose(out, ins, attrs):
    return ((0, src, o) for o, src in enumerate(attrs["axes"]))


def _expand_dims(out, ins, attrs):
    kept = [o for o in range(len(out)) if o not in attrs["axis"]]
    return ((0, a, o) for a, o in enumerate(kept))


def _squeeze(out, ins, attrs):
    kept = [a for a in range(len(ins[0])) if a not in attrs["axis"]]
    return ((0, a, o) for o, a in enumerate(kept))


def _reduce(out, ins, attrs):
    axes, keep = attrs["axis"], attrs["keepdims"]
    o = 0
    for a in range(len(ins[0])):
        if a in axes:
            o += 1 if keep else 0
            continue
        yield (0, a, o)
        o += 1


def _concatenate(out, ins, attrs):
    axis = attrs["axis"]
    for i, s in enumerate(ins):
        for a in range(len(s)):
            if a != axis:
                yield (i, a, a)


def _concat_part(out, ins, attrs):
    # concat_part(g, offsets) and concat_unpart(x, offsets): a block of g along axis, or
    # x put back as one; every other axis is the first input's
    axis = attrs["axis"]
    for a in range(len(out)):
        if a != axis:
            yield (0, a, a)


def _matmul(out, ins, attrs):
    a, b = ins
    ka = (0, len(a) - 1)
    kb = (1, 0) if len(b) == 1 else (1, len(b) - 2)
    yield ("in", ka, kb)  # the contracted lengths agree
    if len(a) == 1 and len(b) == 1:
        return
    if len(b) == 1:
        yield from ((0, i, i) for i in range(len(a) - 1))
        return
    if len(a) == 1:
        yield from ((1, i, i) for i in range(len(b) - 2))
        yield (1, len(b) - 1, len(out) - 1)
        return
    n = len(out)
    yield (0, len(a) - 2, n - 2)
    yield (1, len(b) - 1, n - 1)
    batch = out[:-2]
    yield from _aligned(batch, (a[:-2], b[:-2]), (0, 1))


def _square_same(out, ins, attrs):  # inv, eigh_vectors: square, out shaped like x
    n = len(ins[0])
    yield ("in", (0, n - 1), (0, n - 2))
    yield from ((0, a, a) for a in range(n))


def _square_batch(out, ins, attrs):  # det, logdet (batch out), eigvalsh (batch + n), eigh_top
    n = len(ins[0])
    yield ("in", (0, n - 1), (0, n - 2))
    yield from ((0, a, a) for a in range(len(out)))


def _solve(out, ins, attrs):
    a, b = ins
    n = len(a)
    yield ("in", (0, n - 1), (0, n - 2))
    if len(b) == 1:
        yield ("in", (0, n - 1), (1, 0))
        yield from ((0, i, i) for i in range(n - 1))
        return
    yield ("in", (0, n - 1), (1, len(b) - 2))
    m = len(out)
    yield (1, len(b) - 2, m - 2)
    yield (1, len(b) - 1, m - 1)
    yield from _aligned(out[:-2], (a[:-2], b[:-2]), (0, 1))


def _linear(out, ins, attrs):  # linear(x, w[, b]): matmul (or scalar scaling), then a bias
    x, w = ins[0], ins[1]
    if len(x) == 0 or len(w) == 0:
        yield from _broadcast(out, (x, w), attrs)
    else:
        yield from _matmul(out, (x, w), attrs)
    if len(ins) > 2:
        yield from _aligned(out, ins, (2,))


def _pair(out, ins, attrs):  # mse, bce_with_logits: target shape = prediction shape
    y, t = ins
    if len(t) == len(y):  # else a plain-number target
        yield from (("in", (0, a), (1, a)) for a in range(len(y)))
    if len(out) == len(y):  # reduction="none"
        yield from ((0, a, a) for a in range(len(y)))


def _softmax_ce(out, ins, attrs):
    z, t = ins
    axis = attrs["axis"]
    rows = [a for a in range(len(z)) if a != axis]
    if attrs["labels"]:  # class indices: z's shape without the class axis
        yield from (("in", (0, a), (1, k)) for k, a in enumerate(rows))
    else:                # probability rows: z's shape
        yield from (("in", (0, a), (1, a)) for a in range(len(z)))
    if out:              # reduction="none": one loss per row
        yield from ((0, a, k) for k, a in enumerate(rows))


def _like_first(out, ins, attrs):  # random draws shaped like their reference's None axes
    if ins and len(ins[0]) == len(out):
        yield from ((0, a, a) for a in range(len(out)) if out[a] is None)


def _argmax(out, ins, attrs):
    n = len(ins[0])
    yield from _reduce(out, ins, {"axis": (attrs["axis"] % n,), "keepdims": attrs["keepdims"]})


def _one_hot(out, ins, attrs):
    skip = attrs["axis"] % len(out)
    yield from ((0, a, o) for a, o in enumerate(o for o in range(len(out)) if o != skip))


RULES = {name: _broadcast for name in _BROADCAST}
RULES.update({"linear": _linear, "mse": _pair, "bce_with_logits": _pair,
              "softmax_cross_entropy": _softmax_ce, "argmax": _argmax, "one_hot": _one_hot,
              "random_normal": _like_first, "random_uniform": _like_first,
              "random_bernoulli": _like_first})
RULES.update({
    "max_weights": _first_like, "reshape_like": _second_like,
    "broadcast_like": _broadcast_like, "broadcast_to": _to_target, "sum_to": _sum_to,
    "transpose": _transpose, "expand_dims": _expand_dims, "squeeze": _squeeze,
    "sum": _reduce, "mean": _reduce, "max": _reduce, "logsumexp": _reduce, "norm2": _reduce,
    "concatenate": _concatenate, "concat_part": _concat_part, "concat_unpart": _concat_part,
    "matmul": _matmul,
    "inv": _square_same, "eigh_vectors": _square_same,
    "det": _square_batch, "logdet": _square_batch, "eigvalsh": _square_batch,
    "eigh_top": _square_batch,
    "solve": _solve,
})


# -- issue 21/22's ops (one block) ----------------------------------------------------------

def _same_axes(out, ins, attrs):  # cumsum, astype, stop_gradient …: out has x's shape
    return ((0, a, a) for a in range(len(out)))


def _pad(out, ins, attrs):
    # a padded axis is longer than x's by a known amount: only unpadded axes agree
    return ((0, a, a) for a, (b, e) in enumerate(attrs["widths"]) if b == 0 and e == 0)


def _einsum(out, ins, attrs):
    # every axis under one letter has one length (einsum refuses a broadcast 1), and so
    # has the output's
    lhs, res = attrs["spec"].split("->")
    first = {}
    for i, term in enumerate(lhs.split(",")):
        for a, c in enumerate(term):
            if c in first:
                yield ("in", first[c], (i, a))
            else:
                first[c] = (i, a)
    for o, c in enumerate(res):
        if c in first:
            yield first[c] + (o,)


def _batch_of_matrices(out, ins, attrs):  # qr, svd: their batch axes are x's
    yield from ((0, a, a) for a in range(len(ins[0]) - 2))


def _trace(out, ins, attrs):
    kept = [a for a in range(len(ins[0])) if a not in (attrs["axis1"], attrs["axis2"])]
    return ((0, a, o) for o, a in enumerate(kept))


def _mask(out, ins, attrs):
    return ((0, a, a) for a in (attrs["axis1"], attrs["axis2"]))


def _kept_sizes(kernel, attrs):
    """The spatial axes (2, 3) a convolution keeps at their length: stride 1 and
    padding that adds back what the window takes ("same" with an odd window)."""
    pads, stride = attrs["pads"], attrs["stride"]
    return [2 + d for d in (0, 1)
            if stride[d] == 1 and pads[2 * d] + pads[2 * d + 1] == kernel[d] - 1]


def _conv2d(out, ins, attrs):  # (N, C, H, W) * (F, C, kh, kw) -> (N, F, H', W')
    yield ("in", (0, 1), (1, 1))
    yield (0, 0, 0)
    yield (1, 0, 1)
    yield from ((0, a, a) for a in _kept_sizes(ins[1][2:], attrs))


def _conv2d_grad_x(out, ins, attrs):  # (g, w, x) -> x's shape; g has the conv's shape
    yield from ((2, a, a) for a in range(4))
    yield ("in", (0, 0), (2, 0))
    yield ("in", (0, 1), (1, 0))
    yield ("in", (1, 1), (2, 1))
    yield from (("in", (0, a), (2, a)) for a in _kept_sizes(ins[1][2:], attrs))


def _conv2d_grad_w(out, ins, attrs):  # (x, g) -> (F, C, kh, kw)
    yield ("in", (0, 0), (1, 0))
    yield (1, 1, 0)
    yield (0, 1, 1)
    yield from (("in", (0, a), (1, a)) for a in _kept_sizes(attrs["kernel"], attrs))


def _pool(out, ins, attrs):  # max_pool2d, avg_pool2d: batch and channels kept
    yield (0, 0, 0)
    yield (0, 1, 1)


def _pool_back(out, ins, attrs):
    # (g, x) -> x's shape: max_pool2d_scatter, avg_pool2d_grad; g has the pooled shape
    yield from ((1, a, a) for a in range(4))
    yield ("in", (0, 0), (1, 0))
    yield ("in", (0, 1), (1, 1))


def _pool_gather(out, ins, attrs):  # (u, x) -> the pooled shape; u has x's shape
    yield from (("in", (0, a), (1, a)) for a in range(4))
    yield (1, 0, 0)
    yield (1, 1, 1)


_CONSUMING = ("i", "s", "a", "t")   # getitem's items that consume one axis of x


def _getitem(out, ins, attrs):
    """x[index] (ops/indexing.py's tagged items): a whole-axis slice keeps its axis, a
    tensor index's axes are the result's broadcast index axes (take, split, embedding)."""
    items = list(attrs["index"])
    fill = [("s", None, None, None)] * (len(ins[0]) - sum(it[0] in _CONSUMING for it in items))
    k = next((p for p, it in enumerate(items) if it[0] == "e"), None)
    items = items[:k] + fill + items[k + 1:] if k is not None else items + fill
    advanced = [p for p, it in enumerate(items) if it[0] in "at" or
                it[0] == "i" and any(j[0] in "at" for j in items)]
    n_adv = len(out) - sum(it[0] in "sn" for it in items)   # the broadcast index's rank
    adjacent = advanced == list(range(advanced[0], advanced[0] + len(advanced))) \
        if advanced else True
    o = n_adv if not adjacent else 0
    axis, start = 0, None
    for p, it in enumerate(items):
        if p in advanced:
            if start is None:
                start = o if adjacent else 0
                o += n_adv if adjacent else 0
            if it[0] == "t":   # a tensor index: its axes, right-aligned in the broadcast
                t = ins[1 + it[1]]
                yield from ((1 + it[1], a, start + n_adv - len(t) + a)
                            for a in range(len(t)) if t[a] != 1)
        elif it[0] == "n":
            o += 1
            continue
        elif it[0] == "s":
            if it[1:] in ((None, None, None), (None, None, 1), (None, None, -1)):
                yield (0, axis, o)
            o += 1
        axis += 1


def _scatter_add(out, ins, attrs):
    """scatter_add(g, x, *tensors): x's shape, g shaped as x[index] (getitem's adjoint)."""
    yield from ((1, a, a) for a in range(len(out)))
    for i, a, o in _getitem(ins[0], ins[1:], attrs):
        yield ("in", (i + 1, a), (0, o))


def _reshape(out, ins, attrs):
    """One run-time length in and one out, the known lengths holding as many entries on
    both sides: the two are one length ((None, 6) -> (-1, 2, 3))."""
    x = ins[0]
    if x.count(None) != 1 or out.count(None) != 1:
        return
    known_in = int(np.prod([n for n in x if n is not None]))
    known_out = int(np.prod([n for n in out if n is not None]))
    if known_in == known_out != 0:
        yield (0, x.index(None), out.index(None))


def _one_hot_like(out, ins, attrs):  # (labels, ref): ref's shape, labels without the axis
    yield from ((1, a, a) for a in range(len(out)))
    rows = [a for a in range(len(out)) if a != attrs["axis"] % len(out)]
    yield from (("in", (0, k), (1, a)) for k, a in enumerate(rows))


RULES.update({name: _broadcast for name in (
    "clip", "leaky_relu", "elu", "gelu", "erf", "tan", "normal_cdf")})
RULES.update({name: _same_axes for name in (
    "cumsum", "astype", "stop_gradient", "custom_input", "embedding_index")})
RULES.update({name: _same_axes for name in ("conj", "real", "imag")})   # complex parts
RULES.update({
    "custom_call": _first_like, "remat_after": _first_like,   # x's value (the rest: order)
    "var": _reduce, "prod": _reduce, "pad": _pad, "einsum": _einsum,
    "cholesky": _square_same, "qr": _batch_of_matrices, "svd": _batch_of_matrices,
    "trace": _trace, "mask": _mask, "getitem": _getitem, "scatter_add": _scatter_add,
    "one_hot_like": _one_hot_like, "reshape": _reshape,
    "conv2d": _conv2d, "conv2d_grad_x": _conv2d_grad_x, "conv2d_grad_w": _conv2d_grad_w,
    "max_pool2d": _pool, "avg_pool2d": _pool, "max_pool2d_scatter": _pool_back,
    "avg_pool2d_grad": _pool_back, "max_pool2d_gather": _pool_gather,
})



# -- issue 20's loops (one block) ------------------------------------------------------------
# A loop's inputs are its carries, then (scan) its xs, then captures; loop_out reads result
# k of the loop with the loop's inputs after it (input i + 1 is the loop's input i).

def _loop(out, ins, attrs):
    """A scan's xs share their leading length T."""
    spec = attrs["spec"]
    if spec.kind == "scan":
        xs = range(spec.n_carry, spec.n_carry + spec.n_xs)
        yield from (("in", (xs[0], 0), (i, 0)) for i in xs[1:])


def _loop_out(out, ins, attrs):
    """A final carry has its initial carry's shape (a body keeps it); a scan's ys and
    stacked carries have T = the xs' leading length in front."""
    spec = attrs["spec"]          # the loop's, added by compile_checks (INPUT_ATTRS)
    role, k = spec.role(attrs["index"])
    if spec.kind == "cond":
        return
    if role == "final":
        yield from ((k + 1, a, a) for a in range(len(out)))
        return
    if spec.n_xs:
        yield (1 + spec.n_carry, 0, 0)
    if role == "stack":
        yield from ((k + 1, a, a + 1) for a in range(len(out) - 1))


RULES.update({"loop": _loop, "loop_out": _loop_out})


def _shaped_like(out, ins, attrs):
    """shaped_like(t, x) (flowgrad/seeds.py): a derivative's seed has its input's shape,
    axis by axis, never broadcast; the value is t's."""
    yield from (("in", (0, a), (1, a)) for a in range(len(out)))
    yield from ((0, a, a) for a in range(len(out)))


RULES["shaped_like"] = _shaped_like

#: op name -> (attribute, input position): a rule that needs an attribute of an input's
#: node gets it among its own attrs (a loop result's rule reads its loop's spec)
INPUT_ATTRS = {"loop_out": ("spec", 0)}

# -- the union-find ------------------------------------------------------------------------

class _Classes:
    """Union-find over (node id, axis) of ``None`` axes; a class may be pinned to an int.
    A class pinned to two lengths (a (1,) node tied to one of length 3) can satisfy no
    feed: the second length is kept too (``clashes``), and checked as well, so that the
    call fails with the pair named instead of the node being broadcast."""

    def __init__(self):
        self.parent = {}
        self.pinned = {}  # root -> (length, node id, axis) that pinned it
        self.clashes = {}  # root -> [(length, node id, axis)] of other lengths pinned

    def find(self, x):
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression, iteratively
            parent[x], x = root, parent[x]
        return root

    def union(self, x, y):
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return
        self.parent[rx] = ry
        pins = [self.pinned.pop(rx, None)] + self.clashes.pop(rx, [])
        for pin in pins:
            if pin is not None:
                self._add(ry, pin)

    def pin(self, x, length, source):
        self._add(self.find(x), (length,) + source)

    def _add(self, root, pin):
        first = self.pinned.setdefault(root, pin)
        if first[0] != pin[0] and all(c[0] != pin[0] for c in self.clashes.get(root, ())):
            self.clashes.setdefault(root, []).append(pin)


def _tie(classes, data, p, q):
    """Join two axes ((node id, axis) each); a known length pins the other's class."""
    (ni, ai), (nj, aj) = p, q
    si, sj = data[ni].shape[ai], data[nj].shape[aj]
    if si is None and sj is None:
        classes.union(p, q)
    elif si is None:
        classes.pin(p, sj, q)
    elif sj is None:
        classes.pin(q, si, p)


def compile_checks(graph, order):
    """The per-call length checks of a program over ``order`` (ascending node ids): a
    list of ``(members, pin)``, one per class of run-time lengths that must agree —
    ``members`` the (placeholder id, axis) pairs in it, ``pin`` the length a node fixes
    for it as ``(length, node id, axis)``, or None — read by ``LengthCheck``; None when
    there is nothing to check."""
    data = graph.handles
    if not any(None in data[nid].shape for nid in order):
        return None
    classes = _Classes()
    for nid in order:
        d = data[nid]
        op = d.op
        if op is None:
            continue
        rule = RULES.get(op.name)
        if rule is None:
            continue
        ins = d.input_ids
        shapes = [data[i].shape for i in ins]
        if None not in d.shape and not any(None in s for s in shapes):
            continue
        attrs = d.attrs
        if op.name in INPUT_ATTRS:
            name, pos = INPUT_ATTRS[op.name]
            attrs = {**attrs, name: data[ins[pos]].attrs[name]}
        for link in rule(d.shape, shapes, attrs):
            if link[0] == "in":
                (i, a), (j, b) = link[1], link[2]
                _tie(classes, data, (ins[i], a), (ins[j], b))
            else:
                i, a, o = link
                _tie(classes, data, (ins[i], a), (nid, o))
    # group the placeholders' None axes by class
    groups = {}
    for nid in order:
        d = data[nid]
        if d.op is not None or d.kind != "placeholder":   # (op first: an op
            continue                                                # node leaves kind out)
        for a, s in enumerate(d.shape):
            if s is None:
                groups.setdefault(classes.find((nid, a)), []).append((nid, a))
    checks = []
    for root, members in groups.items():
        pin = classes.pinned.get(root)
        if len(members) > 1 or pin is not None:
            checks.append((members, pin))
        checks.extend((members, clash) for clash in classes.clashes.get(root, ()))
    return checks or None


class LengthCheck:
    """The compiled checks of one program: call it with the bound slot values."""

    __slots__ = ("_flat", "_first", "_graph")

    def __init__(self, graph, checks, slot):
        self._graph = graph
        # per group: the first member's (slot, axis) and the pinned length, or None
        flat, first = [], []
        for g, (members, pin) in enumerate(checks):
            first.append(pin)
            for nid, axis in members:
                flat.append((slot[nid], axis, g, nid))
        self._flat = tuple(flat)
        self._first = tuple(first)

    def __call__(self, vals):
        seen = list(self._first)
        for s, axis, g, nid in self._flat:
            n = vals[s].shape[axis]
            want = seen[g]
            if want is None:
                seen[g] = (n, nid, axis)
            elif want[0] != n:
                self.fail(nid, axis, n, want)

    def source(self, shapes, fail):
        """The same checks as lines of Python for a generated binder: ``shapes`` maps
        each placeholder slot to the name of a local holding its value's shape, ``fail``
        names this check's ``fail``. Members are compared in ``__call__``'s order, so
        the error names the same pair."""
        first = list(self._first)
        lines = []
        for s, axis, g, nid in self._flat:
            n = f"{shapes[s]}[{axis}]"
            want = first[g]
            if want is None:
                first[g] = (n, nid, axis)
                continue
            length, onid, oaxis = want
            length = length if type(length) is str else repr(length)
            lines += [f"if {n} != {length}:",
                      f"    {fail}({nid!r}, {axis!r}, {n}, ({length}, {onid!r}, {oaxis!r}))"]
        return lines

    def fail(self, nid, axis, n, want):
        """Raise the FeedError for slot value length ``n`` on ``nid``'s ``axis`` against
        ``want`` = (length, other node, its axis); generated binders call it too."""
        if n != n or want[0] != want[0]:
            return  # a dask array of unknown (nan) length: nothing to compare yet
        h = self._graph.handles
        length, onid, oaxis = want
        other = h[onid]
        what = "placeholder" if other.kind == "placeholder" else f"{other.kind} {other.op.name}" \
            if other.op is not None else other.kind
        raise located(
            FeedError,
            f"run-time lengths disagree: {h[nid].name!r} has length {n} on axis {axis}, but "
            f"{what} {other.name!r} has length {length} on axis {oaxis}, and the graph "
            f"needs them equal (a None length matches its partner; it is never a broadcast 1)")
