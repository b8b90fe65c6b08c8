"""Undoing and doing numpy broadcasting, in one place for the whole library.

The reverse sweep passes every contribution for an input through
``sum_to_like`` and the forward sweep passes every tangent through
``broadcast_to_like``; op rules never think about broadcasting.
A ``None`` length is assumed to match its partner, never to be a broadcast 1.

Helper ops that need only a run-time *shape* (``broadcast_like``, ``reduced_size``) take
it from ``shape_source(ref)``: the cheapest node known to have ``ref``'s shape, so that no
value is computed only to learn its shape.
"""
from __future__ import annotations

from .base import NONDIFF, Op, apply, float_dtype, summed  # noqa: F401
from .shape import broadcast_to


def _sum_to(xp, x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
    if axes:
        x = summed(xp, x, axes, True)     # float16 on dask: in float32 (base.summed)
    if lead:
        x = xp.reshape(x, x.shape[lead:])
    return x


def _sum_to_infer(x, shape):
    return shape, x.dtype


sum_to = Op(
    "sum_to", _sum_to, _sum_to_infer,
    vjp=(lambda g, ans, x, shape: broadcast_to_like(g, x),),
    multilinear=True,
    doc="Sum x down to ``shape`` (the adjoint of broadcasting): ∂/∂x is a broadcast.")


def _broadcast_like(xp, x, ref):
    return xp.broadcast_to(x, ref.shape)


broadcast_like = Op(
    "broadcast_like", _broadcast_like,
    lambda x, ref: (ref.shape, x.dtype),
    vjp=(lambda g, ans, x, ref: sum_to_like(g, x), NONDIFF),
    jvp=(lambda t, ans, x, ref: apply(broadcast_like, t, ref), NONDIFF),
    doc="Broadcast x to the run-time shape of ``ref`` (used when that shape has None).")


# Ops whose output's run-time shape is numpy's broadcast of their inputs' shapes (ufunc-like).
# An input of such an op whose static shape equals the output's has the output's run-time
# shape: a None length matches its partner and is never a broadcast 1 (the README's rule,
# checked per call for the placeholders' lengths; sum_to_like relies on it as well, since
# it does not sum an adjoint whose static shape is its input's already).
SHAPE_KEEPING = frozenset({
    "abs", "add", "clip", "cos", "div", "elu", "erf", "exp", "gelu", "leaky_relu", "log",
    "log1p", "maximum", "minimum", "normal_cdf", "pow", "relu", "sigmoid", "sin", "softplus",
    "sqrt", "sub", "tan", "tanh", "where", "mul", "neg", "sign", "astype", "stop_gradient",
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
})
_SOURCE_BUDGET = 32   # nodes looked at: a shape source is found near its reference


def shape_source(ref, dtype=None):
    """A node with ``ref``'s run-time shape that costs nothing more to compute: a
    placeholder if one is reachable, else the lowest-id node reached (an ancestor of
    ``ref``, so never more work than ``ref`` itself), walking down through
    ``SHAPE_KEEPING`` ops to inputs of the same static shape (and, when ``dtype`` is
    given, the same ``float_dtype``). ``ref`` itself when its shape has no None (its
    shape is then a constant) or nothing else qualifies. Breadth first, iterative, and
    bounded: the walk looks at ``_SOURCE_BUDGET`` nodes at most."""
    shape = ref.shape
    if None not in shape:
        return ref
    best, seen, queue = ref, {ref.id}, [ref]
    for cur in queue:
        if len(queue) > _SOURCE_BUDGET:
            break
        op = cur.op
        if op is None:
            if cur.kind == "placeholder":
                return cur   # fed: costs nothing
            continue
        if op.name not in SHAPE_KEEPING:
            continue
        for inp in cur.inputs:
            if inp.id in seen or inp.shape != shape or (
                    dtype is not None and float_dtype(inp.dtype) != dtype):
                continue
            seen.add(inp.id)
            queue.append(inp)
            if inp.id < best.id:
                best = inp
    return best


def sum_to_like(node, ref):
    """``node`` summed back to ``ref``'s shape: the adjoint of implicit broadcasting."""
    if node.shape == ref.shape:
        return node
    return apply(sum_to, node, shape=ref.shape)


def broadcast_to_like(node, ref):
    """``node`` broadcast up to ``ref``'s shape (a view, no copy)."""
    if node.shape == ref.shape:
        return node
    if None in ref.shape:
        return apply(broadcast_like, node, shape_source(ref))
    return broadcast_to(node, ref.shape)
