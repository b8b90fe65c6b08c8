"""Batching rules for ``fg.vectorize``: one table, ``RULES``, keyed by op name.

A rule receives the batcher ``b`` (see flowgrad/vectorize.py), the per-example node
being batched, its inputs as they now stand (``ins``) and which of them carry a
leading batch axis (``bat``, at least one does). It returns the node computing the
batched result — with the leading batch axis — or ``Unbatched(node)`` when the result
no longer depends on the example (a shape count, a mask). A rule may raise
``BatchingError`` for a case it does not cover; ``fg.jacobian`` then falls back to
its loop over basis vectors.

Adding an op: one line in ``RULES`` (most ops fit ``elementwise`` or ``shifted``); an
op declared ``Op(..., elementwise=True)`` needs none, it is batched by broadcasting.

Ops covered, by family:

* elementwise (numpy broadcasting; a batched operand of lower per-example rank is
  expanded after the batch axis so per-example ranks align): add sub mul (unbatched
  factors of a product gathered first) div neg pow
  exp log log1p sqrt abs tanh sin cos sign maximum minimum where tie_weight sigmoid
  softplus relu, the comparisons.
* reductions and axis ops (axes shifted by one): sum (a full sum of a product with an
  unbatched factor becomes one matrix-vector product) mean max logsumexp norm2
  max_weights argmax one_hot one_hot_like expand_dims squeeze concatenate trace;
  reduced_size, batch_norm_count and mask give unbatched results.
* shape: reshape (the batch length prepended, a run-time length included), transpose,
  broadcast_to, reshape_like, and the helpers gradients use, sum_to and broadcast_like;
  zeros_like, ones_like; concat_offsets, concat_part, concat_unpart (the blocks of a
  concatenation with run-time lengths, in its gradient).
* indexing (flowgrad/batching_index.py): getitem and scatter_add; constant indices get a
  full slice prepended; integer index *nodes* that carry the batch (an embedding lookup,
  ``take`` at per-example positions) and advanced indices split by a slice get a batch
  index ``arange(B)`` in front instead, so each example reads (or adds into) its own
  entries; embedding_index (the range check) runs on the whole batch (a bad index is
  named with its position in the batch).
* convolution and pooling (flowgrad/batching_conv.py): the batch merged into the
  images' N axis, or into the channels where examples must not mix (a batched kernel,
  the kernel's gradient, which sums over N); with both operands batched, the op written
  out per window offset with one einsum that keeps the examples apart.
* linear algebra, natively batched over leading axes (numpy's stacked matrices): inv,
  det, logdet, eigvalsh, eigh_vectors, eigh_top, cholesky, qr, svd; matmul and solve (per-example
  batch axes aligned, 1-d operands handled); linear.
* einsum (a fresh letter for the batch axis), var, prod, cumsum (axes shifted), pad (no
  padding of the batch axis), astype,
  stop_gradient (the ops of issue 22 and custom derivatives, where merged).
* custom functions and remat blocks (flowgrad/batching_calls.py): custom_input,
  remat_after and custom_call carry their first input's value. A batched call of a
  user's ``custom_vjp``/``custom_jvp`` function is differentiated with the user's rule
  applied example by example (the rule vectorized, as JAX vmaps a custom_vjp's rule),
  so its derivatives are those of the loop over examples, to every order. A remat
  block keeps its rule (a replay of the block from the graph), so either order works.
* loops (flowgrad/batching_loops.py): a scan (``fg.scan``, ``fg.fori_loop`` with int
  bounds, the scans that are loops' derivatives) becomes a scan of its body vectorized;
  carries that no example changes stay unbatched; batched xs and stacked results have
  the batch on axis 1 inside the loop and in front outside it. A cond whose predicate
  is the same for every example is a cond of its branches vectorized (a cond's
  derivatives are such conds), a while loop whose condition reads nothing batched is a
  while loop of its body vectorized. A while loop whose condition reads the batch, a
  cond whose predicate carries it and a body that draws random values are refused.
* fused ops with a ``decompose`` (mse, l2, bce_with_logits, softmax_cross_entropy,
  linear outside its plain case): their decomposition is batched.
* random draws: a draw that does not depend on a mapped input is one draw shared by
  every example (as any value computed outside the map); a draw whose shape reference
  (``like=``) carries the batch is refused.

Not covered (BatchingError naming the op): basis_map (a Jacobian built with
``method="map"``), the cases refused above, the ops listed in ``NOT_YET``, and any op
not in the table.
"""
from __future__ import annotations

from flowgrad.errors import UsageError, located
from flowgrad.ops import REGISTRY, apply, expand_dims, squeeze, sum as fg_sum, transpose
from flowgrad.ops import matmul as matmul_op, reshape as reshape_op
from flowgrad import batching_calls, batching_conv, batching_index, batching_loops


class BatchingError(UsageError):
    """``fg.vectorize`` cannot batch an op: it has no rule, or not for this case."""


class Unbatched:
    """A rule's answer when the result is the same for every example."""
    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node


def named(node):
    """``node 'name'``, with the line of the user's code that built it when known: a
    refusal is raised at the vectorize call, far from the per-example code it is about."""
    return f"node {node.name!r}" + (f", built at {node.where}" if node.where else "")


def refuse(node, why):
    """A BatchingError naming the op, its node and line, and the vectorize call's line."""
    return located(BatchingError, f"vectorize: op {node.op.name!r} ({named(node)}) cannot "
                                  f"be batched: {why}")


def _shift(axis):
    if isinstance(axis, tuple):
        return tuple(a + 1 for a in axis)
    return axis + 1


def rank(x, batched=True):
    """The per-example rank of ``x``."""
    return len(x.shape) - (1 if batched else 0)


# -- generic rules ---------------------------------------------------------------------

def elementwise(b, node, ins, bat):
    """numpy broadcasting: batched operands aligned to the output's per-example rank."""
    r = len(node.shape)
    args = [b.align(x, r) if f else x for x, f in zip(ins, bat)]
    return apply(node.op, *args, **node.attrs)


def mul_rule(b, node, ins, bat):
    """(P·u)·v with P batched, u and v not: P·(u·v), so the product of the unbatched
    factors is formed once per graph, not once per example (one batch-sized pass less;
    the rounding of a reassociated product). Only where both products are of the
    result's dtype: an int32 P·u wraps and a float32 P·u rounds before a float64 v
    widens it, which P·(u·v), computed in float64, would not."""
    if bat.count(True) == 1:
        p, v = (ins[0], ins[1]) if bat[0] else (ins[1], ins[0])
        if p.op is not None and p.op.name == "mul" and b.made_by_rule(p) and \
                p.dtype == node.dtype:
            pb, pu = p.inputs
            if b.is_batched(pu):
                pb, pu = pu, pb
            if b.is_batched(pb) and not b.is_batched(pu):
                uv = apply(node.op, pu, v)
                out = apply(node.op, b.align(pb, len(node.shape)), uv)
                if uv.dtype == out.dtype == node.dtype and out.shape[1:] == node.shape:
                    return out
    return elementwise(b, node, ins, bat)


def shifted(*names):
    """Every input given the batch axis; the axis attributes ``names`` shifted by one."""
    def rule(b, node, ins, bat):
        attrs = dict(node.attrs)
        for n in names:
            if n in attrs:
                if attrs[n] is None:     # "every axis" would take in the batch axis too
                    raise refuse(node, f"its {n}=None would include the batch axis")
                attrs[n] = _shift(attrs[n])
        args = [x if f else b.materialize(x) for x, f in zip(ins, bat)]
        return apply(node.op, *args, **attrs)
    rule.__doc__ = f"batch axis in front, attributes {names} shifted by one"
    return rule


_shift_axis = shifted("axis")


def unbatched_shape_op(*names):
    """An op of its input's shape only, length 1 along the batch axis: squeezed away."""
    inner = shifted(*names)

    def rule(b, node, ins, bat):
        return Unbatched(squeeze(inner(b, node, ins, bat), 0))
    return rule


def sum_rule(b, node, ins, bat):
    """A full per-example sum of a product with an unbatched factor is a matrix-vector
    product (one gemv, no batch-sized temporary); any other sum shifts its axes."""
    x = ins[0]
    if not node.attrs["keepdims"] and len(node.attrs["axis"]) == rank(x) >= 1:
        dot = _as_gemv(b, x)
        if dot is not None:
            return dot
    return _shift_axis(b, node, ins, bat)


def _as_gemv(b, x):
    if x.op is None or x.op.name != "mul":
        return None
    p, q = x.inputs
    if b.is_batched(q):
        p, q = q, p
    per = x.shape[1:]
    if b.is_batched(q) or not b.is_batched(p) or p.shape != x.shape or q.shape != per or \
            None in per or p.dtype != q.dtype or p.dtype.kind != "f":
        return None
    lead = -1 if b.length is None else b.length
    size = 1
    for s in per:
        size *= s
    if size == 0 and lead == -1:      # a -1 beside a 0 has no length: the plain sum
        return None
    return matmul_op(reshape_op(p, (lead, size)), reshape_op(q, (size,)))


def reduced_size(b, node, ins, bat):
    return Unbatched(apply(node.op, ins[0], axis=_shift(node.attrs["axis"])))


def batch_norm_count(b, node, ins, bat):
    # a count per example, the same for every one; its training flag must be one for all
    if bat[1]:
        raise refuse(node, "its training flag differs from example to example")
    return Unbatched(apply(node.op, *ins, axis=_shift(node.attrs["axis"])))


def decomposed(b, node, ins, bat):
    """A fused op batched through its decomposition into primitive ops."""
    if node.op.decompose is None:
        raise refuse(node, "no batching rule for this case and no decomposition")
    inputs = node.inputs                     # per-example nodes where the batch is,
    args = [i if f else x for i, x, f in zip(inputs, ins, bat)]   # rebuilt ones elsewhere
    out = node.op.decompose(*args, **node.attrs)
    return b.sub(out, {i: x for i, x, f in zip(inputs, ins, bat) if f})


# -- shape rules ---------------------------------------------------------------------------

def reshape(b, node, ins, bat):
    return b.reshape_to(ins[0], node)


def transpose_rule(b, node, ins, bat):
    return apply(node.op, ins[0], axes=(0,) + _shift(node.attrs["axes"]))


def broadcast_to(b, node, ins, bat):
    return b.broadcast(b.align(ins[0], len(node.shape)), node.shape)


def sum_to(b, node, ins, bat):
    """Sum the per-example leading extra axes (never the batch axis), then the 1-axes."""
    x, shape = ins[0], node.attrs["shape"]
    lead = rank(x) - len(shape)
    if shape == () and lead:                        # a full sum: maybe one gemv
        dot = _as_gemv(b, x)
        if dot is not None:
            return dot
    if lead:
        x = fg_sum(x, tuple(range(1, lead + 1)))
    if all(s == t for s, t in zip(x.shape[1:], shape)):
        return x
    return apply(node.op, x, shape=(b.length,) + tuple(shape))


def broadcast_like(b, node, ins, bat):
    x, ref = ins
    if not bat[1]:                                  # target: (B,) + ref's per-example shape
        if None not in ref.shape:
            return b.broadcast(b.align(x, len(ref.shape)), ref.shape)
        ref = b.materialize(ref)
    return apply(node.op, b.align(x, rank(ref)) if bat[0] else x, ref)


def reshape_like(b, node, ins, bat):
    x, ref = ins
    if not bat[0]:
        x = b.materialize(x)
    if not bat[1]:
        return b.reshape_to(x, node)
    return apply(node.op, x, ref)


# -- linear algebra ------------------------------------------------------------------------

def _align_stacks(b, ins, bat, core):
    """Batched operands given per-example stack axes (after the batch axis) so that
    every operand has as many as the most stacked one: numpy's broadcasting then lines
    the batch axis up in front. ``core``: the matrix rank of each operand."""
    depth = max(rank(x, f) - c for x, f, c in zip(ins, bat, core))
    return [b.align(x, depth + c) if f else x for x, f, c in zip(ins, bat, core)]


def _move_front(x, axis):
    """x with its axis ``axis`` (negative) moved to the front."""
    n = len(x.shape)
    axis %= n
    return transpose(x, (axis,) + tuple(k for k in range(n) if k != axis))


def matmul(b, node, ins, bat):
    (a, c), (fa, fc) = ins, bat
    ra, rc = rank(a, fa), rank(c, fc)
    if ra == 1 and rc == 1:
        if fa and fc:
            return fg_sum(a * c, 1)
        return apply(node.op, a, c) if fa else apply(node.op, c, a)
    if ra == 1:
        if fa and not fc:                  # (B, k) @ (..., k, n) -> (..., B, n)
            return _move_front(apply(node.op, a, c), -2)
        if fa:                             # a row per example, stacked like c
            a = expand_dims(b.align(a, rc - 1), -2)
            return squeeze(apply(node.op, a, c), -2)
        return apply(node.op, a, c)        # (k,) @ (B, ..., k, n)
    if rc == 1:
        if fc and not fa:                  # (..., m, k) @ (k, B) -> (..., m, B)
            return _move_front(apply(node.op, a, transpose(c)), -1)
        if fc:
            c = expand_dims(b.align(c, ra - 1), -1)
            return squeeze(apply(node.op, a, c), -1)
        return apply(node.op, a, c)        # (B, ..., m, k) @ (k,)
    a, c = _align_stacks(b, (a, c), bat, (2, 2))
    return apply(node.op, a, c)


def solve(b, node, ins, bat):
    a, c = ins
    vector = rank(c, bat[1]) == 1
    if vector:                             # a 1-d right-hand side: one column
        c = expand_dims(c, -1)
    a, c = _align_stacks(b, (a, c), bat, (2, 2))
    out = apply(node.op, a, c)
    return squeeze(out, -1) if vector else out


def linear(b, node, ins, bat):
    x, w = ins[0], ins[1]
    plain = bat[0] and not any(bat[1:]) and rank(x) >= 1 and len(w.shape) in (1, 2)
    if not plain:
        return decomposed(b, node, ins, bat)
    return apply(node.op, *ins)


def concat_offsets(b, node, ins, bat):
    """Where each block starts: read from the shapes alone, the same for every example."""
    args = [x if f else b.materialize(x) for x, f in zip(ins, bat)]
    return Unbatched(apply(node.op, *args, axis=node.attrs["axis"] + 1))


def concat_block(b, node, ins, bat):
    """concat_part / concat_unpart: the block's axis shifted; the offsets stay unbatched."""
    if bat[1]:
        raise refuse(node, "the block offsets carry the batch")
    return apply(node.op, *ins, **{**node.attrs, "axis": node.attrs["axis"] + 1})


def pad(b, node, ins, bat):
    """No padding along the batch axis."""
    return apply(node.op, ins[0], **{**node.attrs, "widths": ((0, 0),) + node.attrs["widths"]})


def einsum_rule(b, node, ins, bat):
    """A letter no term uses names the batch axis of each batched operand and of the
    result (einsum itself then lines the examples up)."""
    lhs, out = node.attrs["spec"].split("->")
    z = next(c for c in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA"
             if c not in lhs and c not in out)
    terms = [z + t if f else t for t, f in zip(lhs.split(","), bat)]
    return apply(node.op, *ins, spec=",".join(terms) + "->" + z + out)


def random_draw(b, node, ins, bat):
    raise refuse(node, "its shape reference (like=) carries the batch; draw outside the "
                 "vectorized function, or pass the batched shape reference yourself")


_ELEMENTWISE = ("add", "sub", "div", "neg", "pow", "exp", "log", "log1p", "sqrt",
                "abs", "tanh", "sin", "cos", "sign", "maximum", "minimum", "where",
                "tie_weight", "sigmoid", "softplus", "relu", "greater", "greater_equal",
                "less", "less_equal", "equal", "not_equal")
_NATIVE = ("inv", "det", "logdet", "eigvalsh", "eigh_vectors", "eigh_top", "zeros_like", "ones_like",
           "cholesky", "qr", "svd", "astype", "stop_gradient")
_AXIS = ("mean", "max", "logsumexp", "norm2", "max_weights", "argmax", "one_hot",
         "one_hot_like", "expand_dims", "squeeze", "concatenate", "var", "prod", "cumsum")

#: op name -> batching rule. One line per op; see the module docstring for the contract.
RULES = {
    **{name: elementwise for name in _ELEMENTWISE},
    **{name: shifted() for name in _NATIVE},
    **{name: shifted("axis") for name in _AXIS},
    "sum": sum_rule,
    "mul": mul_rule,
    "trace": shifted("axis1", "axis2"),
    "mask": unbatched_shape_op("axis1", "axis2"),
    "reduced_size": reduced_size,
    "batch_norm_count": batch_norm_count,
    "reshape": reshape,
    "reshape_like": reshape_like,
    "transpose": transpose_rule,
    "broadcast_to": broadcast_to,
    "sum_to": sum_to,
    "broadcast_like": broadcast_like,
    "getitem": batching_index.getitem,
    "scatter_add": batching_index.scatter_add,
    "embedding_index": shifted(),
    **batching_conv.CONV_RULES,
    **batching_calls.CALL_RULES,
    **batching_loops.LOOP_RULES,
    "matmul": matmul,
    "solve": solve,
    "linear": linear,
    "mse": decomposed,
    "l2": decomposed,
    "bce_with_logits": decomposed,
    "softmax_cross_entropy": decomposed,
    "pad": pad,
    "einsum": einsum_rule,
    "concat_offsets": concat_offsets,
    "concat_part": concat_block,
    "concat_unpart": concat_block,
    "random_normal": random_draw,
    "random_uniform": random_draw,
    "random_bernoulli": random_draw,
}


#: Ops that have no batching rule on purpose (fg.jacobian's basis loop is what vectorize
#: replaces); tests hold every other op of flowgrad to a line in RULES or elementwise=True.
WITHOUT_RULE = frozenset({"basis_map"})

#: Ops with no rule yet (vectorize refuses them with a BatchingError and fg.jacobian
#: falls back to its loop): none now; a new op's branch may list it here until it has one.
NOT_YET = frozenset()


def rule_for(node):
    """The batching rule of ``node``'s op, or a BatchingError saying where to add one.
    An op declared ``elementwise=True`` (its derivative is diagonal: each output entry
    reads only the matching input entries) batches by broadcasting without a line."""
    rule = RULES.get(node.op.name)
    if rule is None and node.op.elementwise:
        return elementwise
    if rule is None:
        raise located(
            BatchingError,
            f"vectorize: op {node.op.name!r} ({named(node)}) has no batching rule; "
            f"add one line for it to RULES in flowgrad/batching.py "
            f"(e.g. {node.op.name!r}: elementwise, or shifted('axis'))")
    return rule


def covered():
    """The registered ops that have a batching rule."""
    return sorted(n for n in RULES if n in REGISTRY)
