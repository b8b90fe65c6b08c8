"""Undoing and doing numpy broadcasting, in one place for the whole library.

The reverse sweep passes every contribution for an input through
``sum_to_like`` and the forward sweep passes every tangent through
``broadcast_to_like``; op rules never think about broadcasting.
A ``None`` length is assumed to match its partner, never to be a broadcast 1.
"""
from __future__ import annotations

from .base import NONDIFF, Op, apply, float_dtype  # noqa: F401
from .shape import broadcast_to


def _sum_to(xp, x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
    if axes:
        x = xp.sum(x, axis=axes, keepdims=True)
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
        return apply(broadcast_like, node, ref)
    return broadcast_to(node, ref.shape)
