"""``fg.vectorize``: a graph built for one example, batched over a leading axis.

``vectorize(outputs, {node: batched_node, ...})`` rebuilds, in the same graph, the
part of ``outputs``' ancestry that depends on a mapped node, op by op in id order
(a topological order: one pass, no recursion), each op through its batching rule
(flowgrad/batching.py, one table keyed by op name). Nodes that depend on no mapped
node are reused as they are, unbatched: a weight, a constant, a random draw (one
draw then serves every example). The outputs come back with a leading batch axis.

The batch length may be static or known only at run time (``None``). Static lengths
of two mapped values must agree; run-time lengths are compared when the program runs
(a batch of 1 is never broadcast against a batch of n).

Per-example gradients are the headline use: ``fg.vectorize(fg.grad(loss_i, w),
{x_i: X, t_i: T})`` is one node of shape ``(B,) + w.shape`` computed with batched
array ops, not a loop. ``fg.jacobian`` and ``fg.hessian`` are vectorized products
over an identity batch of basis vectors.
"""
from __future__ import annotations

import math

import numpy as np

from .batching import BatchingError, Unbatched, named, rule_for
from .errors import GraphError, ShapeError, UsageError, located
from .graph import Node, same_graph
from .ops.base import building_at

__all__ = ["vectorize", "BatchingError"]


def vectorize(outputs, mapping):
    """``outputs`` (a node or a list of nodes, built for one example) batched along a
    new leading axis: each key of ``mapping`` is a node of their graph, each value a
    node of the same graph with one more leading axis (the batch). Returns the node,
    or list of nodes, of shape ``(B,) + output.shape``.

    Raises ShapeError when a value lacks the batch axis, disagrees with its key's
    shape or dtype, or two values have different static batch lengths; GraphError for
    a key outside the outputs' graph; BatchingError (a UsageError) naming an op with
    no batching rule (see flowgrad/batching.py for the ops covered). A value may leave
    a per-example length to run time (``None``) where its key knows it: each call then
    checks the fed length against the key's (FeedError), at the cost of one copy.
    """
    outs, single = _as_nodes(outputs)
    if not isinstance(mapping, dict) or not mapping:
        raise located(UsageError,
                      "vectorize: mapping must be a non-empty dict {node: batched node}")
    graph = outs[0].graph
    same_graph(outs)
    pairs = [_held_to_key(graph, *_checked_pair(graph, k, v)) for k, v in mapping.items()]
    length = _batch_length(pairs)
    if len(pairs) > 1 and any(v.shape[0] is None for _, v in pairs):
        pairs = _lengths_checked(graph, outs, pairs)
    batcher = Batcher(graph, length, pairs[0][1])
    done = batcher.sub(outs, dict(pairs))
    return done[0] if single else done


def _lengths_checked(graph, outs, pairs):
    """With a run-time batch length, numpy would broadcast a batch of 1 against a batch
    of n without a word wherever the feed's length checks (flowgrad/engine/lengths.py) do not
    tie the two: the mapped values' lengths are compared on every run instead. A column
    of zeros per value is concatenated side by side (which fails unless every value has
    the same length), and the smallest value the outputs read is routed through a
    ``where`` on it, so that no output is computed without the comparison."""
    from flowgrad.ops import concatenate, expand_dims, getitem, not_equal, sum, where, \
        zeros_like
    cols = []
    for _, v in pairs:
        r = len(v.shape) - 1
        # (B, 1) from at most one entry a row (a per-example axis may have length 0)
        head = sum(getitem(v, (slice(None),) + (slice(0, 1),) * r), tuple(range(1, r + 1))) \
            if r else v
        cols.append(zeros_like(expand_dims(head, 1)))
    z = getitem(concatenate(cols, axis=1), (slice(None), 0))       # (B,): lengths equal
    same = not_equal(z, z)                                          # all False
    used = set(graph.ancestors([o.id for o in outs]))
    read = [k for k, (key, _) in enumerate(pairs) if key.id in used] or [0]
    k = min(read, key=lambda k: math.prod(s or 1 for s in pairs[k][1].shape[1:]))
    key, v = pairs[k]
    cond = expand_dims(same, tuple(range(1, len(v.shape)))) if len(v.shape) > 1 else same
    pairs = list(pairs)
    pairs[k] = (key, where(cond, v, v))
    return pairs


def _as_nodes(outputs):
    single = isinstance(outputs, Node)
    outs = [outputs] if single else list(outputs) if isinstance(outputs, (list, tuple)) \
        else None
    if not outs or not all(isinstance(o, Node) for o in outs):
        raise located(UsageError, f"vectorize: outputs must be a node or a non-empty list "
                                  f"of nodes, got {outputs!r}")
    return outs, single


def _checked_pair(graph, key, value):
    for what, n in (("key", key), ("value", value)):
        if not isinstance(n, Node):
            raise located(UsageError, f"vectorize: a mapping {what} must be a node, got "
                                      f"{type(n).__name__} {n!r}")
        if n.graph is not graph:
            raise located(GraphError, f"vectorize: the mapping {what} {n.name!r} is not a "
                                      f"node of the outputs' graph")
    per = value.shape[1:]
    if len(value.shape) != len(key.shape) + 1 or any(
            a is not None and b is not None and a != b for a, b in zip(per, key.shape)):
        raise located(ShapeError, f"vectorize: {value.name!r} {value.shape} must be "
                                  f"{key.name!r}'s shape {key.shape} with one leading batch "
                                  f"axis in front")
    if value.dtype != key.dtype:
        raise located(ShapeError, f"vectorize: {value.name!r} has dtype {value.dtype}, but "
                                  f"{key.name!r} has {key.dtype}")
    return key, value


def _held_to_key(graph, key, value):
    """``value`` held to ``key``'s known per-example lengths where it declares run-time
    ones (a generic ``(None, None)`` placeholder for examples of shape ``(3,)``): the
    rules build for the key's lengths, so a feed of rows of 4 would be read as other
    examples by a reshape, or summed over the wrong length, without a word. It is read
    through ``where(c, value, value)`` with a False ``c`` of those lengths (1 elsewhere):
    the value itself, bit for bit, whose run-time length rule ties each such axis to
    the key's length, so every call checks it (a FeedError naming the value). This
    costs one copy of the value per call; a value declared with the key's lengths
    needs none."""
    per = value.shape[1:]
    if not any(v is None and k is not None for v, k in zip(per, key.shape)):
        return key, value
    from flowgrad.ops import where
    from .leaves import constant_in
    tied = (1,) + tuple(k if v is None and k is not None else 1
                        for v, k in zip(per, key.shape))
    c = constant_in(graph, np.zeros(tied, bool), name=f"{key.name}'s lengths")
    return key, where(c, value, value)


def _batch_length(pairs):
    lengths = {v.shape[0] for _, v in pairs} - {None}
    if len(lengths) > 1:
        names = ", ".join(f"{v.name!r} {v.shape[0]}" for _, v in pairs)
        raise located(ShapeError, f"vectorize: the batched values disagree on the batch "
                                  f"length ({names})")
    if len(lengths) == 1 and all(v.shape[0] is not None for _, v in pairs):
        return lengths.pop()
    return None      # a run-time length somewhere: the batch length is known at run time


class Batcher:
    """Builds batched nodes; the helpers rules share (align, broadcast, materialize)."""

    def __init__(self, graph, length, ref):
        self.graph, self.length, self._ref = graph, length, ref
        self._lead = None
        self._batched = set()               # ids of nodes that carry the batch axis
        self._mapped = set()                # ids of the user's batched values

    def is_batched(self, node):
        """Whether ``node`` (an input a rule sees) carries the batch axis."""
        return node.id in self._batched

    def made_by_rule(self, node):
        """Whether ``node`` was built by this batcher (not one of the user's values, whose
        unbatched operands may have any shape), so its operands are per-example."""
        return node.id in self._batched and node.id not in self._mapped

    # -- the transform --------------------------------------------------------------
    def sub(self, outputs, mapping):
        """Batched versions of ``outputs`` (a node or a list), given {node: batched}."""
        single = isinstance(outputs, Node)
        outs = [outputs] if single else list(outputs)
        batched = {k.id: v for k, v in mapping.items()}
        self._batched.update(v.id for v in mapping.values())
        if not self._mapped:
            self._mapped.update(v.id for v in mapping.values())
        replaced = {}                       # id -> a rebuilt node the batch does not reach
        graph = self.graph
        for nid in graph.ancestors([o.id for o in outs]):
            if nid in batched:
                continue
            node = graph.node(nid)
            inputs = node.inputs
            if not any(i.id in batched or i.id in replaced for i in inputs):
                continue
            ins = [batched[i.id] if i.id in batched else replaced.get(i.id, i) for i in inputs]
            bat = [i.id in batched for i in inputs]
            with building_at(graph.site_of(nid)):   # the rebuilt nodes keep the user's line
                if not any(bat):
                    from flowgrad.ops import apply
                    replaced[nid] = apply(node.op, *ins, **node.attrs)
                    continue
                out = rule_for(node)(self, node, ins, bat)
            if isinstance(out, Unbatched):
                replaced[nid] = out.node
            else:
                batched[nid] = self._checked(node, out)
                self._batched.add(out.id)
        res = [batched[o.id] if o.id in batched else
               self.materialize(replaced.get(o.id, o)) for o in outs]
        return res[0] if single else res

    def _checked(self, node, out):
        """A rule's result must be the op's per-example shape behind one batch axis."""
        want = (self.length,) + node.shape
        if len(out.shape) != len(want) or any(
                a is not None and b is not None and a != b for a, b in zip(out.shape, want)):
            raise located(BatchingError, f"vectorize: the batching rule of {node.op.name!r} "
                                         f"gave shape {out.shape} for {named(node)}, "
                                         f"expected {want}")
        return out

    # -- helpers for rules -------------------------------------------------------------
    def align(self, x, r):
        """Batched ``x`` with length-1 axes after the batch axis: per-example rank ``r``."""
        from flowgrad.ops import expand_dims
        k = r - (len(x.shape) - 1)
        if k <= 0:
            return x
        out = expand_dims(x, tuple(range(1, k + 1)))
        self._batched.add(out.id)
        return out

    def lead(self, k):
        """A False boolean of shape (B,) + (1,) * k, B the run-time batch length."""
        from flowgrad.ops import expand_dims, getitem, not_equal, sum, zeros_like
        if self._lead is None:
            v, r = self._ref, len(self._ref.shape) - 1
            if None in v.shape[1:] or 0 in v.shape[1:]:
                col = sum(v, tuple(range(1, r + 1))) if r else v
            else:
                col = getitem(v, (slice(None),) + (0,) * r) if r else v
            z = zeros_like(col)
            self._lead = not_equal(z, z)
        return expand_dims(self._lead, tuple(range(1, k + 1))) if k else self._lead

    def materialize(self, u):
        """Unbatched ``u`` repeated along a new leading batch axis (a view if B is static)."""
        from flowgrad.ops import broadcast_to, expand_dims, where
        if self.length is not None and None not in u.shape:
            out = broadcast_to(expand_dims(u, 0), (self.length,) + u.shape)
        else:
            out = where(self.lead(len(u.shape)), u, u)
        self._batched.add(out.id)
        return out

    def broadcast(self, x, shape):
        """Batched ``x`` (already of per-example rank len(shape)) broadcast to
        (B,) + shape."""
        from flowgrad.ops import broadcast_to, where
        from .leaves import constant_in
        if self.length is not None and None not in shape:
            return broadcast_to(x, (self.length,) + tuple(shape))
        if None in shape:
            raise located(BatchingError, f"vectorize: cannot broadcast {x.name!r} to {shape} "
                                         f"with a run-time batch length")
        # a select, not x + 0: -0.0 + 0.0 is +0.0, and a select keeps x's values exactly
        no = constant_in(self.graph, np.zeros(shape, bool))
        return where(no, x, x)

    def reshape_to(self, x, node):
        """Batched ``x`` reshaped to (B,) + node.shape, node the per-example result."""
        from flowgrad.ops import reshape
        per = node.shape
        if per.count(None) == 0 and self.length is None and 0 in per:
            return self._empty_reshaped(x, per)
        if per.count(None) == 0:
            lead = -1 if self.length is None else self.length
            return reshape(x, (lead,) + per)
        if self.length is not None and per.count(None) == 1:
            return reshape(x, (self.length,) + tuple(-1 if s is None else s for s in per))
        raise located(BatchingError, f"vectorize: cannot reshape {x.name!r} to {per} behind "
                                     f"a batch axis with two run-time lengths "
                                     f"({named(node)})")

    def _empty_reshaped(self, x, per):
        """An empty example behind a run-time batch length: a -1 beside a 0 has no
        length, so the shape is read from a (B,) + per array of no entries."""
        from flowgrad.ops import apply
        from flowgrad.ops.shape import reshape_like
        from .leaves import constant_in
        ref = self.materialize(constant_in(self.graph, np.zeros(per, bool)))
        return apply(reshape_like, x, ref)

