"""compile: prune to what the outputs need, order once, emit a flat plan; Program runs it.

The plan is a list of instructions ``(kernel, input slots, output slot, slots to
free)`` over a list of value slots; a large one (``FLAT_STEPS``) is held as parallel
arrays that read as the same instructions (``_FlatPlan``). Running it never consults networkx: the hot
path is one loop over that list. Each intermediate value is dropped right after
its last reader, unless it is an output (or the program keeps everything, for a
trace). Ordering is by node id, which is topological by construction.

Compiling is a few linear sweeps over plain dicts and lists (no networkx call per
node): a depth-first pruning, simplify's forward pass, and one backward sweep that
finds what the outputs need, each step's frees (a value's last reader is the first
one a backward sweep meets) and the slots. The instructions themselves (kernels,
slot tuples) are made when first needed: at once for the interpreter and for
generated array code, on the first fallback or error for a program that runs
generated scalar code.

Reliability costs nothing on the hot path: run-time lengths are checked by a list
compiled once (flowgrad.lengths), a failing kernel is found from the loop's state
after the exception (one try around the loop), and NaN/Inf checking runs a separate
loop (flowgrad.numerics). Outputs are copied only where they would alias storage the
caller or the graph owns (a fed array, a variable, an output listed twice).
"""
from __future__ import annotations

import gc
import threading
from array import array
from operator import itemgetter

from .autodiff import ancestors
from .backends import get_backend
from .errors import FeedError
from .graph import Node, gc_paused, same_graph
from .simplify import simplify
from .ops.base import Op
from . import feeds as _feeds
from . import lengths as _lengths
from . import numerics as _numerics
from .numerics import _state as _anomaly
from . import codegen as _codegen


def _as_outputs(outputs):
    if isinstance(outputs, Node):
        return [outputs], True
    outputs = list(outputs)
    if not outputs or not all(isinstance(o, Node) for o in outputs):
        raise TypeError("compile takes a node or a non-empty list of nodes")
    return outputs, False


def _pruned(outputs) -> list[int]:
    """Ids of every node the outputs depend on, ascending (= topological): the same
    list as ``autodiff.ancestors`` (Graph.ancestors: a sweep down the ids)."""
    return outputs[0].graph.ancestors([o.id for o in outputs])


#: plans with more steps than this are stored flat (``_FlatPlan``): ~8 bytes a field
#: instead of tuples, ints and dicts of ~400 bytes a step (the 10^6-node chain)
FLAT_STEPS = 200_000


def _slot_index(kept, flat, top=0):
    """{kept id: slot}: a dict, or for a flat plan whose ids are dense an ``array('q')``
    indexed by id, -1 where an id is not kept (8 bytes an id instead of ~80). ``top``:
    one past the highest pruned id, so that a pruned id above the last kept one (a
    step that simplified away) reads -1 too (_all_slots), not an IndexError."""
    top = max(kept[-1] + 1 if kept else 0, top)
    if not flat or top > 4 * len(kept) + 64:
        return dict(zip(kept, range(len(kept))))
    own = array("q", [-1]) * top
    for k, nid in enumerate(kept):
        own[nid] = k
    return own


def _all_slots(moved, own, outputs):
    """{id: its representative's slot} for every pruned id whose value is kept;
    ``moved`` is simplify's rep without its identity entries."""
    order = _pruned(outputs)           # the compile's list, found again (not kept)
    if isinstance(own, dict):
        got = list(map(own.get, map(moved.get, order, order)))
        missing = None
    else:
        got = list(map(own.__getitem__, map(moved.get, order, order)))
        missing = -1
    slot = dict(zip(order, got))     # order: every pruned id, ascending
    if missing in got:               # few, usually: found with C-level scans
        k = got.index(missing)
        try:
            while True:
                del slot[order[k]]
                k = got.index(missing, k + 1)
        except ValueError:
            pass
    return slot


class _SlotMap(dict):
    """A program's {node id: slot}, filled in two parts: at compile, the leaves' and the
    outputs' (all a call's binding reads); every other pruned id's on the first read
    that may need them (a trace, ``values()``, an error report, ``.items()`` …). Every
    read but a look-up of a present key completes the map first, so no reader ever
    sees it partial; completing twice (two threads) writes the same entries."""

    __slots__ = ("_rest",)

    def __init__(self, known, moved, own, outputs):
        dict.__init__(self, known)
        self._rest = (moved, own, outputs)

    def add_known(self, nid):
        """Enter ``nid``'s slot now (a pruned id whose value is kept)."""
        moved, own, _ = self._rest
        dict.__setitem__(self, nid, own[moved.get(nid, nid)])

    def _complete(self):
        rest = self._rest
        if rest is not None:
            dict.update(self, _all_slots(*rest))
            self._rest = None          # only once every entry is in
        return self

    def __missing__(self, key):
        if self._rest is None:
            raise KeyError(key)
        return self._complete()[key]


def _completing(name):
    method = getattr(dict, name)

    def complete_first(self, *args, **kwargs):
        return method(self._complete(), *args, **kwargs)
    complete_first.__name__ = name
    return complete_first


for _name in ("get", "__contains__", "__iter__", "__reversed__", "__len__", "keys", "values",
              "items", "__eq__", "__ne__", "__repr__", "copy", "pop", "popitem", "setdefault",
              "update", "__or__", "__ror__", "__ior__"):
    setattr(_SlotMap, _name, _completing(_name))
# a copy or a pickle is a plain, complete dict
_SlotMap.__reduce_ex__ = lambda self, protocol: (dict, (dict(self._complete()),))


class _Made:
    """A Program attribute made on first read (``Program._materialize``), then an
    ordinary instance attribute (this descriptor has no __set__; tests may replace it)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, prog, owner=None):
        if prog is None:
            return self
        prog._materialize()
        return prog.__dict__[self.name]


class Program:
    """A compiled, reusable evaluation of some output nodes. Call it with feeds."""

    #: the interpreter's instructions ``(arity, kernel, a, b, input slots, output slot,
    #: slots to free)``, ``(op, attrs, id)`` and the id each step computes
    _plan = _Made()
    _step_ops = _Made()
    _step_nodes = _Made()

    def __init__(self, outputs, backend=None, keep_all=False, check_numerics=False,
                 codegen=True):
        outputs, self._single = _as_outputs(outputs)
        self.graph = same_graph(outputs)
        self.outputs = outputs
        self.backend = get_backend(backend)
        self._keep_all = keep_all
        self.check_numerics = bool(check_numerics)
        self._trace_program = None
        self._adjoints = None
        self._lock = threading.Lock()  # builds the trace program once
        self._plan_lock = threading.Lock()  # makes the plan once (_materialize)
        self._pending, self._n_steps = None, 0
        self._step_index = None  # {output slot: step}, made when a step first fails
        self._codegen = codegen and not keep_all   # traces stay on the interpreter
        with gc_paused():   # a plan over 10^5+ nodes: the collector's rescans cost ~2x
            self._build()

    @property
    def order(self) -> list[int]:
        """Ids of every node the outputs depend on, ascending: the list the compile
        planned. Found again on each read (graphs only grow, so it never changes), so
        a program does not keep 8 bytes a node for it (the 10^6-node chain: 24 MB)."""
        return _pruned(self.outputs)

    # -- compile ----------------------------------------------------------------
    def _build(self):
        # The build allocates a few objects per node and frees none: with the collector on,
        # each generation-2 pass rescans the whole (large) graph — up to half the time
        # of compiling a 20k-step plan. Nothing built here forms a cycle worth collecting.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._build_plan()
        finally:
            if enabled:
                gc.enable()

    def _build_plan(self):
        g, xp, backend = self.graph, self.backend.xp, self.backend
        data = g.nx._node      # nx's own {id: attrs}: a view's look-up costs a call
        order = _pruned(self.outputs)   # (a local: dropped before the plan is made)
        backend.check_ops(g, order)  # an op this backend lacks: BackendError now, naming it
        # simplify maps the pruned ids to a smaller plan: CSE, folding, identities
        simp = simplify(g, order, [o.id for o in self.outputs], self._keep_all)
        rep, defs = simp.rep, simp.defs
        # One backward sweep over the definitions (descending ids): what the outputs
        # need, and each step's frees. A value is freed by its last reader, which is the
        # first reader this sweep meets; outputs start live, so they are never freed
        # (and with keep_all everything starts live: nothing is freed).
        # live: a mark a byte by id (ids are dense; the pruning sweep makes one as long),
        # not a set of ~40 bytes an entry: at 10^6 nodes the set was the compile's peak
        live = bytearray(order[-1] + 1 if order else 0)
        for r in simp.roots:
            live[r] = 1
        kept = []              # kept ids, descending: live values and every leaf
        # the live steps, descending, as parallel lists (no container a step: everything
        # built here outlives the compile, and the collector then scans each object once):
        # ids, their definitions' op, attrs and ins (columns: simplify's definition tuples
        # are freed with its map below), and the ids each frees, flattened
        step_ids, ops, attrs, ins, n_freed, freed = [], [], [], [], [], []
        op_, at_, in_ = ops.append, attrs.append, ins.append
        consts = []
        # Descending ids. simplify stores only the definitions its graph node does not
        # hold (constants, remapped or rewritten steps); every other representative is
        # its graph node as is, op or leaf. A merged id is never live (live holds
        # representatives only). Popping frees each stored definition once read.
        pop = defs.pop
        for r in reversed(order):
            if not live[r]:
                continue
            kept.append(r)
            d = pop(r, None)
            if d is None:
                nd = data[r]
                op = nd["op"]
                if op is None:         # a leaf
                    continue
                at, ri = nd["attrs"], nd["inputs"]
            elif d[0] == "op":
                _, op, at, ri = d
            else:
                if d[0] == "const":
                    consts.append((r, d[1]))
                continue
            n = 0
            for i in ri:
                if not live[i]:
                    live[i] = 1
                    freed.append(i)
                    n += 1
            step_ids.append(r)
            op_(op)
            at_(at)
            in_(ri)
            n_freed.append(n)
        dead = [nid for nid in simp.leaves if not live[nid]]
        if dead:               # placeholders stay required after their uses simplify away
            kept = sorted(kept + dead)
        else:
            kept.reverse()
        self._kept = kept
        flat = len(step_ids) > FLAT_STEPS
        own = _slot_index(kept, flat, order[-1] + 1 if order else 0)
        leaves = simp.leaves
        # simplify's maps are spent: drop them before the plan is made (the compile's peak)
        moved = rep            # simplify's rep holds only ids merged into another
        del simp, rep, defs, live, pop
        # {id: slot}: the leaves' and outputs' now (binding a call needs no more), every
        # other pruned id's when something first asks (a trace, values(), an error)
        slot = _SlotMap({nid: own[moved.get(nid, nid)] for nid in leaves}, moved, own,
                        self.outputs)
        for o in self.outputs:
            slot.add_known(o.id)
        self._slot = slot
        template = [None] * len(kept)
        self.placeholders, self._variables = {}, []
        handles = g._handles
        for nid in leaves:
            if data[nid]["kind"] == "placeholder":
                self.placeholders[nid] = handles[nid]
            else:
                self._variables.append((own[nid], handles[nid]))
        for nid, v in consts:
            template[own[nid]] = v if data[nid]["weak"] else backend.asarray(v)
        self._template = template
        self._out_slots = [slot[o.id] for o in self.outputs]
        # The plan proper (kernels, slot tuples) is made on first use: a program that runs
        # generated scalar code never needs it unless a call falls back to arrays.
        self._n_steps = len(step_ids)
        self._pending = ((step_ids, ops, attrs, ins), n_freed, freed, own, xp, flat)
        del step_ids, ops, attrs, ins, n_freed, freed, op_, at_, in_
        # run-time lengths are checked between placeholders only: none without a None axis
        checks = _lengths.compile_checks(g, order) if any(
            None in data[nid]["shape"] for nid in self.placeholders) else None
        del order
        self._check_lengths = _lengths.LengthCheck(g, checks, slot) if checks else None
        self._copy_outs = self._aliasing_outputs(leaves)
        # generated code (flowgrad/codegen.py): one Python function for the whole plan
        self._generated = _codegen.generate(self) if self._codegen else None
        self._call = _codegen.make_caller(self, self._generated) if self._generated else None
        if self._call is None:
            self._materialize()          # the interpreter runs the plan: make it now

    def _materialize(self):
        """Make ``_plan``, ``_step_ops`` and ``_step_nodes`` from the sweep's steps, once."""
        with self._plan_lock:
            if self._pending is None:
                return
            *steps, flat = self._pending
            self._pending = None      # the sweep's lists go as the plan is made
            if flat:
                plan = _flat_plan(*steps)
                self.__dict__.update(_plan=plan, _step_ops=_StepOps(plan),
                                     _step_nodes=plan.nodes)
            else:
                plan, ops = _plan_steps(*steps)
                self.__dict__.update(_plan=plan, _step_ops=ops,
                                     _step_nodes=[nid for _, _, nid in ops])

    def _op_names(self) -> set:
        """The names of the ops the plan runs (without making the plan)."""
        pending = self._pending
        ops = set(pending[0][1]) if pending is not None else \
            set(map(itemgetter(0), self._step_ops))   # the sweep's ops / (op, attrs, id)
        return {op.name for op in ops}

    def _aliasing_outputs(self, leaves):
        """Positions of outputs to copy: a fed array or variable (the caller's or the
        graph's storage), a view of one (``w.T``, ``x[1:]``), and the second and later
        of outputs sharing one slot. Decided once here; most programs copy nothing."""
        leaf_slots = {self._slot[nid] for nid in leaves}
        seen, copy = set(), []
        for k, (o, s) in enumerate(zip(self.outputs, self._out_slots)):
            if s in leaf_slots or s in seen or _views_a_leaf(o):
                copy.append(k)
            seen.add(s)
        return tuple(copy)

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
        if self._check_lengths is not None:
            self._check_lengths(vals)  # run-time lengths that must agree: FeedError now
        return vals

    def _run(self, vals):
        if type(self._plan) is _FlatPlan:
            return self._run_flat(vals)
        try:
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
        except Exception as exc:
            # the loop's variables still describe the failing step: no per-step bookkeeping
            self._on_step_error(self._failed_step(out), exc, vals)
        return vals

    def _run_flat(self, vals):
        """``_run`` over a ``_FlatPlan``: the same steps read from its arrays."""
        p = self._plan
        wide, fr = p.wide, p.frees
        j, out = len(fr), None
        try:
            for n, fn, a, b, out, c in zip(p.arity, p.kernels, p.a, p.b, p.out, p.n_frees):
                if n == 1:
                    vals[out] = fn(vals[a])
                elif n == 2:
                    vals[out] = fn(vals[a], vals[b])
                else:
                    vals[out] = fn(*[vals[i] for i in wide[out]])
                if c:
                    j -= c             # the blocks descend: this step's ends where the last began
                    if c == 1:
                        vals[fr[j]] = None
                    else:
                        for s in fr[j:j + c]:
                            vals[s] = None
        except Exception as exc:
            self._on_step_error(self._failed_step(out), exc, vals)
        return vals

    def _failed_step(self, out_slot) -> int:
        if isinstance(self._plan, _FlatPlan):
            return self._plan.out.index(out_slot)
        if self._step_index is None:
            self._step_index = {step[5]: k for k, step in enumerate(self._plan)}
        return self._step_index[out_slot]

    def _on_step_error(self, k, exc, vals=None):
        """Raise a RunError for ``exc``, raised by plan step ``k``'s kernel: it names the
        node, its op, its inputs (their values' shapes and dtypes when ``vals`` is given)
        and the user's line that built it, and chains ``exc``. Generated code calls this."""
        from .diagnose import run_error
        node = self.graph.node(self._step_nodes[k])
        ins = [vals[i] for i in self._plan[k][4]] if vals is not None else \
            [None] * len(node.inputs)
        raise run_error(node, exc, ins) from exc

    def _execute(self, vals):
        if self.check_numerics or _anomaly.on:
            return _numerics.run_checked(self, vals)
        return self._run(vals)

    def __call__(self, *args, **kwargs):
        """Run with feeds (``prog(x=X)`` or ``prog({x: X})``); returns the output values."""
        if self._call is not None and not (self.check_numerics or _anomaly.on):
            return self._call(args, kwargs)          # generated code (flowgrad/codegen.py)
        vals = self._bind(args, kwargs)
        if self.check_numerics or _anomaly.on:  # one test per call, none per step
            _numerics.run_checked(self, vals)
        else:
            self._run(vals)
        out = self.backend.finish([vals[s] for s in self._out_slots])
        if self._copy_outs:  # never hand out a variable's or the caller's own array
            for k in self._copy_outs:
                if hasattr(out[k], "copy"):
                    out[k] = out[k].copy()
        return out[0] if self._single else out

    def values(self, *args, **kwargs) -> dict[int, object]:
        """{node id: value} of every node, for a program compiled with keep_all."""
        vals = self.backend.finish(self._execute(self._bind(args, kwargs)))
        return {nid: vals[s] for nid, s in self._slot.items()}

    def trace(self, *args, **kwargs):
        """Every value computed and, if the first output is a scalar, every adjoint v̄."""
        from .tracing import Trace
        if self._trace_program is None:
            self._build_trace_program()
        return Trace(self, self._trace_program.values(*args, **kwargs), self._adjoints)

    def _build_trace_program(self):
        """Build the trace program once, under the lock; publish it last, so a thread
        that sees ``_trace_program`` set also sees ``_adjoints``."""
        with self._lock:
            if self._trace_program is not None:
                return
            first = self.outputs[0]
            if first.shape == () and first.dtype.kind in "fc":
                from .autodiff import adjoints
                # Adjoints of what the inputs and variables reach: a constant's v̄
                # (the exponent of x**2, say) is never asked for and may be log(<0).
                leaves = [self.graph.node(i) for i in ancestors([first])
                          if self.graph.nx.nodes[i]["kind"] in ("placeholder", "variable")]
                adj = adjoints(first, leaves or None)
            else:
                adj = {}
            extra = [a for a in adj.values()]
            prog = Program(self.outputs + extra, self.backend, keep_all=True,
                           check_numerics=self.check_numerics)
            self._adjoints = adj
            self._trace_program = prog

    @property
    def n_steps(self) -> int:
        """How many op nodes one call executes."""
        return self._n_steps

    def __repr__(self):
        names = ", ".join(o.name for o in self.outputs)
        return f"<flowgrad.Program [{names}] {self.n_steps} steps on {self.backend.name}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .viz.notebook import mimebundle  # drawn inline in Jupyter, text without `dot`
        return mimebundle(self, include, exclude)


def _plan_steps(steps, n_freed, freed, own, xp):
    """The plan (arity-specialised tuples: the loop in _run builds no lists) and
    ``(op, attrs, id)`` per step, from the backward sweep's lists (descending)."""
    step_ids, ops_l, attrs_l, ins_l = steps
    plan, ops = [], []
    kernels = {}           # op -> its kernel when it has no attrs (Op.kernel: the same object)
    none = ()
    end = len(freed)
    for k in range(len(step_ids) - 1, -1, -1):
        nid = step_ids[k]
        op, attrs, ins = ops_l[k], attrs_l[k], ins_l[k]
        if attrs or type(op) is not Op:
            fn = op.kernel(xp, attrs)
        else:
            fn = kernels.get(op)
            if fn is None:
                fn = kernels[op] = op.kernel(xp, attrs)
        n = len(ins)
        if n == 2:
            a, b = own[ins[0]], own[ins[1]]
            sl = (a, b)
        elif n == 1:
            a, b = own[ins[0]], None
            sl = (a,)
        else:
            sl = tuple([own[i] for i in ins])
            a = sl[0] if n else None
            b = sl[1] if n > 1 else None
        c = n_freed[k]         # this step's frees: the last c of what is left of freed
        if not c:
            fr = none
        elif c == 1:
            end -= 1
            fr = (own[freed[end]],)
        else:
            fr = tuple([own[i] for i in freed[end - c:end]])
            end -= c
        plan.append((n, fn, a, b, sl, own[nid], fr))
        ops.append((op, attrs, nid))
    return plan, ops


class _FlatPlan:
    """A large plan held as parallel arrays, read as the same 7-tuples as ``_plan_steps``'
    list (``plan[k]``, iteration, ``len``): one kernel reference and a few 8-byte fields
    a step. ``wide`` holds the input slots of steps with other than one or two inputs,
    by output slot; ``frees`` every step's frees, ``n_frees[k]`` long, in blocks of
    descending step order (the backward sweep's): step 0's block is the last."""

    __slots__ = ("arity", "kernels", "a", "b", "out", "n_frees", "frees", "wide", "nodes",
                 "ops", "attrs", "_ends")

    def __len__(self):
        return len(self.out)

    def _sl(self, n, a, b, out):
        return (a, b) if n == 2 else (a,) if n == 1 else self.wide[out]

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        n, out = self.arity[k], self.out[k]
        if self._ends is None:      # where each step's block ends (errors, tests only)
            ends, e = array("q"), len(self.frees)
            for c in self.n_frees:
                ends.append(e)
                e -= c
            self._ends = ends
        e, c = self._ends[k], self.n_frees[k]
        fr = tuple(self.frees[e - c:e])
        a, b = self.a[k], self.b[k]
        return (n, self.kernels[k], a if n else None, b if n > 1 else None,
                self._sl(n, a, b, out), out, fr)

    def __iter__(self):
        fr, sl = self.frees, self._sl
        j = len(fr)
        for n, fn, a, b, out, c in zip(self.arity, self.kernels, self.a, self.b, self.out,
                                       self.n_frees):
            j -= c
            yield (n, fn, a if n else None, b if n > 1 else None, sl(n, a, b, out), out,
                   tuple(fr[j:j + c]))


class _StepOps:
    """A flat plan's ``(op, attrs, id)`` per step, made on read."""

    __slots__ = ("_plan",)

    def __init__(self, plan):
        self._plan = plan

    def __len__(self):
        return len(self._plan.nodes)

    def __getitem__(self, k):
        p = self._plan
        if isinstance(k, slice):
            return list(zip(p.ops[k], p.attrs[k], p.nodes[k]))
        return (p.ops[k], p.attrs[k], p.nodes[k])

    def __iter__(self):
        p = self._plan
        return zip(p.ops, p.attrs, p.nodes)


def _flat_plan(steps, n_freed, freed, own, xp):
    """``_plan_steps``' plan as a ``_FlatPlan``: the same steps, slots and frees, made a
    column at a time (C-level maps: no Python call a step but the kernel look-up)."""
    p = _FlatPlan()
    # the sweep's columns are descending: steps ascend. Reversed in place and taken
    # over (a reversed copy would hold both at once; nothing else reads them)
    for col in steps:
        col.reverse()
    p.nodes, p.ops, p.attrs, ins = steps
    at = own.__getitem__
    # the frees first: each sweep list goes once its column is made (the compile's peak)
    p.n_frees = array("i", reversed(n_freed))
    del n_freed[:]
    # frees as the sweep found them: the blocks descend, so step k's is read from the end
    p.frees = array("q", map(at, freed))
    del freed[:]
    p.arity = arity = array("i", map(len, ins))
    p.out = array("q", map(at, p.nodes))
    if arity.count(1) + arity.count(2) == len(arity):
        # no wide step: b of a one-input step is never read (the loop, plan[k]: None)
        p.a = array("q", map(at, map(itemgetter(0), ins)))
        p.b = array("q", map(at, map(itemgetter(-1), ins)))
        p.wide = {}
    else:
        p.a = array("q", [at(i[0]) if i else -1 for i in ins])
        p.b = array("q", [at(i[1]) if len(i) > 1 else -1 for i in ins])
        p.wide = {p.out[k]: tuple(map(at, ins[k])) for k in range(len(ins))
                  if arity[k] != 1 and arity[k] != 2}
    del ins[:]                         # (the sweep's list: freed before the kernels
    # column is made, so the two are never held at once: the compile's peak)
    # a plain op without attrs has one kernel (Op.kernel: the same object): made once
    made = {op: op.kernel(xp, {}) for op in set(p.ops) if type(op) is Op}
    if len(made) == len(set(p.ops)) and not any(p.attrs):
        p.kernels = list(map(made.__getitem__, p.ops))
    else:
        p.kernels = [made[op] if not attrs and type(op) is Op else op.kernel(xp, attrs)
                     for op, attrs in zip(p.ops, p.attrs)]
    p._ends = None
    return p


#: ops whose kernel may return a view of (or the very array of) its first input
_VIEW_OPS = frozenset({"reshape", "reshape_like", "transpose", "expand_dims", "squeeze",
                       "broadcast_to", "broadcast_like", "getitem", "sum_to", "concat_part",
                       "stop_gradient", "custom_call", "custom_input",
                       "remat_after"})   # (identities: issue 21)


def _views_a_leaf(node) -> bool:
    """Whether ``node``'s value may share storage with a placeholder's or a variable's."""
    while node.op is not None and node.op.name in _VIEW_OPS:
        node = node.inputs[0]
    return node.kind in ("placeholder", "variable")


def compile(outputs, backend=None, check_numerics=False, codegen=True) -> Program:
    """Prune, order and plan the evaluation of ``outputs`` (a node or a list) once.

    ``check_numerics=True`` tests every value for NaN/Inf as it is computed and raises
    ``fg.NumericsError`` at the first node that creates one (see ``fg.detect_anomaly``).
    ``codegen=False`` runs the plan on the reference interpreter loop instead of
    generated code (the tests compare the two)."""
    return Program(outputs, backend, check_numerics=check_numerics, codegen=codegen)


def run(outputs, feed=None, backend=None, **kwargs):
    """One-shot evaluation; the compiled program is cached on the graph."""
    outs, _ = _as_outputs(outputs)
    b = get_backend(backend)
    key = (tuple(o.id for o in outs), isinstance(outputs, Node), b)  # the instance: two DaskBackends may differ
    cache = outs[0].graph._program_cache
    prog = cache.get(key)
    if prog is None:
        # two threads may both compile; setdefault publishes one program, atomically
        prog = cache.setdefault(key, Program(outputs, b))
    return prog(feed, **kwargs)
