"""compile: prune to what the outputs need, order once, emit a flat plan; Program runs it.

The plan is a list of instructions ``(kernel, input slots, output slot, slots to
free)`` over a list of value slots. Running it never consults networkx: the hot
path is one loop over that list. Each intermediate value is dropped right after
its last reader, unless it is an output (or the program keeps everything, for a
trace). Ordering is by node id, which is topological by construction.
"""
from __future__ import annotations

from .autodiff import ancestors
from .backends import get_backend
from .errors import FeedError
from .graph import Node, same_graph
from .simplify import simplify
from . import feeds as _feeds
from . import codegen as _codegen


def _as_outputs(outputs):
    if isinstance(outputs, Node):
        return [outputs], True
    outputs = list(outputs)
    if not outputs or not all(isinstance(o, Node) for o in outputs):
        raise TypeError("compile takes a node or a non-empty list of nodes")
    return outputs, False


class Program:
    """A compiled, reusable evaluation of some output nodes. Call it with feeds."""

    def __init__(self, outputs, backend=None, keep_all=False, codegen=True):
        outputs, self._single = _as_outputs(outputs)
        self.graph = same_graph(outputs)
        self.outputs = outputs
        self.backend = get_backend(backend)
        self._keep_all = keep_all
        self._trace_program = None
        self._adjoints = None
        self._codegen = codegen and not keep_all   # traces stay on the interpreter
        self._build(ancestors(outputs))

    # -- compile ----------------------------------------------------------------
    def _build(self, order):
        g, xp, backend = self.graph, self.backend.xp, self.backend
        data = g.nx.nodes
        self.order = order
        backend.check_ops(g, order)  # an op this backend lacks: BackendError now, naming it
        # simplify maps the pruned ids to a smaller plan: CSE, folding, identities
        simp = simplify(g, order, [o.id for o in self.outputs], self._keep_all)
        kept = sorted(set(simp.leaves) | set(simp.consts) | {s[0] for s in simp.steps})
        self._kept = kept
        own = {nid: k for k, nid in enumerate(kept)}
        slot = {nid: own[simp.rep[nid]] for nid in order if simp.rep[nid] in own}
        slot.update(own)
        self._slot = slot
        template = [None] * len(kept)
        self.placeholders, self._variables, steps = {}, [], []
        for nid in simp.leaves:
            if data[nid]["kind"] == "placeholder":
                self.placeholders[nid] = g.node(nid)
            else:
                self._variables.append((own[nid], g.node(nid)))
        for nid, v in simp.consts.items():
            template[own[nid]] = v if data[nid]["weak"] else backend.asarray(v)
        for nid, op, attrs, ins in simp.steps:
            steps.append((op.kernel(xp, attrs), tuple(own[i] for i in ins), own[nid]))
        self._template = template
        self._out_slots = [slot[o.id] for o in self.outputs]
        self._plan = self._with_frees(steps)
        # generated code (flowgrad/codegen.py): one Python function for the whole plan
        self._step_ops = [(op, attrs, nid) for nid, op, attrs, _ in simp.steps]
        self._generated = _codegen.generate(self) if self._codegen else None
        self._call = _codegen.make_caller(self, self._generated) if self._generated else None

    def _with_frees(self, steps):
        """Attach to each step the slots whose last reader it is (never outputs)."""
        keep = set(self._out_slots)
        last = {}
        for k, (_, ins, _) in enumerate(steps):
            for s in ins:
                last[s] = k
        frees = [[] for _ in steps]
        if not self._keep_all:
            for s, k in last.items():
                if s not in keep:
                    frees[k].append(s)
        plan = []
        for (fn, ins, out), fr in zip(steps, frees):
            # arity-specialised tuples keep the loop in _run free of list building
            plan.append((len(ins), fn, ins[0] if ins else None,
                         ins[1] if len(ins) > 1 else None, ins, out, tuple(fr)))
        return plan

    # -- run --------------------------------------------------------------------
    def _bind(self, args, kwargs) -> list:
        fed = _feeds.resolve(self.graph, _feeds.collect(args, kwargs))
        missing = [p.name for nid, p in self.placeholders.items() if nid not in fed]
        if missing:
            raise FeedError(f"missing feed for placeholder(s) {missing}")
        vals = list(self._template)
        backend, slot = self.backend, self._slot
        for nid, p in self.placeholders.items():
            vals[slot[nid]] = _feeds.check(p, fed[nid], backend)
        for s, var in self._variables:
            v = fed.get(var.id)
            vals[s] = _feeds.check(var, v, backend) if v is not None else \
                backend.read_variable(var)
        return vals

    def _run(self, vals):
        for arity, fn, a, b, ins, out, frees in self._plan:
            if arity == 1:
                vals[out] = fn(vals[a])
            elif arity == 2:
                vals[out] = fn(vals[a], vals[b])
            else:
                vals[out] = fn(*[vals[i] for i in ins])
            if frees:
                for s in frees:
                    vals[s] = None
        return vals

    def _on_step_error(self, k, exc):
        """A step of the plan (index k into ``_plan``) raised ``exc``. Stub on this
        branch: re-raise as is (the reliability branch names the node here)."""
        raise exc

    def __call__(self, *args, **kwargs):
        """Run with feeds (``prog(x=X)`` or ``prog({x: X})``); returns the output values."""
        if self._call is not None:
            return self._call(args, kwargs)
        vals = self._run(self._bind(args, kwargs))
        out = self.backend.finish([vals[s] for s in self._out_slots])
        return out[0] if self._single else out

    def values(self, *args, **kwargs) -> dict[int, object]:
        """{node id: value} of every node, for a program compiled with keep_all."""
        vals = self.backend.finish(self._run(self._bind(args, kwargs)))
        return {nid: vals[s] for nid, s in self._slot.items()}

    def trace(self, *args, **kwargs):
        """Every value computed and, if the first output is a scalar, every adjoint v̄."""
        from .tracing import Trace
        if self._trace_program is None:
            first = self.outputs[0]
            if first.shape == () and first.dtype.kind in "fc":
                from .autodiff import adjoints
                # Adjoints of what the inputs and variables reach: a constant's v̄
                # (the exponent of x**2, say) is never asked for and may be log(<0).
                leaves = [self.graph.node(i) for i in ancestors([first])
                          if self.graph.nx.nodes[i]["kind"] in ("placeholder", "variable")]
                self._adjoints = adjoints(first, leaves or None)
            else:
                self._adjoints = {}
            extra = [a for a in self._adjoints.values()]
            self._trace_program = Program(self.outputs + extra, self.backend, keep_all=True)
        return Trace(self, self._trace_program.values(*args, **kwargs), self._adjoints)

    @property
    def n_steps(self) -> int:
        """How many op nodes one call executes."""
        return len(self._plan)

    def __repr__(self):
        names = ", ".join(o.name for o in self.outputs)
        return f"<flowgrad.Program [{names}] {self.n_steps} steps on {self.backend.name}>"


def compile(outputs, backend=None, codegen=True) -> Program:
    """Prune, order and plan the evaluation of ``outputs`` (a node or a list) once.

    ``codegen=False`` runs the plan on the reference interpreter loop instead of
    generated code (the tests compare the two)."""
    return Program(outputs, backend, codegen=codegen)


def run(outputs, feed=None, backend=None, **kwargs):
    """One-shot evaluation; the compiled program is cached on the graph."""
    outs, _ = _as_outputs(outputs)
    b = get_backend(backend)
    key = (tuple(o.id for o in outs), isinstance(outputs, Node), b)  # the instance: two DaskBackends may differ
    cache = outs[0].graph._program_cache
    prog = cache.get(key)
    if prog is None:
        prog = cache[key] = Program(outputs, b)
    return prog(feed, **kwargs)
