"""Batching rules of loops (``loop``, ``loop_out``: ``fg.scan``, ``fg.fori_loop`` with
int bounds, the scans that are loops' derivatives, ``fg.while_loop``, ``fg.cond``), for
``fg.vectorize``.

A batched scan is a new scan whose step is the old body vectorized: the step inlines
the body (flowgrad/loops/body.py) on per-example stand-ins of its batched arguments
(entry 0 of each; never computed, the vectorized step reads the batched ones) and
batches what depends on them with ``fg.vectorize``. Which carries carry the batch is
found first, as a fixed point over the body's graph (a carry is batched when its
initial value is, or when its new value reads something batched), so a counter or a
state that no example changes stays unbatched. Batched xs are stacked on axis 1 for
the new scan, ``(T, B, …)``; its stacked results (ys, and the carries a derivative
reads) come back as ``(T, B, …)`` and are moved to ``(B, T, …)``. A loop nested in the
body is batched when the body is vectorized: one level of calls per level of nesting,
never a recursion over a graph's nodes.

A ``fg.cond`` whose predicate is the same for every example (a cond's derivatives, in
a Jacobian, are such conds) becomes a cond of its two branches vectorized; an output
batched in one branch is repeated per example in the other.

A while loop whose condition reads nothing batched (a counter against a bound: one
trip count for every example) becomes a while loop of its body vectorized.

Refused by name (``fg.jacobian`` then loops over basis vectors): a while loop whose
condition reads the batch (each example may need its own number of iterations), a cond
whose predicate carries the batch (each example may take its own branch), and loops
whose body draws random values (their recorded draws are per-loop, not per-example).
"""
from __future__ import annotations

from .ops import apply, astype, getitem, sum as fg_sum, transpose


def _refuse(node, why):
    from .batching import refuse
    return refuse(node, why)


def _batched_params(body, spec, bat):
    """Body node ids that carry the batch: the batched xs and captures, and the carries
    batched at the fixed point. Returns (ids, carry flags)."""
    n, nx = spec.n_carry, spec.n_xs
    caps = [bat[n + nx + i] for i in spec.caps_of[0]]
    ids = {p.id for p, f in zip(body.params[n:], bat[n:n + nx]) if f}
    ids |= {p.id for p, f in zip(body.cap_params, caps) if f}
    carry = list(bat[:n])
    reads = [set(body.graph.ancestors([o.id])) for o in body.outs[:n]]
    while True:
        live = ids | {p.id for p, f in zip(body.params[:n], carry) if f}
        new = [f or bool(r & live) for f, r in zip(carry, reads)]
        if new == carry:
            return live, carry
        carry = new


def _step(spec, batched_ids, flags):
    """The new scan's step: the body inlined on stand-ins, then vectorized."""
    from .loops.body import capture, inline
    from .vectorize import vectorize
    body, n = spec.bodies[0], spec.n_carry
    cap_flags = flags[spec.n_carry + spec.n_xs:]

    def step(carry, x, caps):
        keys, args = {}, []
        for v, p in zip(list(carry) + list(x), body.params):
            args.append(_stand_in(v, keys) if p.id in batched_ids else v)
        cap_in = [capture(c) for c in caps]
        cap_args = [_stand_in(v, keys) if f else v for v, f in zip(cap_in, cap_flags)]
        outs = inline(body, args, [cap_args[i] for i in spec.caps_of[0]])
        # an output that reads the batch, or a batched carry (one that no longer reads
        # it, e.g. reset to a constant, is repeated per example to keep its shape)
        reads = [bool(set(body.graph.ancestors([o.id])) & batched_ids) or
                 k < n and flags[k] for k, o in enumerate(body.outs)]
        todo = [o for o, r in zip(outs, reads) if r]
        done = iter(vectorize(todo, keys) if todo else [])
        outs = [next(done) if r else o for o, r in zip(outs, reads)]
        return outs[:n], outs[n:]
    return step


def _stand_in(batched, keys):
    """A per-example node for ``batched`` (its entry 0): a key of the vectorize map."""
    per = _example(batched)
    keys[per] = batched
    return per


def _example(batched):
    """A node of one example's shape and dtype read from ``batched``: its entry 0. It is
    never computed (the vectorized step reads the batched value), but it must build: a
    batch of static length 0 has no entry 0, so there the sum over the batch axis (cast
    back to the dtype, which a sum may widen) stands in."""
    if batched.shape[0] != 0:
        return getitem(batched, 0)
    per = fg_sum(batched, 0)
    return per if per.dtype == batched.dtype else astype(per, batched.dtype)


def _axis1(x):
    """(B, T, …) ↔ (T, B, …)."""
    return transpose(x, (1, 0) + tuple(range(2, len(x.shape))))


def loop(b, node, ins, bat):
    from .batching import Unbatched
    from .loops.build import build_scan
    spec = node.attrs["spec"]
    if spec.draw_slots:
        raise _refuse(node, f"the body of {spec.name} draws random values")
    if spec.kind == "cond":
        return Unbatched(_cond(b, node, spec, ins, bat))
    if spec.kind == "while":
        return Unbatched(_while(b, node, spec, ins, bat))
    n, nx = spec.n_carry, spec.n_xs
    batched_ids, carry_flags = _batched_params(spec.bodies[0], spec, bat)
    init = [x if f or not g else b.materialize(x)
            for x, f, g in zip(ins[:n], bat[:n], carry_flags)]
    xs = [_axis1(x) if f else x for x, f in zip(ins[n:n + nx], bat[n:n + nx])]
    flags = list(carry_flags) + list(bat[n:])
    inner = _step(spec, batched_ids, flags)
    caps = list(ins[n + nx:])
    new, _ = build_scan(lambda c, x: inner(c, x, caps), init, xs, reverse=spec.reverse,
                        length=spec.length, name=spec.name)
    return Unbatched(new)


def _while(b, node, spec, ins, bat):
    """A while loop whose condition reads nothing batched (one trip count for every
    example): a while loop of its body vectorized, its condition as it was."""
    from .loops.build import build_while
    from .loops.body import capture, inline
    n = spec.n_carry
    batched_ids, carry_flags = _batched_params(spec.bodies[0], spec, bat)
    test = spec.bodies[1]
    ids = {p.id for p, f in zip(test.params, carry_flags) if f}
    ids |= {p.id for p, j in zip(test.cap_params, spec.caps_of[1]) if bat[n + j]}
    if set(test.graph.ancestors([test.outs[0].id])) & ids:
        raise _refuse(node, f"the condition of {spec.name} reads the batch (each example "
                            f"may need its own number of iterations)")
    init = [x if f or not g else b.materialize(x)
            for x, f, g in zip(ins[:n], bat[:n], carry_flags)]
    inner = _step(spec, batched_ids, list(carry_flags) + list(bat[n:]))
    caps = list(ins[n:])

    def test_flat(carry):       # batched carries are never read: entry 0 stands for them
        args = [_example(v) if f else v for v, f in zip(carry, carry_flags)]
        return inline(test, args, [capture(caps[j]) for j in spec.caps_of[1]])[0]
    new, _ = build_while(test_flat, lambda c: inner(c, [], caps)[0], init, spec.max_iters,
                         name=spec.name)
    return new


def _cond(b, node, spec, ins, bat):
    """A cond whose predicate is the same for every example: a cond of its branches
    vectorized. An output is batched when it reads the batch in either branch."""
    from .loops.build import build_cond
    if bat[0]:
        raise _refuse(node, f"the predicate of {spec.name} carries the batch (each example "
                            f"may take its own branch); select with fg.where instead")
    n = spec.n_carry
    ops_, caps = list(ins[1:1 + n]), list(ins[1 + n:])
    flags = [False] * len(spec.bodies[0].outs)
    for k, body in enumerate(spec.bodies):
        ids = {p.id for p, f in zip(body.params, bat[1:1 + n]) if f}
        ids |= {p.id for p, j in zip(body.cap_params, spec.caps_of[k]) if bat[1 + n + j]}
        flags = [f or bool(set(body.graph.ancestors([o.id])) & ids)
                 for f, o in zip(flags, body.outs)]
    branches = [_branch(spec, k, bat[1:1 + n], bat[1 + n:], caps, flags) for k in (0, 1)]
    new, _ = build_cond(ins[0], branches[0], branches[1], ops_, name=spec.name)
    return new


def _branch(spec, k, op_flags, cap_flags, caps, flags):
    """Branch k inlined on stand-ins and vectorized; every batched capture is read
    (a stand-in for it even where the branch does not use it, so that the outputs
    batched in the other branch can be repeated here)."""
    from .loops.body import capture, inline
    from .vectorize import vectorize
    body = spec.bodies[k]

    def flat(params):
        keys = {}
        args = [_stand_in(p, keys) if f else p for p, f in zip(params, op_flags)]
        cap_in = {j: capture(c) for j, c in enumerate(caps)
                  if j in spec.caps_of[k] or cap_flags[j]}
        cap_args = {j: _stand_in(v, keys) if cap_flags[j] else v for j, v in cap_in.items()}
        outs = inline(body, args, [cap_args[j] for j in spec.caps_of[k]])
        done = iter(vectorize([o for o, f in zip(outs, flags) if f], keys)
                    if any(flags) else [])
        return [next(done) if f else o for o, f in zip(outs, flags)]
    return flat


def loop_out(b, node, ins, bat):
    """One result of a batched scan: a final carry as it is, a stacked one moved to
    (B, T, …); a result no example changes stays unbatched."""
    from .batching import Unbatched
    from .loops.loop_op import loop_out_op
    new, old = ins[0], node.inputs[0]
    if new is old:
        raise _refuse(node, "its loop was not batched")
    index = node.attrs["index"]
    out = apply(loop_out_op, new, *new.inputs, index=index)
    if len(out.shape) == len(node.shape):
        return Unbatched(out)
    spec = old.attrs["spec"]
    return out if spec.kind == "cond" or spec.role(index)[0] == "final" else _axis1(out)


LOOP_RULES = {"loop": loop, "loop_out": loop_out}
