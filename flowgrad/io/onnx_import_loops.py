"""ONNX ``Scan``, ``Loop`` and ``If`` as flowgrad loops (issue 20), for onnx_import.

Each subgraph becomes a traced body: its nodes are imported, once, through the same
importers as the enclosing graph, on the placeholders of the body being traced
(``fg.scan``/``fg.cond``/``build_while`` trace it), and the enclosing tensors it reads
by name become the loop's captured inputs. Importing runs nothing.

- ``Scan`` (opset 9 on) is a scan: input axes and directions are taken care of by
  moving the axis to the front and flipping (one direction for all inputs maps to
  ``reverse=``), output axes and directions likewise.
- ``Loop`` whose condition stays true (no initial condition, or a constant true one,
  and a body that passes ``cond_in`` through) with a constant trip count is a scan of
  that length, its scan outputs the ys; otherwise a while loop over
  (trip number, condition, carries), bounded by the trip count when it is a constant,
  else by ``LOOP_MAX_ITERS`` (reaching it raises ``fg.LoopLimitError``, never a silent
  stop). Such a loop's scan outputs must be loop-carried inputs passed through (the
  values each iteration entered with, which flowgrad's while loops keep); any other
  is refused.
- ``If`` is a cond whose branches read the enclosing tensors; the branches' outputs
  must agree in shape and dtype, as flowgrad's cond requires.

Bounds (the file is hostile): subgraphs nest at most ``MAX_DEPTH`` deep; each is
imported once (its size is the file's), its tensors charged to the import budget; a
body's declared input types must match what the loop feeds it. Each result of a
flowgrad loop node reads all the loop's inputs, so a loop of R results and I inputs
(carries, xs, the enclosing tensors its bodies read) holds R·I references: quadratic in
the file's size (a Loop of 2,000 carries, 0.3 MB, took 73 MB), so they are charged to
the budget too, 8 bytes each, before the loop is built (``_charge_results``: the
enclosing tensors a body reads are counted as it is imported).
"""
from __future__ import annotations

import numpy as np

import flowgrad as fg
from flowgrad.leaves import constant

from .onnx_import import OnnxImportError
from .onnx_import_check import check_declared
from .onnx_import_ops import imports

#: the most loop bodies / branches nested in one another
MAX_DEPTH = 16
#: the bound of a Loop with neither a constant trip count nor a condition that stays true
LOOP_MAX_ITERS = 2 ** 31


def _refuse(ctx, what):
    return OnnxImportError(f"{ctx.where}: {what}")


def _charge_results(ctx, results, inputs, what):
    """Charge the budget for the ``results`` × ``inputs`` references of the loop node a
    body is imported for (with the trip number and condition a while loop adds), after
    its body is traced and before the loop node is built."""
    ctx.budget.take(8 * (results + 2) * (inputs + 2),
                    f"{ctx.where}: its loop node's results (up to {results + 2}), each "
                    f"reading its {inputs + 2} inputs ({what}'s carries, xs and the "
                    "enclosing tensors it reads),")


def import_body(ctx, graph, bindings, what):
    """Import subgraph ``graph`` into the body being traced, its inputs read as the
    nodes ``bindings`` ({name: node}); returns its output nodes."""
    from flowgrad.loops.body import tracing_graph
    from .onnx_import import import_node
    from .onnx_import_ops import IMPORTERS
    if ctx.depth >= MAX_DEPTH:
        raise _refuse(ctx, f"loops and branches nest more than {MAX_DEPTH} deep")
    where, outer_body, outer_reads = ctx.where, ctx.body, ctx.reads
    ctx.reads = set()
    ctx.env.enter()
    ctx.static.enter()
    ctx.depth += 1
    try:
        for name, node in bindings.items():    # (shadowing an enclosing constant)
            ctx.env[name] = node
            ctx.static.hide(name)
        if len(graph.sparse_initializer):
            raise _refuse(ctx, f"its {what} holds sparse initializers")
        for init in graph.initializer:         # a body's own constants
            ctx.where = f"{where}, {what} initializer {init.name!r}"
            node = constant(ctx.tensor(init))
            ctx.static[init.name] = node.value
            ctx.env[init.name] = node
        body_graph = ctx.body = tracing_graph()
        for k, n in enumerate(graph.node):
            import_node(ctx, body_graph, n, k, IMPORTERS)
        ctx.where = where
        missing = [o.name for o in graph.output if o.name not in ctx.env]
        if missing:
            raise _refuse(ctx, f"its {what}'s outputs {missing[:5]} are computed by no node")
        for vi in graph.output:
            check_declared(f"{where}, its {what}", vi, ctx.env[vi.name], OnnxImportError)
        outs = [ctx.node_of(o.name) for o in graph.output]
        _charge_results(ctx, len(outs), len(bindings) + len(ctx.reads), what)
        return outs
    finally:
        ctx.env.leave()
        ctx.static.leave()
        ctx.depth -= 1
        ctx.where, ctx.body = where, outer_body
        # an inner body's reads of graphs around this one are this one's reads too
        ctx.reads = outer_reads | {r for r in ctx.reads if r[0] != id(outer_body)}


def _check_inputs(ctx, graph, nodes, what, typed_only=0):
    """The body's declared inputs against the nodes fed to them: as many, the same
    element types, and (from input ``typed_only`` on) no disagreeing known length."""
    if len(graph.input) != len(nodes):
        raise _refuse(ctx, f"its {what} takes {len(graph.input)} inputs, but the loop "
                           f"feeds it {len(nodes)}")
    for k, (vi, node) in enumerate(zip(graph.input, nodes)):
        if not vi.type.HasField("tensor_type"):
            raise _refuse(ctx, f"its {what}'s input {vi.name!r} is not a tensor")
        t = vi.type.tensor_type
        if t.elem_type and ctx.dtype(t.elem_type) != node.dtype:
            raise _refuse(ctx, f"its {what}'s input {vi.name!r} is declared "
                               f"{ctx.dtype(t.elem_type)}, but the loop feeds it {node.dtype}")
        if k < typed_only or not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) != node.ndim or any(a is not None and b is not None and a != b
                                         for a, b in zip(dims, node.shape)):
            raise _refuse(ctx, f"its {what}'s input {vi.name!r} is declared of shape "
                               f"{tuple(dims)}, but the loop feeds it {node.shape}")


def _flags(ctx, attrs, key, count, allowed=None):
    values = [int(v) for v in attrs.get(key, [0] * count)]
    if len(values) != count or (allowed and any(v not in allowed for v in values)):
        raise _refuse(ctx, f"{key}={values[:8]} does not fit {count} tensors")
    return values


def _to_front(x, axis):
    axis %= x.ndim
    return x if axis == 0 else fg.transpose(x, (axis, *[a for a in range(x.ndim) if a != axis]))


def _from_front(y, axis):
    axis %= y.ndim
    if axis == 0:
        return y
    perm = list(range(1, y.ndim))
    perm.insert(axis, 0)
    return fg.transpose(y, tuple(perm))


def _flip(x):
    return fg.getitem(x, (slice(None, None, -1),))


def _names(graph):
    return [vi.name for vi in graph.input]


# -- Scan --------------------------------------------------------------------------------------

@imports("Scan")
def _scan(ctx, n, ins, attrs):
    if ctx.opset < 9:
        raise _refuse(ctx, "Scan before opset 9 has a batch axis and sequence lengths; "
                           "flowgrad reads the Scan of opset 9 on")
    body, m = attrs["body"], int(attrs["num_scan_inputs"])
    nst = len(ins) - m
    if not 1 <= m <= len(ins) or any(x is None for x in ins):
        raise _refuse(ctx, f"num_scan_inputs={m} does not fit its {len(ins)} inputs")
    k_out = len(body.output) - nst
    if k_out < 0:
        raise _refuse(ctx, f"its body returns {len(body.output)} values for {nst} states")
    in_dirs = _flags(ctx, attrs, "scan_input_directions", m, (0, 1))
    out_dirs = _flags(ctx, attrs, "scan_output_directions", k_out, (0, 1))
    in_axes = _flags(ctx, attrs, "scan_input_axes", m)
    out_axes = _flags(ctx, attrs, "scan_output_axes", k_out)
    xs = ins[nst:]
    for x, a in zip(xs, in_axes):
        if not -x.ndim <= a < x.ndim:
            raise _refuse(ctx, f"scan input axis {a} of a {x.ndim}-d input")
    reverse = all(in_dirs)
    xs = [_to_front(x, a) for x, a in zip(xs, in_axes)]
    xs = [x if d == reverse else _flip(x) for x, d in zip(xs, in_dirs)]

    def step(carry, x):
        params = list(carry) + list(x)
        _check_inputs(ctx, body, params, "Scan body")
        outs = import_body(ctx, body, dict(zip(_names(body), params)), "Scan body")
        return list(outs[:nst]), list(outs[nst:])

    final, ys = fg.scan(step, list(ins[:nst]), xs, reverse=reverse)
    fixed = []
    for y, d, a in zip(ys, out_dirs, out_axes):
        if not -y.ndim <= a < y.ndim:
            raise _refuse(ctx, f"scan output axis {a} of a {y.ndim}-d output")
        fixed.append(_from_front(y if d == reverse else _flip(y), a))
    return list(final) + fixed


# -- Loop --------------------------------------------------------------------------------------

def _passed_through(graph, outputs) -> dict:
    """{name: the body input it is (itself, or an Identity of it)} for the body outputs
    ``outputs`` (names). Their producers are found in one pass from the body's end,
    which stops when all are found (where an exporter writes them): a search of the body
    per output and carry was cubic (200 carries took 4 s, a few thousand a hang)."""
    inputs = {vi.name for vi in graph.input}
    wanted = {name for name in outputs if name not in inputs}
    producer = {}
    nodes = graph.node
    for k in range(len(nodes) - 1, -1, -1):
        if not wanted:
            break
        node = nodes[k]
        for o in node.output:
            if o in wanted:       # (a name produced twice is refused when imported)
                producer[o] = node
                wanted.discard(o)
    through = {}
    for name in outputs:
        if name in inputs:
            through[name] = name
            continue
        p = producer.get(name)
        if p is not None and p.op_type == "Identity" and len(p.input) == 1:
            through[name] = p.input[0]
    return through


def _stays_true(ctx, n, graph) -> bool:
    """A Loop whose condition never turns false: no initial one (or a constant true one),
    and a body that hands cond_in back unchanged."""
    first = n.input[1] if len(n.input) > 1 else ""
    if first and not (first in ctx.static and bool(np.all(ctx.static[first]))):
        return False
    out = graph.output[0].name
    return _passed_through(graph, [out]).get(out) == graph.input[1].name


def _scalar(ctx, node, what):
    """A 0-d node (ONNX allows a one-element tensor for a trip count or condition)."""
    if node.shape == ():
        return node
    if all(s == 1 for s in node.shape):
        return fg.reshape(node, ())
    raise _refuse(ctx, f"its {what} must hold one element, not shape {node.shape}")


@imports("Loop")
def _loop(ctx, n, ins, attrs):
    body = attrs["body"]
    ins = list(ins) + [None] * (2 - len(ins))
    trips, first, init = ins[0], ins[1], ins[2:]
    nv = len(init)
    if any(v is None for v in init) or len(body.input) != nv + 2 or \
            len(body.output) < nv + 1:
        raise _refuse(ctx, f"its body takes {len(body.input)} inputs and returns "
                           f"{len(body.output)} values for {nv} loop-carried ones")
    m = None
    if trips is not None:
        trips = _scalar(ctx, trips, "trip count")
        if trips.dtype != np.int64:
            raise _refuse(ctx, f"its trip count is {trips.dtype}, not int64")
        if n.input[0] in ctx.static:
            m = int(np.asarray(ctx.static[n.input[0]]).reshape(()))
            if m < 0:
                raise _refuse(ctx, f"its trip count {m} is negative")
    if m is not None and _stays_true(ctx, n, body):
        return _counted(ctx, body, init, m)
    return _while(ctx, n, body, trips, m, first, init)


def _counted(ctx, body, init, m):
    """A Loop of ``m`` trips that always goes on: a scan of length m."""
    nv = len(init)

    def step(carry, _):
        i, v = carry[0], list(carry[1:])
        params = [i, constant(np.bool_(True))] + v
        _check_inputs(ctx, body, params, "Loop body", typed_only=2)
        outs = import_body(ctx, body, dict(zip(_names(body), params)), "Loop body")
        return [i + np.int64(1), *outs[1:1 + nv]], list(outs[1 + nv:])

    final, ys = fg.scan(step, [constant(np.int64(0)), *init], None, length=m)
    return list(final[1:]) + list(ys)


def _while(ctx, n, body, trips, m, first, init):
    """A Loop whose condition may turn false: a while loop over (trip, condition, *v)."""
    from flowgrad.loops.build import build_while
    from flowgrad.loops.loop_op import loop_out_op
    from flowgrad.ops.base import apply
    nv = len(init)
    names = _names(body)
    through = _passed_through(body, [out.name for out in body.output[1 + nv:]])
    carry_of = {}
    for k, name in enumerate(names[2:2 + nv]):
        carry_of.setdefault(name, k)
    stacked = []
    for out in body.output[1 + nv:]:
        k = carry_of.get(through.get(out.name))
        if k is None:
            raise _refuse(ctx, f"its scan output {out.name!r} is computed in the body of a "
                               "loop whose condition may turn false; flowgrad stacks only "
                               "loop-carried values passed through (what each trip began with)")
        stacked.append(k)
    go = constant(np.bool_(True)) if first is None else _scalar(ctx, first, "condition")
    if go.dtype != np.bool_:
        raise _refuse(ctx, f"its condition is {go.dtype}, not bool")

    def test(c):
        if trips is None:
            return c[1]
        return fg.where(c[1], c[0] < (np.int64(m) if m is not None else trips), False)

    def step(c):
        _check_inputs(ctx, body, list(c), "Loop body", typed_only=2)
        outs = import_body(ctx, body, dict(zip(names, c)), "Loop body")
        again = _scalar(ctx, outs[0], "condition")
        if again.dtype != np.bool_:
            raise _refuse(ctx, f"its body's condition is {again.dtype}, not bool")
        return [c[0] + np.int64(1), again, *outs[1:1 + nv]]

    carry = [constant(np.int64(0)), go, *init]
    # with a trip count, the test stops the loop first; the bound stays what graph files hold
    bound = LOOP_MAX_ITERS if m is None else min(m, 2 ** 62)
    loop, outs = build_while(test, step, carry, bound, name=n.name or "Loop")
    spec = loop.attrs["spec"]
    first_stack = spec.n_carry + spec.n_ys
    stacks = [apply(loop_out_op, loop, *loop.inputs, index=first_stack + 2 + k)
              for k in stacked]
    return list(outs[2:2 + nv]) + stacks


# -- If --------------------------------------------------------------------------------------

@imports("If")
def _if(ctx, n, ins, attrs):
    pred = _scalar(ctx, ins[0], "condition")
    if pred.dtype != np.bool_:
        raise _refuse(ctx, f"its condition is {pred.dtype}, not bool")
    then_g, else_g = attrs["then_branch"], attrs["else_branch"]
    if len(then_g.input) or len(else_g.input):
        raise _refuse(ctx, "an If branch takes no inputs")
    if len(then_g.output) != len(else_g.output) or not then_g.output:
        raise _refuse(ctx, f"its branches return {len(then_g.output)} and "
                           f"{len(else_g.output)} values")
    out = fg.cond(pred, lambda: import_body(ctx, then_g, {}, "then branch"),
                  lambda: import_body(ctx, else_g, {}, "else branch"))
    return list(out)


# -- the ops loop conditions and guards are made of ---------------------------------------------

def _length(x, axis):
    """x's length along ``axis`` as a 0-d int64 node (a constant when it is known)."""
    if x.shape[axis] is not None:
        return constant(np.int64(x.shape[axis]))
    from flowgrad.ops.reductions import reduced_size
    from flowgrad.ops.base import apply
    # reduced_size counts in x's float dtype: exact for any length below 2**53 (float64)
    # or 2**24 (float32), far beyond an array's length, then made an int again
    return fg.astype(apply(reduced_size, x, axis=(axis,)), "int64")


@imports("Shape")
def _shape(ctx, n, ins, attrs):
    x = ins[0]
    lo, hi = attrs.get("start", 0), attrs.get("end", x.ndim)
    axes = range(x.ndim)[slice(lo, hi)]          # ONNX clamps start and end as Python does
    known = [x.shape[a] for a in axes]
    if None not in known:
        node = constant(np.array(known, dtype=np.int64))
        ctx.static[n.output[0]] = node.value
        return node
    return fg.stack([_length(x, a) for a in axes]) if len(axes) > 1 else \
        fg.reshape(_length(x, axes[0]), (1,))


@imports("Size")
def _size(ctx, n, ins, attrs):
    x = ins[0]
    if None not in x.shape:
        node = constant(np.int64(np.prod(x.shape, dtype=np.int64)))
        ctx.static[n.output[0]] = node.value
        return node
    out = _length(x, 0)
    for a in range(1, x.ndim):
        out = out * _length(x, a)
    return out


@imports("And", "Or")
def _and_or(ctx, n, ins, attrs):
    a, b = ins
    if a.dtype != np.bool_ or b.dtype != np.bool_:
        raise _refuse(ctx, f"{n.op_type} of {a.dtype} and {b.dtype}, not bool")
    return fg.where(a, b, False) if n.op_type == "And" else fg.where(a, True, b)


# Range, EyeLike, GatherND, and ConstantOfShape/Expand of a run-time shape: they extend the
# Shape and Size above, so they are registered after them (onnx_import_shapes)
from . import onnx_import_shapes  # noqa: E402,F401
