"""A loop's body: a Python function traced once into a graph of its own.

``trace(fn, specs, name)`` calls ``fn`` on placeholders of a fresh ``fg.Graph`` (one per
flat argument, with the argument's shape and dtype) and returns a ``Body``: that graph,
its argument placeholders, its flat outputs and their structure, and the nodes of
enclosing graphs it read (its *captures*: an RNN's weights), each with the placeholder
that stands for it inside. The loop node takes the captures as inputs, so their values
reach every iteration and their gradients reach them.

Capture happens in ``ops.base.apply``, the one place nodes are made: when an op's
arguments mix the body's graph with an enclosing one, apply asks ``CAPTURE_HOOK`` (set
here) to swap the outer nodes for placeholders. An op whose arguments are all outer
nodes is simply built in the outer graph (it does not depend on the iteration): the body
captures its result when it reaches the body.

A body runs through the public ``Program`` API: ``Body.call`` feeds one compiled
program per backend. ``inline`` replays a body's nodes into the graph being built
(the derivative loops: a vjp body is the forward body followed by its adjoints).
"""
from __future__ import annotations

import threading

import numpy as np

from ..errors import ShapeError, UsageError
from ..graph import Graph, Node
from ..pytree import flatten
from ..ops import base as _base
from ..engine.plan import DEFAULT_OPTIONS, flags_of

__all__ = ["Body", "trace", "capture", "capture_args", "captured_outer", "inline",
           "inline_all", "tracing_graph", "weak_cast"]


class _Tracer:
    """One body being traced: its graph and the captures made so far."""

    def __init__(self, graph, outer):
        self.graph = graph
        self.outer = outer            # the graphs around it, innermost last
        self.captured: list[Node] = []       # outer nodes, in order of first use
        self.params: dict[tuple, Node] = {}  # (graph id, node id) -> its placeholder

    def capture(self, node: Node) -> Node:
        key = (id(node.graph), node.id)
        inner = self.params.get(key)
        if inner is None:
            with self.graph:
                from ..leaves import placeholder
                inner = placeholder(f"capture_{len(self.captured)}", node.shape,
                                    node.dtype)
            self.captured.append(node)
            self.params[key] = inner
        return inner


class _State(threading.local):
    def __init__(self):
        self.stack: list[_Tracer] = []


_state = _State()


def _hook(args):
    """ops.base.CAPTURE_HOOK: ``args`` with outer nodes swapped, or None (not tracing,
    or a node of an unrelated graph: apply then raises its usual GraphError)."""
    stack = _state.stack
    if not stack:
        return None
    tracer = stack[-1]
    out = []
    for a in args:
        if isinstance(a, Node) and a.graph is not tracer.graph:
            if not any(a.graph is g for g in tracer.outer):
                return None
            a = tracer.capture(a)
        out.append(a)
    return out


_base.CAPTURE_HOOK = _hook


def tracing_graph():
    """The graph of the innermost body being traced by this thread, or None."""
    return _state.stack[-1].graph if _state.stack else None


def capture(node: Node) -> Node:
    """The innermost traced body's placeholder for outer ``node`` (made on first use)."""
    tracer = _state.stack[-1]
    return node if node.graph is tracer.graph else tracer.capture(node)


def capture_args(args):
    """``args`` (nodes and other values) with the nodes of graphs around the body being
    traced swapped for its placeholders, as ``apply`` does for an op's arguments; None
    when no body is being traced or a node belongs to an unrelated graph. A custom
    function or remat block called in a body on a weight from outside takes it this
    way (flowgrad/custom.py's ``graph_of``)."""
    return _hook(args)


def captured_outer(node: Node):
    """The node of an enclosing graph that ``node``, a capture placeholder of a body
    being traced by this thread, stands for (through every level of nested bodies);
    None for any other node. An error about a capture names the user's node, not the
    placeholder ("capture_0")."""
    found = None
    for tracer in reversed(_state.stack):       # innermost body first
        if node.graph is not tracer.graph:
            continue
        outer = next((o for o in tracer.captured
                      if tracer.params[(id(o.graph), o.id)].id == node.id), None)
        if outer is None:
            break
        found = node = outer                    # maybe itself an outer body's capture
    return found


class Body:
    """A traced function (see the module docstring). ``params``: its argument
    placeholders, flat; ``outs``: its flat output nodes; ``out_def``: their structure;
    ``captured``: the outer nodes it reads, ``cap_params`` their placeholders."""

    def __init__(self, name, graph, params, outs, out_def, captured, cap_params):
        self.name = name
        self.graph = graph
        self.params = list(params)
        self.outs = list(outs)
        self.out_def = out_def
        self.captured = list(captured)
        self.cap_params = list(cap_params)
        self._programs = {}
        self._lock = threading.Lock()

    def __repr__(self):
        return f"<loop body {self.name!r}: {len(self.graph)} nodes>"

    def program(self, xp, extra=(), options=None):
        """``(the body's Program for the array module xp, its feeds)``, made once. The
        feeds are ``(name, position)`` of the placeholders it reads, positions counting
        the arguments then the captures: fed by name, the call binds each with one
        dict look-up (an iteration's binding was a quarter of a small body's time).
        ``extra``: body nodes computed after the outputs (its draws, when recorded).
        ``options``: the ProgramOptions of the program running the loop (codegen,
        verify), which this one is compiled with; None: the defaults."""
        key = (xp, tuple(n.id for n in extra)) if extra else xp   # per iteration: cheap
        if options is not None and options is not DEFAULT_OPTIONS:
            key = (key, options)
        made = self._programs.get(key)
        if made is None:
            with self._lock:
                made = self._programs.get(key)
                if made is None:
                    from ..engine.program import compile as fg_compile
                    prog = fg_compile(self.outs + list(extra), backend=_backend(xp),
                                      **flags_of(options))
                    every = self.params + self.cap_params
                    feeds = [(p.name, k) for k, p in enumerate(every)
                             if p.id in prog.placeholders]
                    made = self._programs[key] = (prog, feeds)
        return made

    def call(self, xp, args, caps, extra=(), options=None):
        """The outputs' values (a list) for argument values ``args`` and capture values
        ``caps`` (flat, in ``params``/``cap_params`` order), then those of ``extra``;
        ``options`` as ``program``'s."""
        prog, feeds = self.program(xp, extra, options)
        values = list(args) + list(caps)
        return prog.call((), {name: values[k] for name, k in feeds})   # (no ** repacking)

    def call_values(self, xp, args, caps, options=None):
        """``(the outputs' values, {body node id: value} of every node)``: one iteration
        kept whole, for a trace (loop_op.recording_loops). Runs a keep-all program of
        the body, made once per backend (and ``options``) beside ``program``'s."""
        key = (xp, "all", options or DEFAULT_OPTIONS)
        made = self._programs.get(key)
        if made is None:
            with self._lock:
                made = self._programs.get(key)
                if made is None:
                    from ..engine.program import Program
                    prog = Program(self.outs, _backend(xp), keep_all=True, **flags_of(options))
                    every = self.params + self.cap_params
                    made = self._programs[key] = (
                        prog, [(p.name, k) for k, p in enumerate(every)
                               if p.id in prog.placeholders])
        prog, feeds = made
        values = list(args) + list(caps)
        got = prog.values(**{name: values[k] for name, k in feeds})
        for p, v in zip(self.params + self.cap_params, values):
            got.setdefault(p.id, v)        # an argument the outputs do not read
        return [got[o.id] for o in self.outs], got

    def keeps_all_of(self, nodes) -> bool:
        """Whether ``call_values`` computes every node of ``nodes`` (its keep-all program
        runs what the outputs need: a trace records an iteration only then)."""
        if not nodes:
            return True
        need = set(self.graph.ancestors([o.id for o in self.outs]))
        return all(n.id in need for n in nodes)

    def draws(self) -> list:
        """What a run records per iteration for the derivative loops, in id order: the
        random nodes the outputs depend on (random ops are ``stateful``), and for a
        loop inside the body that draws, the nodes reading its recorded draws."""
        from .loop_op import is_loop
        if not self.outs:
            return []
        handles, found = self.graph.handles, []
        for i in self.graph.ancestors([o.id for o in self.outs]):
            node = handles[i]
            if node.op is not None and node.op.stateful:
                found.extend(self.loop_draws(node) if is_loop(node) else [node])
        return found

    def loop_draws(self, loop, make=True):
        """The nodes of this body that read the recorded draws of ``loop``, a loop
        inside it (``make``: made on first use, which makes the loop record them);
        None when some are missing and ``make`` is false."""
        from .loop_op import is_loop_result, loop_out_op
        spec = loop.attrs["spec"]
        have = {n.attrs["index"]: n for n in self.graph.nodes
                if is_loop_result(n) and n.inputs[0].id == loop.id}
        want = [spec.n_declared + j for j in range(len(spec.draw_slots))]
        if not make:
            return [have[k] for k in want] if all(k in have for k in want) else None
        with self.graph:
            return [have[k] if k in have else
                    _base.apply(loop_out_op, loop, *loop.inputs, index=k) for k in want]


def _backend(xp):
    """The backend whose array module is ``xp``: a body runs on its loop's backend (a
    lazy one, dask, never gets here: its loops run as one task on numpy arrays)."""
    from ..backends import backend_of
    return backend_of(xp)


def trace(fn, specs, name, arg_def=None, outer=None, weak=None) -> Body:
    """Trace ``fn`` once on placeholders with ``specs`` ([(shape, dtype)], flat).
    ``arg_def``: how to hand the flat placeholders to ``fn`` (a callable of the list).
    ``weak``: {position: Python number} of the arguments that entered as Python numbers
    (a loop's carry ``0.0``), whose output of the same position is their next value:
    their dtype is settled first (``_settle_weak_args``), so ``fn`` runs twice."""
    graph = Graph()
    outer = list(outer or [])
    for t in _state.stack:             # every body being traced around this one, and
        for g in (*t.outer, t.graph):  # the graphs around those (nested loops)
            if not any(g is o for o in outer):
                outer.append(g)
    tracer = _Tracer(graph, outer)
    from ..leaves import placeholder
    weak = weak or {}
    with graph:
        params = {k: placeholder(f"arg_{k}", shape, dtype) for k, (shape, dtype) in
                  enumerate(specs) if k not in weak}
    if weak:
        specs = _settle_weak_args(fn, arg_def, specs, weak, params, tracer, name)
        with graph:
            params.update({k: placeholder(f"arg_{k}", *specs[k]) for k in sorted(weak)})
    params = [params[k] for k in range(len(specs))]
    outs, out_def = _run(fn, arg_def, params, tracer, name)
    cap_params = [tracer.params[(id(n.graph), n.id)] for n in tracer.captured]
    return Body(name, graph, params, outs, out_def, tracer.captured, cap_params)


def _run(fn, arg_def, args, tracer, name):
    """``fn`` called on ``args`` (nodes of the tracer's graph) with the tracer open:
    (its flat output nodes, their structure)."""
    _state.stack.append(tracer)
    try:
        with tracer.graph:
            result = fn(args) if arg_def is None else arg_def(args)
            outs, out_def = flatten(result)
            return [_as_body_node(o, tracer, name, k) for k, o in enumerate(outs)], out_def
    finally:
        _state.stack.pop()


def _settle_weak_args(fn, arg_def, specs, weak, params, tracer, name):
    """``specs`` with the dtype of each argument in ``weak`` settled as JAX settles a
    weakly typed loop carry (its ``_promote_weak_typed_inputs``): ``fn`` is first called
    with that argument as its Python number itself (a weak constant, so ``c + x`` of a
    float32 ``x`` is float32 and ``c * 2`` stays a number); where the output in its
    position comes out typed, with a dtype other than the argument's default one, the
    argument takes ``np.result_type(number, that dtype)`` when the number survives the
    cast (``weak_cast``), else it keeps its default dtype and the carry check refuses
    the mismatch. This first call builds into the body's own graph (a layer first
    called in the body builds its variables there, and the second call reuses them);
    what only it built is never run. A first call that raises leaves the defaults (a
    body that cannot take a constant there): the second call raises again if the body
    is wrong whatever the dtype."""
    from ..leaves import constant_in
    args = [constant_in(tracer.graph, weak[k]) if k in weak else params[k]
            for k in range(len(specs))]
    try:
        with np.errstate(all="ignore"):   # (the number is folded through the body)
            outs, _ = _run(fn, arg_def, args, tracer, name)
    except Exception:
        return specs
    specs = list(specs)
    for k, value in weak.items():
        shape, dtype = specs[k]
        out = outs[k] if k < len(outs) else None
        if out is None or (out.op is None and out.weak) or out.shape != shape \
                or out.dtype == dtype:
            continue
        want = np.result_type(value, out.dtype)
        if weak_cast(value, want) is not None:
            specs[k] = (shape, want)
    return specs


def weak_cast(value, dtype):
    """The Python number ``value`` as a 0-d array of ``dtype`` where numpy's rule for a
    weakly typed scalar keeps that dtype (``np.result_type(dtype, value) == dtype``) and
    the value survives the cast; None otherwise: a float for an int dtype, a number for
    a bool one, an int the dtype cannot hold, a finite float it rounds to ±inf."""
    dtype = np.dtype(dtype)
    if not isinstance(value, (bool, int, float, complex)):   # (a complex has no .item)
        value = value.item()
    if np.result_type(dtype, value) != dtype:
        return None
    try:
        with np.errstate(over="ignore"):     # (an overflow to inf is refused below)
            cast = np.asarray(value, dtype=dtype)
    except (OverflowError, ValueError):
        return None
    if cast.item() != value if dtype.kind in "iub" else \
            bool(np.isfinite(cast)) != bool(np.isfinite(value)):
        return None
    return cast


def _as_body_node(value, tracer, name, k) -> Node:
    if isinstance(value, Node):
        if value.graph is tracer.graph:
            return value
        if any(value.graph is g for g in tracer.outer):
            return tracer.capture(value)
        raise UsageError(f"{name}: output {k} of the body is a node of an unrelated graph")
    if value is None:
        raise UsageError(f"{name}: output {k} of the body is None; a body returns nodes "
                         "(or numbers)")
    return _base.as_node(value, tracer.graph)


def inline(body: Body, args, caps, draws=None) -> list:
    """Replay ``body``'s nodes into the graph being built, with its argument
    placeholders read as ``args`` and its captures as ``caps`` (nodes or values);
    returns its output nodes. One pass in id order (a body's ids are topological).
    ``draws``: {random node id: node} read in place of drawing again (the values the
    forward drew in this iteration), so a derivative sees the forward's draws."""
    mapped = inline_all(body, args, caps, draws)
    return [mapped[o.id] for o in body.outs]


def inline_all(body: Body, args, caps, draws=None) -> dict:
    """``inline``, returning {body node id: the node standing for it} for every node the
    outputs need (an unrolled drawing names and labels each iteration's copies)."""
    data = body.graph.handles
    mapped: dict[int, Node] = dict(draws or {})
    for p, a in zip(body.params, args):
        mapped[p.id] = a
    for p, c in zip(body.cap_params, caps):
        mapped[p.id] = c
    needed = body.graph.ancestors([o.id for o in body.outs]) if body.outs else []
    replays: dict = {}
    for nid in needed:
        if nid in mapped:
            continue
        d = data[nid]
        kind = d.kind
        if kind == "constant":
            mapped[nid] = _constant_like(d)
        elif kind != "op":
            raise UsageError(f"{body.name}: the body holds {kind} {d.name!r}; a body "
                             "reads its carry, its slices and the nodes around it only")
        else:
            mapped[nid] = _replay_op(body, nid, d, mapped, replays)
    return mapped


def _replay_op(body, nid, d, mapped, replays):
    """Op node ``nid`` of ``body`` re-applied on mapped inputs. A loop inside the body
    whose draws were recorded (and are given in ``mapped``) is rebuilt reading them
    (grad.replay), and its results are read from the rebuilt loop."""
    from .loop_op import loop_op, loop_out_op
    ins = [mapped[i] for i in d.input_ids]
    if d.op is loop_out_op and d.input_ids[0] in replays:
        return replays[d.input_ids[0]](d.attrs["index"])
    if d.op is loop_op and d.attrs["spec"].draw_slots:
        recs = body.loop_draws(body.graph.handles[nid], make=False)
        if recs is not None and all(r.id in mapped for r in recs):
            from .grad import replay
            loop, replays[nid] = replay(d.attrs["spec"], ins, [mapped[r.id] for r in recs])
            return loop
    return _base.apply(d.op, *ins, **d.attrs)


def _constant_like(d):
    from ..graph import default_graph
    value = d.value if d.weak else np.asarray(d.value, dtype=d.dtype)
    return _base.as_node(value, default_graph())


def same_spec(name, what, got, want, shape=None):
    """A carry entry must keep its shape and dtype through the body: a ShapeError naming
    the entry and the user's line otherwise. ``got``/``want``: nodes; ``shape``: the
    shape the carry is declared with, if not ``want``'s."""
    shape = want.shape if shape is None else shape
    if got.dtype == want.dtype and _same_shape(got.shape, shape):
        return
    from ..ops.base import fmt_shape, user_site
    site = user_site()
    where = f"{site[0]}:{site[1]}" if site else None
    raise ShapeError(f"{name}: {what} enters the body with shape {fmt_shape(shape)} "
                     f"and dtype {want.dtype} but leaves it with shape "
                     f"{fmt_shape(got.shape)} and dtype {got.dtype}; a carry must keep its "
                     f"shape and dtype" + (f"\n  at {where}" if where else ""))


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))
