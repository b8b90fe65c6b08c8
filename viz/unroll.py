"""A traced loop unrolled: one copy of its body per iteration (``draw(tr, unroll=True)``).

A loop is one node running a traced body; the textbook picture of backpropagation through
time is the other one: the body drawn once per iteration, the carry flowing from
iteration t into iteration t + 1, each copy with that iteration's values and adjoints.

``unroll(trace)`` builds that picture as a graph of its own: the trace's nodes copied op
by op, each loop replaced by its body inlined once per iteration it ran (in a name scope
"scan · iteration t of T", which drawings show as a cluster), its x slices as
``xs[t − 1]`` nodes and its results as the last carry and the stacked ys. The values are
the run's own: the trace keeps each iteration's body values while it runs (up to
``RECORD_LIMIT`` iterations; ``loop_op.recording_loops``), and they are laid over the
copies. The adjoints are those of the unrolled graph, computed by flowgrad's ordinary
reverse sweep on it: BPTT written out, equal to the loop's own backward scan (the tests
check both against hand-written loops). They are this run's only if the written-out graph
computes the run's forward values, which is checked: a random op drawing other values is
an ``UnrollError``, never a picture mixing two runs.
"""
from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from flowgrad.autodiff import adjoints as fg_adjoints, ancestors
from flowgrad.loops.body import inline_all
from flowgrad.loops.loop_op import RECORD_LIMIT, is_loop, is_loop_result
from flowgrad.errors import FlowgradError
from flowgrad.graph import Graph, name_scope
from flowgrad.ops.base import apply
from flowgrad.tracing import Trace

from . import labels as L

__all__ = ["UnrollError", "UnrolledTrace", "unroll", "iteration_note", "RECORD_LIMIT"]


class UnrollError(FlowgradError, ValueError):
    """``unroll=True`` cannot draw this: not a trace, a loop that ran more than
    ``RECORD_LIMIT`` (12) iterations or none, or a trace that kept no iterations."""


class UnrolledTrace(Trace):
    """A ``Trace`` of the unrolled graph (module docstring). ``original``: the trace it
    was made from; ``iterations[loop id]``: one {body node id: node} per iteration, in
    the order they ran; ``node_for[original node id]``: the node standing for it."""

    def __init__(self, original, program, values, adjoints, iterations, node_for, notes):
        super().__init__(program, values, adjoints)
        self.original = original
        self.iterations = iterations
        self.node_for = node_for
        self._notes = notes

    def iteration_note(self, node_id) -> str:
        """"scan, iteration 2 of 5" for a node of an iteration's copy, else ""."""
        return self._notes.get(node_id, "")


def iteration_note(trace, node_id) -> str:
    """The iteration a drawn node belongs to ("scan, iteration 2 of 5"), or "" (any
    trace: a plain trace's nodes belong to none)."""
    return trace.iteration_note(node_id) if isinstance(trace, UnrolledTrace) else ""


def walk_view(trace):
    """The trace a walkthrough steps through: unrolled when every loop of it kept its
    iterations (each iteration then steps on its own), else ``trace`` itself."""
    return unroll(trace) if not isinstance(trace, UnrolledTrace) and can_unroll(trace) \
        else trace


def loops_of(trace) -> list:
    """The loop nodes the trace ran (its own, not those nested in bodies)."""
    return [n for n in trace.nodes if is_loop(n)]


def can_unroll(trace) -> bool:
    """Whether every loop of ``trace`` kept all its iterations (at least one loop)."""
    loops = loops_of(trace)
    return bool(loops) and all(_run_ok(trace, n) for n in loops)


def _run_ok(trace, loop) -> bool:
    run = trace.loop_run(loop)
    return run is not None and run.complete and run.count > 0


def _check(trace, loop):
    spec = loop.attrs["spec"]
    run = trace.loop_run(loop)
    where = f" built at {spec.where}" if spec.where else ""
    if run is None:
        raise UnrollError(f"{spec.name}{where}: this trace kept no iterations of it (a "
                          "trace from prog.trace(...) does); unroll needs them")
    if not run.complete:
        raise UnrollError(
            f"{spec.name}{where} ran {run.count} iterations; unroll=True draws at most "
            f"{RECORD_LIMIT} (more copies of the body would not be read). Trace a shorter "
            f"run, or draw the loop as one box: draw(tr), with expand=[{spec.name!r}] "
            "for its body")
    if run.count == 0:
        raise UnrollError(f"{spec.name}{where} ran no iteration: there is nothing to unroll")
    return run


class _Builder:
    """Copies the trace's nodes into a new graph, loops unrolled (see ``unroll``)."""

    def __init__(self, trace):
        self.trace = trace
        self.graph = Graph()
        self.mapped = {}          # original node id -> new node
        self.overlay = {}         # new node id -> the run's own value
        self.feeds = {}           # new placeholder name -> its fed value
        self.iterations = {}
        self.notes = {}

    def copy(self, node):
        if is_loop_result(node) and node.inputs[0].id in self.mapped:
            results = self.mapped[node.inputs[0].id]
            if node.attrs["index"] >= len(results):   # a body's recorded random draws
                raise UnrollError(
                    f"{node.inputs[0].attrs['spec'].name}: its body draws random values and "
                    "a derivative reads the recorded draws; unroll=True does not write "
                    "those out yet: draw(tr) shows the loop as one box")
            self.mapped[node.id] = new = results[node.attrs["index"]]
            if node in self.trace:
                self.overlay.setdefault(new.id, self.trace[node])
            return
        with ExitStack() as scopes:
            for s in node.scope:
                scopes.enter_context(name_scope(s, self.graph))
            if is_loop(node):
                self.mapped[node.id] = self.unroll_loop(node, _check(self.trace, node))
                return
            new = self.leaf(node) if node.op is None else apply(
                node.op, *[self.mapped[i.id] for i in node.inputs], **node.attrs)
        if node.op is not None and L.user_name(node):
            _name(new, L.base_name(node))
        self.mapped[node.id] = new
        if node in self.trace:
            self.overlay[new.id] = self.trace[node]

    def leaf(self, node):
        from flowgrad.leaves import constant, placeholder, variable
        base = L.base_name(node)
        if node.kind == "placeholder":
            value = self.trace[node]
            new = placeholder(base, np.shape(value), node.dtype)
            self.feeds[new.name] = value
            return new
        if node.kind == "variable":
            return variable(self.trace[node], name=base, dtype=node.dtype)
        return constant(node.value, name=base if L.user_name(node) else None)

    def unroll_loop(self, loop, run):
        spec = loop.attrs["spec"]
        ins = [self.mapped[i.id] for i in loop.inputs]
        if spec.kind == "cond":
            return self.unroll_cond(loop, spec, run, ins)
        nc, nx = spec.n_carry, spec.n_xs
        carry, xs, caps = ins[:nc], ins[nc:nc + nx], ins[nc + nx:]
        T = run.count
        steps = range(T - 1, -1, -1) if spec.reverse else range(T)
        ys = [[None] * T for _ in range(spec.n_ys)]
        stacks = [[None] * T for _ in range(nc)]
        names = carry_names(spec, loop.inputs[:nc])
        body, copies = spec.bodies[0], []
        for n, t in enumerate(steps, 1):
            label = f"{spec.name} · iteration {n} of {T}"
            with name_scope(label, self.graph):
                x_t = [_name(x[t], f"{x_name(loop.inputs[nc + j], j, nx)}_{t + 1}")
                       for j, x in enumerate(xs)]
                self.notes.update((x.id, label.replace(" · ", ", ")) for x in x_t)
                m = self.inline(body, carry + x_t, caps, spec.caps_of[0], run.values[t], label)
            for k in range(nc):
                stacks[k][t] = carry[k]
            outs = [m[o.id] for o in body.outs]
            carry = outs[:nc]
            for k, c in enumerate(carry):
                if c.scope and c.scope[-1] == label:   # made in this copy (not passed on)
                    _name(c, f"{names[k]}_{t + 1}")
            for j in range(spec.n_ys):
                ys[j][t] = _name(outs[nc + j], f"{y_name(j, spec.n_ys)}_{t + 1}") \
                    if outs[nc + j].scope[-1:] == (label,) else outs[nc + j]
            copies.append(m)
        self.iterations[loop.id] = copies
        stacked = [_stack(y, y_name(j, spec.n_ys) + "s") for j, y in enumerate(ys)]
        return carry + stacked + [_stack(s, f"{names[k]} entering") for k, s in
                                  enumerate(stacks)]

    def unroll_cond(self, loop, spec, run, ins):
        nc = spec.n_carry
        k = run.branch
        label = f"{spec.name} · {'then' if k == 0 else 'else'} branch taken"
        with name_scope(label, self.graph):
            m = self.inline(spec.bodies[k], ins[1:1 + nc], ins[1 + nc:], spec.caps_of[k],
                            run.values[0], label)
        self.iterations[loop.id] = [m]
        return [m[o.id] for o in spec.bodies[k].outs]

    def inline(self, body, args, caps, caps_of, values, label):
        """Body inlined on ``args``; its new nodes get this iteration's values."""
        m = inline_all(body, args, [caps[i] for i in caps_of])
        own = {p.id for p in body.params + body.cap_params}
        for bid, new in m.items():
            if bid not in own and bid in values:
                self.overlay[new.id] = values[bid]
                self.notes[new.id] = label.replace(" · ", ", ")
        return m


def _stack(nodes, label):
    """The per-iteration nodes stacked on axis 0, drawn as one box (a composite)."""
    from flowgrad.composite import composite
    from flowgrad.ops import stack
    with composite(label):
        return stack(nodes, axis=0)


def _name(node, name):
    """Name ``node`` where the name is free (a user's node may hold it already)."""
    try:
        node.named(name)
    except ValueError:
        pass
    return node


def _stem(node):
    """A carry's or xs's letter from the user's name of what enters: h0 → h, xs → x."""
    name = L.user_name(node) if node is not None else None
    if not name:
        return None
    for suffix in ("_0", "0", "₀"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def carry_names(spec, inits) -> list:
    """The letters of a loop's carries, from the user's names of the initial carries
    (h0 → h), else h (scan) or c (while); a fori_loop's counter is i."""
    if spec.name == "fori_loop":      # carry 0 is the counter i
        rest = [_stem(n) or ("c" if len(inits) == 2 else f"c{k}")
                for k, n in enumerate(inits[1:], 1)]
        return ["i"] + rest
    base = "h" if spec.kind == "scan" else "c"
    return [_stem(n) or (base if len(inits) == 1 else f"{base}{k}")
            for k, n in enumerate(inits)]


def x_name(node, j, nx):
    """The letter of an x slice: the stacked input's user name less its "s" (xs → x)."""
    name = L.user_name(node)
    if name and name.endswith("s") and len(name) > 1:
        return name[:-1]
    return "x" if nx == 1 else f"x{j}"


def y_name(j, ny):
    """The letter of a scan's per-step output j."""
    return "y" if ny == 1 else f"y{j}"


def _same_run(graph, values, kept):
    """The adjoints are computed on the written-out graph: they are this run's only if
    its forward values are. A value that differs (a random draw made again) would make
    them another run's, so it is refused, naming the node."""
    from flowgrad.backends import to_numpy
    for nid, want in kept.items():
        got = values.get(nid)
        if got is None or is_loop(graph.node(nid)):
            continue
        a, w = np.asarray(to_numpy(got)), np.asarray(to_numpy(want))
        if a.shape != w.shape or (a.dtype.kind in "fc" and not np.allclose(
                a, w, rtol=1e-9, atol=1e-300, equal_nan=True)):
            raise UnrollError(
                f"unroll: {graph.node(nid).name} computes another value when the loops "
                "are written out than in the traced run (it draws random numbers?), so "
                "the adjoints drawn would not be this run's; trace a graph without random "
                "ops to draw it unrolled with adjoints")


def _same_gradient(trace, mapped, values, adj):
    """The written-out graph's v̄ of each input and variable must be the trace's (the
    loops' own backward passes): a drawing never shows another gradient than the run's.
    (A loop's one backward pass gets every result's cotangent at once, so a custom rule
    nonlinear in its cotangent sees the same sum in both; this check keeps it so.)"""
    from flowgrad.backends import to_numpy
    for node in trace.nodes:
        if node.kind not in ("placeholder", "variable") or not trace.has_adjoint(node):
            continue
        new = adj.get(mapped[node.id])
        mine = np.asarray(to_numpy(values[new.id])) if new is not None else 0.0
        theirs = np.asarray(to_numpy(trace.adjoint(node)))
        if not np.allclose(mine, theirs, rtol=1e-9, atol=1e-12, equal_nan=True):
            raise UnrollError(
                f"unroll: the loops written out give {L.display_name(node)}'s adjoint "
                f"{L.one_line(mine, 6, 6)}, the loops' own backward passes "
                f"{L.one_line(theirs, 6, 6)}; refused rather than drawn with either")


def unroll(trace) -> UnrolledTrace:
    """``trace`` with each loop drawn out, one copy of its body per iteration (the module
    docstring): a Trace of its own (``draw`` and ``walkthrough`` take it as any other).
    A ``UnrollError`` when a loop ran more than ``RECORD_LIMIT`` (12) iterations."""
    if not isinstance(trace, Trace):
        raise UnrollError(f"unroll=True needs a Trace (prog.trace(...)): it draws the "
                          f"values of each iteration of one run, not a {type(trace).__name__}")
    b = _Builder(trace)
    with b.graph:
        for node in trace.nodes:
            b.copy(node)
    outs = [b.mapped[o.id] for o in trace.outputs]
    from flowgrad.engine.program import Program
    backend = trace.program.backend
    first = outs[0]
    adj = {}
    if trace.adjoint_nodes and first.shape == () and first.dtype.kind == "f":
        leaves = [b.graph.node(i) for i in ancestors([first])
                  if b.graph.node(i).kind in ("placeholder", "variable")]
        adj = fg_adjoints(first, leaves or None)
    full = Program(outs + list(adj.values()), backend, keep_all=True)
    values = full.values(**b.feeds)
    if adj:
        _same_run(b.graph, values, b.overlay)
        _same_gradient(trace, b.mapped, values, adj)
    values.update(b.overlay)          # every value the run itself computed
    program = Program(outs, backend, keep_all=True)
    return UnrolledTrace(trace, program, values, adj, b.iterations, b.mapped, b.notes)


def unrolled_view(what, loss=None, wrt=None):
    """``(unrolled trace, loss, wrt)`` for ``draw(what, unroll=True)``: the nodes a
    caller named in the original graph mapped to the ones standing for them."""
    if isinstance(what, Trace) and not isinstance(what, UnrolledTrace) \
            and not loops_of(what):
        return what, loss, wrt          # nothing to write out
    ut = what if isinstance(what, UnrolledTrace) else unroll(what)

    def mapped(n):
        return ut.node_for.get(n.id, n) if n.graph is ut.original.graph else n

    if loss is not None:
        loss = mapped(loss)
    if wrt is not None:
        wrt = [mapped(n) for n in ([wrt] if hasattr(wrt, "graph") else wrt)]
    return ut, loss, wrt
