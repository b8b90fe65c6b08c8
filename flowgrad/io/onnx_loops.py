"""Loops and branches (issue 20) as ONNX ``Scan``, ``Loop`` and ``If``, used by onnx_export.

A flowgrad ``loop`` node (flowgrad/loops/loop_op.py) becomes ONE ONNX node whose outputs
are the loop's results, in the spec's order, each named after the first ``loop_out``
node that reads it (what an importer names its nodes after; another reader is an
Identity of it). The carry stacks (the carries each iteration entered with, which
derivative loops read) are written only when a ``loop_out`` of the graph reads them.
Each traced body becomes an ONNX subgraph through the same converters as the enclosing
graph; its captured nodes are read from the enclosing scope by name, as ONNX subgraphs
may, so they are no inputs of the ONNX node.

- a scan over stacked ``xs`` is a ``Scan`` (``reverse=True``: every input and output
  direction 1, so the ys stay in the order of xs). onnxruntime (1.32) fails on a Scan
  over zero slices, so unless the length is known to be positive the Scan sits in the
  else branch of an ``If`` whose then branch gives the results of no iteration;
- a scan of ``length=T`` alone (a fori_loop with int bounds) is a ``Loop`` of T trips
  whose condition stays true; reversed, its stacked outputs are flipped after it;
- a while loop is a ``Loop``: its condition runs once on the initial carries before it,
  then after each step inside it. ONNX has no way to raise, so reaching ``max_iters``
  with the condition still true makes the body read past the end of a table (a Gather
  named ``<loop>/max_iters_reached``): onnxruntime fails with that name rather than stop
  silently, as flowgrad raises LoopLimitError;
- a cond is an ``If`` whose branches read their operands from the enclosing scope.
"""
from __future__ import annotations

import numpy as np

from flowgrad.loops.loop_op import is_loop_result

from .onnx_ops import converts


# -- subgraphs -------------------------------------------------------------------------------

def _info(e, name, shape, dtype):
    return e.helper.make_tensor_value_info(name, e.elem(dtype), list(shape))


def emit_body(e, body, args, caps):
    """Write ``body``'s nodes into the current node list with its argument placeholders
    read as the tensors ``args`` and its captures as ``caps``; its outputs' names."""
    from flowgrad.autodiff import ancestors
    from .onnx_export import emit_graph
    bound = {p.id: a for p, a in zip(body.params, args)}
    bound.update({p.id: c for p, c in zip(body.cap_params, caps)})
    node = e.node
    try:
        table = emit_graph(e, body.graph, ancestors(body.outs) if body.outs else [], bound)
        out = []
        for o in body.outs:
            if o.id in table:
                out.append(table[o.id])
            else:                    # a weak Python number: written per use
                e.node = o
                out.append(e.const(o.value, o.dtype))
        return out
    finally:
        e.node = node


def _graph(e, name, inputs, outputs, out_infos):
    """The GraphProto of the current node list: ``inputs`` (value infos), ``outputs``
    (tensor names, each made a fresh tensor of this subgraph if it is an input, an
    enclosing tensor or already an output), ``out_infos`` [(shape, dtype)]."""
    made = {o for n in e.nodes for o in n.output}
    taken, infos = set(), []
    for name_k, (shape, dtype) in zip(outputs, out_infos):
        if name_k not in made or name_k in taken:
            alias = e.fresh(f"{e.prefix}out")
            e.nodes.append(e.helper.make_node("Identity", [name_k], [alias], name=alias))
            name_k = alias
        taken.add(name_k)
        infos.append(_info(e, name_k, shape, dtype))
    return e.helper.make_graph(e.nodes, name, inputs, infos)


# -- the loop node ---------------------------------------------------------------------------

def _stacks_read(loop, spec) -> bool:
    """Whether any result node of ``loop`` reads a carry stack."""
    g = loop.graph
    for nid in g.nx.successors(loop.id):
        n = g.node(nid)
        if is_loop_result(n) and spec.role(n.attrs["index"])[0] == "stack":
            return True
    return False


@converts("loop")
def _loop(e, spec):
    loop = e.node
    outer = [e.raw(k) for k in range(len(loop.inputs))]
    caps = outer[spec.n_lead:]
    tag = f"{e.prefix}{loop.name}"
    if spec.kind == "cond":
        names = _if(e, spec, tag, outer[0], outer[1:spec.n_lead], caps)
        return tuple(names)
    stacks = _stacks_read(loop, spec)
    if spec.kind == "while":
        names = _while(e, spec, tag, outer[:spec.n_carry], caps, stacks)
    elif spec.n_xs:
        names = _scan(e, spec, tag, outer[:spec.n_lead], caps, stacks)
    else:
        names = _counted(e, spec, tag, outer[:spec.n_carry], caps, stacks)
    return tuple(names) + (None,) * (len(spec.out_shapes) - len(names))   # stacks unread


@converts("loop_out")
def _loop_out(e, index):
    from .onnx_export import Final, OnnxExportError
    name = e.tensor[e.node.inputs[0].id][index]
    if name is None:   # pragma: no cover - _stacks_read sees every reader of a stack
        raise OnnxExportError(f"{e.node.name}: result {index} of its loop was not written")
    if name == f"{e.prefix}{e.node.name}":    # the loop's output carries this node's name
        e.final.add(name)
        return Final(name)
    return e.op("Identity", [name])


def _outputs(e, tag, count, named=True):
    """The loop node's output names: each after a result node that reads it (what an
    importer names its nodes after), else ``<loop>/out<k>``."""
    readers = {}
    if named:
        g = e.node.graph
        for nid in sorted(g.nx.successors(e.node.id)):
            n = g.node(nid)
            if is_loop_result(n):
                readers.setdefault(n.attrs["index"], n.name)
    return [e.fresh(f"{e.prefix}{readers[k]}" if k in readers else f"{tag}/out{k}")
            for k in range(count)]


def _carry_infos(spec):
    return [(spec.out_shapes[k], spec.out_dtypes[k]) for k in range(spec.n_carry)]


def _y_infos(spec):
    """Per iteration: each y's shape without its stacked axis, and dtype."""
    nc = spec.n_carry
    return [(spec.out_shapes[nc + j][1:], spec.out_dtypes[nc + j]) for j in range(spec.n_ys)]


def _caps(spec, k, caps):
    return [caps[i] for i in spec.caps_of[k]]


def _scan(e, spec, tag, lead, caps, stacks):
    """A scan over xs: an ONNX Scan; behind an If when it may have no slice at all."""
    nc, nx = spec.n_carry, spec.n_xs
    body = spec.bodies[0]
    node = e.node
    with e.subgraph(tag):
        states = [e.fresh(f"{tag}/carry{k}") for k in range(nc)]
        slices = [e.fresh(f"{tag}/x{k}") for k in range(nx)]
        ins = [_info(e, s, shape, dtype) for s, (shape, dtype) in zip(states, _carry_infos(spec))]
        ins += [_info(e, s, p.shape, p.dtype) for s, p in zip(slices, body.params[nc:])]
        outs = emit_body(e, body, states + slices, _caps(spec, 0, caps))
        infos = _carry_infos(spec) + _y_infos(spec)
        if stacks:
            outs, infos = outs + states, infos + _carry_infos(spec)
        graph = _graph(e, f"{tag}/body", ins, outs, infos)
    e.node = node
    d = int(spec.reverse)
    n_out = len(outs) - nc
    dirs = {"scan_output_directions": [d] * n_out} if n_out else {}   # (no empty lists)

    def scan(names):
        e.nodes.append(e.helper.make_node(
            "Scan", lead, names, name=e.fresh(tag), body=graph, num_scan_inputs=nx,
            scan_input_directions=[d] * nx, **dirs))
        return names

    lengths = [x.shape[0] for x in e.node.inputs[nc:nc + nx]]
    if spec.length is not None:     # flowgrad's kernel checks the run-time lengths too
        lead = lead[:nc] + [x if t is not None else _length_checked(e, tag, x, spec.length)
                            for x, t in zip(lead[nc:], lengths)]
    if any(t is not None and t > 0 for t in lengths + [spec.length]):
        return scan(_outputs(e, tag, len(outs)))
    return _unless_empty(e, spec, tag, lead, scan, len(outs))


def _length_checked(e, tag, x, length):
    """``x`` itself (a Slice from 0), failing by name unless its length is ``length``:
    a scan's ``length=`` and its xs must agree, as flowgrad's kernel requires."""
    n = e.op("Gather", [e.op("Shape", [x]), e.const(np.int64(0))], axis=0)
    bad = e.op("Not", [e.op("Equal", [n, e.const(np.int64(length))])])
    start = e.op("Unsqueeze", [failing_gather(e, f"{tag}/xs_length_is_not_{length}", bad),
                               e.ints([0])])
    return e.op("Slice", [x, start, e.ints([2 ** 63 - 1]), e.ints([0])])


def _unless_empty(e, spec, tag, lead, scan, n_out):
    """onnxruntime (1.32) fails on a Scan over zero slices (a while loop that ran no
    iteration hands its derivative an empty stack): ``If(T == 0)`` gives the results
    of no iteration, as flowgrad's kernel does, and runs the Scan otherwise."""
    nc = spec.n_carry
    infos = list(zip(spec.out_shapes, spec.out_dtypes))[:n_out]
    with e.subgraph(f"{tag}/some"):
        some = _graph(e, f"{tag}/some", [], scan(_outputs(e, tag, n_out, False)), infos)
    with e.subgraph(f"{tag}/none"):
        e.node = None
        none = list(lead[:nc])                                   # the final carries
        none += [_empty_y(e, tag, spec, j, lead[nc]) for j in range(spec.n_ys)]
        none += [_empty_like(e, lead[k], spec.out_shapes[k], spec.out_dtypes[k])
                 for k in range(n_out - len(none))]
        none = _graph(e, f"{tag}/none", [], none, infos)
    # no slice in any xs (xs of different lengths go to the Scan, which refuses them)
    lengths = [e.op("Shape", [x], start=0, end=1) for x in lead[nc:]]
    longest = e.op("ReduceMax", [e.op("Concat", lengths, axis=0)], keepdims=0)
    empty = e.op("Equal", [longest, e.const(np.int64(0))])
    names = _outputs(e, tag, n_out)
    e.nodes.append(e.helper.make_node("If", [empty], names, name=e.fresh(f"{tag}/if_empty"),
                                      then_branch=none, else_branch=some))
    return names


def _empty_like(e, carry, shape, dtype):
    """(0, *carry.shape) zeros: a carry stack of no iteration (a constant when the
    carry's ``shape`` is known, which an importer reads without running anything)."""
    if None not in shape:
        return e.const(np.zeros((0, *shape), dtype=dtype))
    shape = e.op("Concat", [e.ints([0]), e.op("Shape", [carry])], axis=0)
    value = e.onnx.numpy_helper.from_array(np.zeros(1, dtype=dtype))
    return e.op("ConstantOfShape", [shape], value=value)


def _empty_y(e, tag, spec, j, xs0):
    """The stacked y of no iteration: (0, *y.shape) when that shape is known; else a
    Gather that fails by name. (flowgrad's kernel infers a run-time length of y from
    the inputs' shapes by replaying the body's shape inference, which a file cannot
    do without running the body: failing by name beats a made-up shape.)"""
    nc = spec.n_carry
    shape, dtype = spec.out_shapes[nc + j][1:], spec.out_dtypes[nc + j]
    if None not in shape:
        return e.const(np.zeros((0, *shape), dtype=dtype))
    # read at run time (the branch runs on an empty xs), so nothing folds it early
    empty = e.op("Equal", [e.op("Size", [xs0]), e.const(np.int64(0))])
    name = failing_gather(e, f"{tag}/no_iteration_for_y{j}_of_unknown_shape", empty)
    fill = e.op("Cast", [name], to=e.elem(dtype))
    return e.op("Expand", [fill, e.ints([0] + [1 if s is None else s for s in shape])])


def _loop_inputs(e, tag, spec):
    """A Loop body's first inputs (trip number, condition) and its carries'."""
    trip, cond_in = e.fresh(f"{tag}/trip"), e.fresh(f"{tag}/cond_in")
    states = [e.fresh(f"{tag}/carry{k}") for k in range(spec.n_carry)]
    ins = [_info(e, trip, (), np.int64), _info(e, cond_in, (), np.bool_)]
    ins += [_info(e, s, shape, dtype) for s, (shape, dtype) in zip(states, _carry_infos(spec))]
    return trip, cond_in, states, ins


def _counted(e, spec, tag, init, caps, stacks):
    """A scan of a fixed length and no xs: a Loop of ``length`` trips, always on."""
    nc = spec.n_carry
    node = e.node
    with e.subgraph(tag):
        _, cond_in, states, ins = _loop_inputs(e, tag, spec)
        outs = emit_body(e, spec.bodies[0], states, _caps(spec, 0, caps))
        infos = _carry_infos(spec) + _y_infos(spec)
        if stacks:
            outs, infos = outs + states, infos + _carry_infos(spec)
        graph = _graph(e, f"{tag}/body", ins, [cond_in] + outs, [((), np.bool_)] + infos)
    e.node = node
    trips = e.const(np.int64(spec.length))
    names = _outputs(e, tag, len(outs))
    # reversed, the trips ran from the last slice to the first: the stacked are flipped
    raw = names[:nc] + [e.fresh(f"{tag}/trip_order{k}") for k in range(nc, len(names))] \
        if spec.reverse else names
    e.nodes.append(e.helper.make_node("Loop", [trips, ""] + list(init), raw,
                                      name=e.fresh(tag), body=graph))
    for src, dst in zip(raw[nc:], names[nc:]):
        if src != dst:
            e.nodes.append(e.helper.make_node(
                "Slice", [src, e.ints([-1]), e.ints([-2 ** 63]), e.ints([0]), e.ints([-1])],
                [dst], name=dst))
    return names


def _while(e, spec, tag, init, caps, stacks):
    """A while loop: its condition on the initial carries, then a Loop that steps and
    tests again, and fails by name on reaching max_iters."""
    step, test = spec.bodies
    node = e.node
    e.prefix, saved = f"{tag}/first_test/", e.prefix
    try:
        first = emit_body(e, test, list(init), _caps(spec, 1, caps))[0]
    finally:
        e.prefix = saved
    with e.subgraph(tag):
        trip, _, states, ins = _loop_inputs(e, tag, spec)
        new = emit_body(e, step, states, _caps(spec, 0, caps))
        again = emit_body(e, test, new, _caps(spec, 1, caps))[0]
        go = _guard(e, tag, trip, again, spec.max_iters)
        outs, infos = new, _carry_infos(spec)
        if stacks:
            outs, infos = outs + states, infos + _carry_infos(spec)
        graph = _graph(e, f"{tag}/body", ins, [go] + outs, [((), np.bool_)] + infos)
    e.node = node
    trips = e.const(np.int64(spec.max_iters + 1))   # never reached: the guard fails first
    names = _outputs(e, tag, len(outs))
    e.nodes.append(e.helper.make_node("Loop", [trips, first] + list(init), names,
                                      name=e.fresh(tag), body=graph))
    return names


def _guard(e, tag, trip, again, max_iters):
    """``again``, through a Gather that fails when trip number ``max_iters`` runs (the
    condition was true ``max_iters`` times): the loop's LoopLimitError, by name."""
    hit = e.op("Equal", [trip, e.const(np.int64(max_iters))])
    ok = e.op("Equal", [failing_gather(e, f"{tag}/max_iters_reached", hit),
                        e.const(np.int64(0))])
    return e.op("And", [ok, again])


def failing_gather(e, name, bad):
    """A Gather named ``name`` that fails at run time where the 0-d bool tensor ``bad``
    is true (ONNX has no assert); else a 0-d int64 zero. It reads index 2·bad of [0, 1]:
    the table is not uniform, so no importer or optimizer may fold the read away."""
    index = e.op("Mul", [e.op("Cast", [bad], to=e.elem(np.int64)), e.const(np.int64(2))])
    name = e.fresh(name)
    e.nodes.append(e.helper.make_node("Gather", [e.const(np.arange(2, dtype=np.int64)),
                                                 index], [name], name=name, axis=0))
    return name


def _if(e, spec, tag, pred, operands, caps):
    """A cond: an If whose branches read the operands from the enclosing scope."""
    node = e.node
    branches = []
    for k, which in enumerate(("then", "else")):
        with e.subgraph(f"{tag}/{which}"):
            outs = emit_body(e, spec.bodies[k], list(operands), _caps(spec, k, caps))
            infos = list(zip(spec.out_shapes, spec.out_dtypes))[:spec.n_ys]
            branches.append(_graph(e, f"{tag}/{which}", [], outs, infos))
    e.node = node
    names = _outputs(e, tag, spec.n_ys)
    e.nodes.append(e.helper.make_node("If", [pred], names, name=e.fresh(tag),
                                      then_branch=branches[0], else_branch=branches[1]))
    return names
