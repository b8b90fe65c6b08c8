"""The derivative rules of a loop's results (``loop_out``), as loops themselves.

Reverse mode, scan and while loop: the rule sits on the loop node itself
(``Op.vjp_results``): the reverse sweep hands it the cotangents of all the loop's results
a loss reads at once (final carries, stacked ys, and, at second order, the carry
stacks), and ONE scan in the opposite direction walks the iterations back, reading the
carry each iteration entered with (the forward stacked them): its body replays the
forward body on that carry (``inline``) and takes the vjp of the replay with the
cotangents of its outputs (the carry's, and step t's slice of each ys cotangent),
giving the cotangents of the carry before the step (plus step t's slice of a carry
stack's cotangent), of the step's x slice (stacked: the gradient of xs) and of the
captured nodes (summed over steps in extra carries). One backward loop for all
results: a replayed rule sees the sum of every result's contribution, as the loop
written out would.

Forward mode: a scan over the same stacked carries, carrying the carry's tangent; its
body replays the forward body and takes its jvp. A cond's rules are conds whose
branches are the branches' rules, so only the taken branch is differentiated.

Random draws in a body: a replay must not draw again (a gradient of other masks than
the forward's would be silently wrong). So the rules read the loop's "draw" results,
each iteration's draws as the forward made them (stacked like the carries, recorded
only once a rule reads them), and feed them to the replay in place of the random nodes.

Every backward or tangent body is traced once, when the rule runs; being loops, they
are differentiable in turn (second order through loops).
"""
from __future__ import annotations

from .body import capture, inline

__all__ = ["loop_vjp", "loop_jvp"]


def _is_float(node) -> bool:
    return node.dtype.kind in "fc"


def _cast(node, like):
    from ..ops import astype
    return node if node.dtype == like.dtype else astype(node, like.dtype)


def _split(spec, inputs):
    """(pred or None, leading inputs (carries / operands), xs, captures)."""
    if spec.kind == "cond":
        n = spec.n_carry
        return inputs[0], inputs[1:1 + n], [], inputs[1 + n:]
    nc, nx = spec.n_carry, spec.n_xs
    return None, inputs[:nc], inputs[nc:nc + nx], inputs[nc + nx:]


def _results(loop, inputs, indices):
    """The loop's results ``indices`` as ``loop_out`` nodes (building one that reads the
    stacked carries or the draws makes the forward keep them)."""
    from .loop_op import loop_out_op
    from ..ops.base import apply
    return [apply(loop_out_op, loop, *inputs, index=i) for i in indices]


def _stacks(spec, loop, inputs):
    """The carries each iteration entered with, stacked (after the finals and ys)."""
    first = spec.n_carry + spec.n_ys
    return _results(loop, inputs, range(first, first + spec.n_carry))


def _carry_shapes(spec, what, seeds, which, init):
    """The declared shapes of a derivative loop's carries seeded with ``seeds`` (the
    tangents or cotangents, ``what``, of the primal loop's carries ``which``, whose
    initial values are ``init``): the primal carries' declared shapes, a run-time
    length included (``init`` may know more: the tangent carried by a jvp loop). The
    body's rule, replayed on the primal carries, yields their shape, so a seed of a
    more static shape (a NumPy tangent of shape (3,) for a carry of shape (None,))
    could not stay the carry's shape. A seed whose shape contradicts its carry's is a
    ShapeError naming both (not "carry entry 0" of the derivative loop)."""
    from ..errors import ShapeError
    from ..ops.base import fmt_shape
    shapes = [spec.out_shapes[k] for k in which]
    for seed, k, b in zip(seeds, which, shapes):
        a = seed.shape
        if len(a) != len(b) or any(x is not None and y is not None and x != y
                                   for x, y in zip(a, b)):
            raise ShapeError(
                f"{spec.name} built at {spec.where}: the {what} of its carry "
                f"{init[k].name!r} has shape {fmt_shape(a)}, but that carry has shape "
                f"{fmt_shape(b)}; a {what} has the shape of what it is the {what} of")
    return shapes


def _body_caps(spec, k, caps):
    return [caps[i] for i in spec.caps_of[k]]


def _vdot_sum(pairs):
    """Σ re sum(a · conj(b)) over the pairs (output, cotangent): a real scalar whose
    gradient is the vjp, in PyTorch's convention for complex values too (a complex
    Σ a·b, differentiated as if real, conjugated some of a complex carry's factors and
    not others). Real pairs build Σ sum(a * b), no conj or real node."""
    from ..ops import conj, real, sum as fg_sum
    total = None
    for a, b in pairs:
        term = fg_sum(real(a * conj(b)))
        total = term if total is None else total + term
    return total


def _grads(s, wrt):
    from ..autodiff import grad
    from ..ops import zeros_like
    if s is None or not wrt:
        return [zeros_like(w) for w in wrt]
    return [_cast(g, w) for g, w in zip(grad(s, list(wrt)), wrt)]


def _nested(spec):
    """The specs of the loops inside the bodies a replay of ``spec`` runs (a while
    loop's condition is not replayed: the recorded trip count stands for it)."""
    from .loop_op import is_loop
    bodies = spec.bodies[:1] if spec.kind == "while" else spec.bodies
    return [n.attrs["spec"] for b in bodies for n in b.graph.nodes if is_loop(n)]


def _refuse_nested_draws(spec):
    """A body's own draws, and those of the loops inside it, are recorded and fed back
    (the module docstring). One case is not: a while loop inside a body whose
    condition draws while its body does not (no record holds its trip count). Its
    replay would draw other values, so it is refused, naming the loop and the op."""
    from .loop_op import is_loop
    from ..errors import DifferentiationError
    todo = _nested(spec)
    while todo:
        s = todo.pop()
        if s.draw_slots:                   # replayed from its records: look inside
            todo.extend(_nested(s))
            continue
        for body in s.bodies:              # replayed by drawing again: must not draw
            for node in body.graph.nodes:
                if node.op is not None and node.op.stateful and not is_loop(node):
                    raise DifferentiationError(
                        f"{spec.name} built at {spec.where}: the condition of {s.name} "
                        f"(built at {s.where}) inside its body draws random values "
                        f"({node.op.name}), and its derivative would run that loop again "
                        "with other draws; draw the noise outside and pass it in")
                if is_loop(node):
                    todo.append(node.attrs["spec"])


def replay(spec, inputs, records):
    """Loop ``spec`` (inside a body being replayed) rebuilt on ``inputs`` with its
    draws read from ``records``, its draw results as the forward recorded them: a loop
    that draws nothing (a while loop becomes a scan over the records: as many steps as
    it ran). Returns ``(its loop node, result(index) -> the node of result index)``."""
    from .build import build_cond, build_scan
    from .loop_op import loop_out_op
    from ..ops.base import apply
    pred, lead, xs, caps = _split(spec, inputs)
    n, nx = len(lead), len(xs)

    def step(carry, x):
        cap_in = [capture(c) for c in caps]
        outs = inline(spec.bodies[0], list(carry) + list(x[:nx]),
                      _body_caps(spec, 0, cap_in), _given(spec, 0, x[nx:]))
        return outs[:n], outs[n:]

    def branch(b):
        def flat(params):
            cap_in = [capture(c) for c in caps]
            return inline(spec.bodies[b], params[:n], _body_caps(spec, b, cap_in),
                          _given(spec, b, params[n:]))
        return flat

    if spec.kind == "cond":
        loop, outs = build_cond(pred, branch(0), branch(1), list(lead) + list(records),
                                name=spec.name)
    else:
        loop, outs = build_scan(step, list(lead), list(xs) + list(records),
                                reverse=spec.reverse, name=spec.name,
                                length=spec.length if spec.kind == "scan" else None)

    def result(index):
        role, j = spec.role(index)
        if role == "draw":
            return records[j]
        return outs[index] if index < len(outs) else \
            apply(loop_out_op, loop, *loop.inputs, index=index)
    return loop, result


def _draw_results(spec, loop, inputs):
    """The loop's "draw" results: each iteration's draws of its replayed bodies
    (building them makes the forward record them)."""
    return _results(loop, inputs, range(spec.n_declared,
                                        spec.n_declared + len(spec.draw_slots)))


def _given(spec, k, values):
    """{random node id of body k: the value the forward drew} for ``inline``."""
    return {n.id: v for (b, n), v in zip(spec.draw_slots, values) if b == k}


# -- reverse mode ---------------------------------------------------------------------------

def loop_vjp(spec, cotangents, needed, loop, inputs):
    """The terms for the loop's inputs (a list, None where none) of the cotangents
    ``cotangents`` ({result index: its cotangent}) of any of its results, all at once:
    ONE backward loop, whose every step sees the sum of what each result contributes
    (a rule in the body not linear in its cotangent, a clipped gradient, gets that sum,
    as in the loop written out)."""
    cts = {i: g for i, g in sorted(cotangents.items())
           if spec.role(i)[0] != "draw" and _is_float(g)}   # a draw depends on nothing
    if not cts:
        return [None] * len(inputs)
    _refuse_nested_draws(spec)
    if spec.kind == "cond":
        return _cond_vjp(spec, cts, needed, loop, inputs)
    return _scan_vjp(spec, cts, needed, loop, inputs)


def _by_role(spec, cts):
    """{role: [(k, cotangent), ...]} of the cotangents ({result index: node})."""
    out = {"final": [], "ys": [], "stack": []}
    for i, g in cts.items():
        role, k = spec.role(i)
        out[role].append((k, g))
    return out


def _scan_vjp(spec, cts, needed, loop, inputs):
    from .build import build_scan
    from ..ops import zeros_like
    _, init, xs, caps = _split(spec, inputs)
    nc = spec.n_carry
    fc = [k for k in range(nc) if _is_float(init[k])]
    # gradients only for the inputs asked for: each is a stacked output or a carry
    fx = [k for k in range(len(xs)) if _is_float(xs[k]) and needed[nc + k]]
    fw = [k for k in range(len(caps)) if _is_float(caps[k]) and needed[nc + len(xs) + k]]
    got = _by_role(spec, cts)
    final = dict(got["final"])
    ct0 = [final[k] if k in final else zeros_like(init[k]) for k in fc]
    acc0 = [zeros_like(caps[k]) for k in fw]
    ys_at, st_at = [j for j, _ in got["ys"]], [k for k, _ in got["stack"]]
    gseq = [g for _, g in got["ys"]] + [g for _, g in got["stack"]]
    stacks = _stacks(spec, loop, inputs)
    draws = _draw_results(spec, loop, inputs)
    n_in = nc + len(xs)
    # the carries the body computes (not passes through): the step's output, which its
    # vjp may read (tanh's ans), is the carry the next step entered with, already
    # stacked: it is carried backwards (from the final carry) instead of recomputed
    sub = [k for k in fc if spec.bodies[0].outs[k].op is not None]
    nf, nw = len(fc), len(fw)

    def step(carry, x):
        cts_t, accs, nxt = carry[:nf], carry[nf:nf + nw], carry[nf + nw:]
        c_t, x_t = x[:nc], x[nc:n_in]
        gs, d_t = x[n_in:n_in + len(gseq)], x[n_in + len(gseq):]
        cap_in = [capture(c) for c in caps]
        outs = inline(spec.bodies[0], c_t + x_t, _body_caps(spec, 0, cap_in),
                      _given(spec, 0, d_t))
        pairs = [(outs[k], ct) for k, ct in zip(fc, cts_t)]
        pairs += [(outs[nc + j], gy) for j, gy in zip(ys_at, gs)]
        wrt = [c_t[k] for k in fc] + [x_t[k] for k in fx] + [cap_in[k] for k in fw]
        grads = _grads(_vdot_sum(pairs), wrt)
        dc = grads[:nf]
        for k, gk in zip(st_at, gs[len(ys_at):]):   # the carry entering step t is read
            pos = fc.index(k)
            dc[pos] = dc[pos] + gk
        dx = grads[nf:nf + len(fx)]
        dw = grads[nf + len(fx):]
        roots = dc + [a + d for a, d in zip(accs, dw)] + dx
        roots = _read_recorded(roots, {outs[k].id: v for k, v in zip(sub, nxt)
                                       if outs[k].op is not None})
        return roots[:nf + nw] + [c_t[k] for k in sub], roots[nf + nw:]

    T = None if (stacks or xs) else spec.length
    nxt0 = _results(loop, inputs, sub)
    shapes = _carry_shapes(spec, "cotangent", ct0, fc, init) + \
        [a.shape for a in acc0 + nxt0]
    _, outs = build_scan(step, ct0 + acc0 + nxt0, stacks + list(xs) + gseq + draws,
                         reverse=not spec.reverse, length=T,
                         name=f"{spec.name} vjp", shapes=shapes)
    # the backward loop's results: the carries' cotangents, the captures' sums, the
    # recorded next carries (not terms), then the stacked xs' cotangents
    return _placed_terms(outs, len(inputs), needed, [
        (0, fc), (nf, [n_in + k for k in fw]), (nf + nw + len(sub), [nc + k for k in fx])])


def _placed_terms(outs, n, needed, groups):
    """One term an input (None where it is not needed): each group gives the position in
    ``outs`` of its first entry and the input positions its entries go to, in order."""
    terms = [None] * n
    for first, positions in groups:
        for pos, i in enumerate(positions):
            terms[i] = outs[first + pos]
    return [t if need else None for t, need in zip(terms, needed)]


def _read_recorded(roots, known):
    """``roots`` rebuilt so that each node id in ``known`` reads as the node given for
    it (a value the forward recorded) — every node between them re-applied on the new
    inputs, in id order (iterative) — so what only fed those values is no longer
    computed. A node read for its shape only (``_SHAPE_READERS``: a broadcast_like's
    reference …) whose reference has a known node's run-time shape reads the recorded
    node instead, so no replayed value is computed for its shape. The replayed step is
    left as it is (nodes no longer read are pruned by the compile) when the path holds
    a random draw or a loop: those are not re-applied."""
    from .loop_op import is_loop, is_loop_result
    from ..ops.base import apply
    if not known or not roots:
        return roots
    graph = roots[0].graph
    handles = graph.handles
    new, alias = dict(known), _shaped_like(graph, known)
    lo = min(min(known), min(alias, default=min(known)))
    for nid in graph.ancestors([r.id for r in roots]):
        if nid < lo or nid in new:
            continue
        node = handles[nid]
        if node.op is None:
            continue
        ins = [new.get(i.id, i) for i in node.inputs]
        pos = _SHAPE_READERS.get(node.op.name)
        if pos is not None and node.inputs[pos].id in alias:
            v = alias[node.inputs[pos].id]
            if v.dtype == node.inputs[pos].dtype or node.op.name in _ANY_FLOAT:
                ins[pos] = v
        if all(x is i for x, i in zip(ins, node.inputs)):
            continue
        if node.op.stateful or is_loop(node) or is_loop_result(node):
            return roots
        new[nid] = apply(node.op, *ins, **node.attrs)
    return [new.get(r.id, r) for r in roots]


#: op name -> the input read for its run-time shape only (_read_recorded)
_SHAPE_READERS = {"broadcast_like": 1, "reshape_like": 1, "reduced_size": 0,
                  "zeros_like": 0, "ones_like": 0}
#: of those, the ones whose result does not take that input's dtype (a count is the
#: input's float dtype: equal for the float carries this is used on)
_ANY_FLOAT = {"broadcast_like", "reshape_like"}


def _shaped_like(graph, known):
    """{node id: recorded node} for the nodes of ``graph`` that have a known node's
    run-time shape: the node itself, and what ops.broadcast.shape_source would walk to
    from it (shape-keeping ops, inputs of the same static shape)."""
    from ..ops.broadcast import SHAPE_KEEPING
    handles, out = graph.handles, {}
    for k, v in known.items():
        queue, shape = [handles[k]], handles[k].shape
        for cur in queue:
            if cur.id in out or len(queue) > 64:
                continue
            out[cur.id] = v
            if cur.op is not None and cur.op.name in SHAPE_KEEPING:
                queue.extend(i for i in cur.inputs if i.shape == shape)
    return out


def _cond_vjp(spec, cts, needed, loop, inputs):
    from .build import build_cond
    pred, ops, _, caps = _split(spec, inputs)
    fo = [k for k in range(len(ops)) if _is_float(ops[k])]
    fw = [k for k in range(len(caps)) if _is_float(caps[k])]
    draws = _draw_results(spec, loop, inputs)
    at, gs = list(cts), list(cts.values())

    def branch(b):
        def flat(params):
            args, gp = params[:len(ops)], params[len(ops):len(ops) + len(gs)]
            cap_in = [capture(c) for c in caps]
            outs = inline(spec.bodies[b], args, _body_caps(spec, b, cap_in),
                          _given(spec, b, params[len(ops) + len(gs):]))
            wrt = [args[k] for k in fo] + [cap_in[k] for k in fw]
            return _grads(_vdot_sum([(outs[i], g) for i, g in zip(at, gp)]), wrt)
        return flat

    _, outs = build_cond(pred, branch(0), branch(1), list(ops) + gs + draws,
                         name=f"{spec.name} vjp")
    terms = [None] * len(inputs)
    for pos, k in enumerate(fo):
        terms[1 + k] = outs[pos]
    for pos, k in enumerate(fw):
        terms[1 + len(ops) + k] = outs[len(fo) + pos]
    return [t if need else None for t, need in zip(terms, needed)]


# -- forward mode ---------------------------------------------------------------------------

def loop_jvp(spec, index, tangents, loop, inputs):
    """The tangent of result ``index`` given the inputs' tangents (None where none)."""
    if spec.role(index)[0] == "draw":      # a draw depends on nothing
        return None
    _refuse_nested_draws(spec)
    if spec.kind == "cond":
        return _cond_jvp(spec, index, tangents, loop, inputs)
    return _scan_jvp(spec, index, tangents, loop, inputs)


def _jvps(outs, wrt, tans, which):
    from ..autodiff import jvp
    from ..ops import zeros_like
    res = []
    for k in which:
        o = outs[k]
        res.append(_cast(jvp(o, list(wrt), list(tans)), o) if wrt else zeros_like(o))
    return res


def _scan_jvp(spec, index, tangents, loop, inputs):
    from .build import build_scan
    from ..ops import zeros_like
    _, init, xs, caps = _split(spec, inputs)
    nc, nx = spec.n_carry, len(xs)
    t_init, t_xs, t_caps = tangents[:nc], tangents[nc:nc + nx], tangents[nc + nx:]
    fc = [k for k in range(nc) if _is_float(init[k])]
    tx = [k for k in range(nx) if t_xs[k] is not None and _is_float(xs[k])]
    tw = [k for k in range(len(caps)) if t_caps[k] is not None and _is_float(caps[k])]
    cdot0 = [t_init[k] if t_init[k] is not None else zeros_like(init[k]) for k in fc]
    cdot0 = [_cast(t, init[k]) for t, k in zip(cdot0, fc)]
    role, which = spec.role(index)
    stacks = _stacks(spec, loop, inputs)
    draws = _draw_results(spec, loop, inputs)

    def step(carry, x):
        c_t, x_t = x[:nc], x[nc:nc + nx]
        xdot, d_t = x[nc + nx:nc + nx + len(tx)], x[nc + nx + len(tx):]
        cap_in = [capture(c) for c in caps]
        capdot = [capture(t_caps[k]) for k in tw]
        outs = inline(spec.bodies[0], c_t + x_t, _body_caps(spec, 0, cap_in),
                      _given(spec, 0, d_t))
        wrt = [c_t[k] for k in fc] + [x_t[k] for k in tx] + [cap_in[k] for k in tw]
        tans = list(carry) + list(xdot) + capdot
        new = _jvps(outs, wrt, tans, fc)
        if role == "ys":
            ys = _jvps(outs, wrt, tans, [nc + which])
        elif role == "stack":
            ys = [carry[fc.index(which)]]
        else:
            ys = []
        return new, ys

    T = None if (stacks or xs) else spec.length
    _, outs = build_scan(step, cdot0, stacks + list(xs) + [t_xs[k] for k in tx] + draws,
                         reverse=spec.reverse, length=T, name=f"{spec.name} jvp",
                         shapes=_carry_shapes(spec, "tangent", cdot0, fc, init))
    if role == "final":
        return outs[fc.index(which)]
    return outs[len(fc)]


def _cond_jvp(spec, index, tangents, loop, inputs):
    from .build import build_cond
    pred, ops, _, caps = _split(spec, inputs)
    t_ops, t_caps = tangents[1:1 + len(ops)], tangents[1 + len(ops):]
    to = [k for k in range(len(ops)) if t_ops[k] is not None and _is_float(ops[k])]
    tw = [k for k in range(len(caps)) if t_caps[k] is not None and _is_float(caps[k])]
    draws = _draw_results(spec, loop, inputs)

    def branch(b):
        def flat(params):
            args, odot = params[:len(ops)], params[len(ops):len(ops) + len(to)]
            cap_in = [capture(c) for c in caps]
            capdot = [capture(t_caps[k]) for k in tw]
            outs = inline(spec.bodies[b], args, _body_caps(spec, b, cap_in),
                          _given(spec, b, params[len(ops) + len(to):]))
            wrt = [args[k] for k in to] + [cap_in[k] for k in tw]
            return _jvps(outs, wrt, list(odot) + capdot, [index])
        return flat

    _, outs = build_cond(pred, branch(0), branch(1),
                         list(ops) + [t_ops[k] for k in to] + draws,
                         name=f"{spec.name} jvp")
    return outs[0]
