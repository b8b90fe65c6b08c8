"""compile: prune to what the outputs need, order once, emit the plan; Program runs it.

The plan is the declared record of flowgrad/engine/plan.py: ``Step(op, attrs, node,
ins, out, frees)`` over a list of value slots, in a ``Plan(leaves, consts, steps,
outputs, slots)``; a large one (``FLAT_STEPS``) keeps its steps as parallel arrays
(``FlatSteps``) that read as the same records. Each intermediate value is dropped
right after its last reader, unless it is an output (or the program keeps
everything, for a trace). Ordering is by node id, which is topological by
construction. ``Program`` is a façade: it binds the feeds, runs the executor it
picked at compile time (flowgrad/engine/executors/: generated code where it accepts
the plan, else the reference interpreter), and traces.

Compiling is a few linear sweeps over plain dicts and lists (no networkx call per
node): a depth-first pruning, simplify's forward pass, and one backward sweep that
finds what the outputs need, each step's frees (a value's last reader is the first
one a backward sweep meets) and the slots. The instructions themselves (kernels,
slot tuples) are made when first needed (``LazySteps``): at once for the interpreter
and for generated array code, on the first fallback or error for a program that runs
generated scalar code.

Reliability costs nothing on the hot path: run-time lengths are checked by a list
compiled once (flowgrad.engine.lengths), a failing kernel is found from the loop's state
after the exception (one try around the loop), and NaN/Inf checking runs a separate
loop (flowgrad.numerics). Outputs are copied only where they would alias storage the
caller or the graph owns (a fed array, a variable, a constant, a view of one of these
in the simplified plan) or another output of the same call (an output listed twice,
views of one computed value), decided at compile time.
"""
from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from operator import itemgetter

import numpy as np

from ..autodiff import ancestors
from ..backends import get_backend
from ..backends.base import Backend
from ..errors import BackendError, FeedError, UsageError, located
from ..graph import Node, gc_paused, owned_table, same_graph
from .simplify import simplify
from . import executors as _executors
from . import lockstep as _lockstep
from . import plan as _plan
from .feeds import FeedSpec
from .plan import FLAT_STEPS, FlatSteps, LazySteps, Plan, Step, node_table
from . import binding as _feeds
from . import lengths as _lengths
from ..numerics import ANOMALY as _anomaly
from . import codegen as _codegen
from .. import state as _state


def as_outputs(outputs):
    if isinstance(outputs, Node):
        return [outputs], True
    given = outputs
    try:  # any iterable of nodes (a list, a tuple, a dict's values) but a string
        outputs = None if isinstance(outputs, (str, bytes)) else list(outputs)
    except TypeError:
        outputs = None
    if not outputs or not all(isinstance(o, Node) for o in outputs):
        raise located(UsageError, "compile takes a node or a non-empty list of nodes, got "
                         f"{type(given).__name__} {given!r}")
    return outputs, False


def _pruned(outputs) -> list[int]:
    """Ids of every node the outputs depend on, ascending (= topological): the same
    list as ``autodiff.ancestors`` (Graph.ancestors: a sweep down the ids)."""
    return outputs[0].graph.ancestors([o.id for o in outputs])


def _ascending_kept(kept, leaves, live) -> list:
    """The compile's kept ids (found descending) ascending, with every placeholder among
    ``leaves`` that is not live: it stays required after its uses simplify away."""
    dead = [nid for nid in leaves if not live[nid]]
    if dead:
        return sorted(kept + dead)
    kept.reverse()
    return kept


def _slot_index(kept, flat, top=0):
    """{kept id: slot}: a dict, or for a flat plan whose ids are dense an ``array``
    indexed by id, -1 where an id is not kept (4 bytes an id instead of ~80). ``top``:
    one past the highest pruned id, so that a pruned id above the last kept one (a
    step that simplified away) reads -1 too (_all_slots), not an IndexError."""
    top = max(kept[-1] + 1 if kept else 0, top)
    if not flat or top > 4 * len(kept) + 64:
        return dict(zip(kept, range(len(kept))))
    code, dtype = _slot_type(len(kept))
    own = array(code, [-1]) * top
    view = np.frombuffer(own, dtype=dtype)   # one scatter, not a Python loop an id
    view[np.fromiter(kept, np.int64, len(kept))] = np.arange(len(kept), dtype=dtype)
    del view   # (the array's buffer is exported while a view lives)
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


class SlotMap(Mapping):
    """A program's {node id: slot} (read-only), filled in two parts: at compile, the
    leaves' and the outputs' (all a call's binding reads); every other pruned id's on
    the first read that needs them (a trace, ``values()``, an error report …): a look-up
    of a key not yet in completes the map first, and so does every read of the whole
    (iteration, ``len``), so no reader ever sees it partial; completing twice (two
    threads) writes the same entries. A copy or a pickle is a plain, complete dict."""

    __slots__ = ("_known", "_rest")

    def __init__(self, known, moved, own, outputs):
        self._known = known
        self._rest = (moved, own, outputs)

    def add_known(self, nid):
        """Enter ``nid``'s slot now (a pruned id whose value is kept)."""
        moved, own, _ = self._rest
        self._known[nid] = own[moved.get(nid, nid)]

    def _complete(self) -> dict:
        rest = self._rest
        if rest is not None:
            self._known.update(_all_slots(*rest))
            self._rest = None          # only once every entry is in
        return self._known

    def __getitem__(self, key):
        try:
            return self._known[key]
        except KeyError:
            if self._rest is None:
                raise
        return self._complete()[key]

    def __iter__(self):
        return iter(self._complete())

    def __len__(self):
        return len(self._complete())

    def copy(self) -> dict:
        return dict(self._complete())

    def __reduce__(self):
        return (dict, (dict(self._complete()),))

    def __repr__(self):
        return repr(self._complete())


class Program:
    """A compiled, reusable evaluation of some output nodes. Call it with feeds.

    A thin façade over the engine: ``plan`` (the declared ``engine.plan.Plan``), the
    executor picked for it at compile time (``executor``), the binder, and the trace.
    """

    def __init__(self, outputs, backend=None, keep_all=False, check_numerics=False,
                 codegen=True, verify=None):
        outputs, self.single = as_outputs(outputs)
        self.graph = same_graph(outputs)
        self.outputs = outputs
        # declared state writes (flowgrad/state.py): their new values are computed as
        # outputs after the user's (run_outputs) and assigned once per successful call
        self.state_updates = _state.updates_for(outputs)
        self.run_outputs = outputs + [u.value for u in self.state_updates]
        self.run_single = self.single and not self.state_updates
        self.backend = get_backend(backend)
        self.keep_all = keep_all
        self.check_numerics = bool(check_numerics)
        self._trace_program = None
        self._values_program = None    # values()'s keep_all twin, made on first need
        self._adjoints = None
        self._lock = threading.Lock()  # builds the trace program once
        self._plan_lock = threading.Lock()  # makes the plan's steps once (_materialize)
        self._pending, self._n_steps = None, 0
        self._reference_run = None     # the interpreter's run(vals), made on first need
        self._checked_run = None       # the NaN/Inf-checked one, likewise
        self._codegen = codegen and not keep_all   # traces stay on the interpreter
        self.verify = _lockstep.wanted(verify)
        #: how the programs its steps run (a loop's bodies) are compiled: as asked here
        #: (a trace's keep-all twin runs on the interpreter, its bodies as the program's)
        self.options = _plan.program_options(codegen, self.verify)
        with gc_paused():   # a plan over 10^5+ nodes: the collector's rescans cost ~2x
            self._build_plan()
        if self.verify and self._call is not None:  # (the reference needs no second run)
            self._call = _lockstep.wrap(self, self._call)
        self._reference = self.reference_call
        if self.state_updates:   # entries that write the state after a run (state.py)
            self._reference = _state.Committing(self, self.reference_call)
            if self._call is not None:
                self._call = _state.Committing(self, self._call)

    @property
    def order(self) -> list[int]:
        """Ids of every node the outputs depend on, ascending: the list the compile
        planned. Found again on each read (graphs only grow, so it never changes), so
        a program does not keep 8 bytes a node for it (the 10^6-node chain: 24 MB)."""
        return _pruned(self.run_outputs)

    # -- compile ----------------------------------------------------------------
    def _sweep(self, g, order):
        """simplify, then one backward sweep over the definitions (descending ids):
        what the outputs need, and each step's frees. A value is freed by its last
        reader, which is the first reader this sweep meets; outputs start live, so they
        are never freed (and with keep_all everything starts live: nothing is freed)."""
        data = node_table(g)
        simp = simplify(g, order, [o.id for o in self.run_outputs], self.keep_all)
        defs = simp.defs
        # live: a mark a byte by id (ids are dense; the pruning sweep makes one as long),
        # not a set of ~40 bytes an entry: at 10^6 nodes the set was the compile's peak
        live = bytearray(order[-1] + 1 if order else 0)
        for r in simp.roots:
            live[r] = 1
        kept, consts = [], []   # kept ids, descending (live values, every leaf); constants
        # the live steps, descending, as parallel lists (no container a step: all of it
        # outlives the compile, and the collector then scans each object once); ids and
        # counts as 4-byte arrays while ids fit (36 MB less than lists at 3*10^6 steps,
        # and the flat plan's columns gather straight from their buffers)
        ids = _slot_type(order[-1] + 1 if order else 0)[0]
        step_ids, ops, attrs, ins = array(ids), [], [], []
        n_freed, freed = array("i"), array(ids)
        op_, at_, in_ = ops.append, attrs.append, ins.append
        cast_fed = set()   # ops with a ufunc that some step feeds a non-float input
        # simplify stores only the definitions its graph node does not hold (constants,
        # remapped or rewritten steps); every other representative is its graph node as
        # is. A merged id is never live. Popping frees each stored definition once read.
        pop = defs.pop
        for r in reversed(order):
            if not live[r]:
                continue
            kept.append(r)
            d = pop(r, None)
            if d is None:
                nd = data[r]
                op = nd.op
                if op is None:         # a leaf
                    continue
                at, ri = nd.attrs, nd.input_ids
            elif d[0] == "op":
                _, op, at, ri = d
            else:
                if d[0] == "const":
                    consts.append((r, d[1]))
                continue
            if op.ufunc is not None and data[ri[0]].dtype.kind not in "fc":
                cast_fed.add(op)   # an int or bool input: its kernel casts (direct_ufuncs)
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
        direct = frozenset(op for op in set(ops) if op.ufunc is not None) - cast_fed
        return simp, _ascending_kept(kept, simp.leaves, live), consts, \
            ((step_ids, ops, attrs, ins), n_freed, freed), direct

    def _build_plan(self):
        g, backend = self.graph, self.backend
        data = node_table(g)
        order = _pruned(self.run_outputs)   # (a local: dropped before the plan is made)
        backend.check_ops(g, order)  # an op this backend lacks: BackendError now, naming it
        simp, kept, consts, sweep, direct = self._sweep(g, order)
        steps = sweep[0][0]
        flat = len(steps) > FLAT_STEPS
        own = _slot_index(kept, flat, order[-1] + 1 if order else 0)
        leaves, sharers, roots = simp.leaves, simp.sharers, simp.storage_roots
        moved = simp.rep       # simplify's rep holds only ids merged into another
        del simp               # simplify's maps are spent: dropped before the plan is made
        # {id: slot}: the leaves' and outputs' now (binding a call needs no more), every
        # other pruned id's when something first asks (a trace, values(), an error)
        slot = SlotMap({nid: own[moved.get(nid, nid)] for nid in leaves}, moved, own,
                       self.run_outputs)
        for o in self.run_outputs:
            slot.add_known(o.id)
        self.slot_of = slot
        template = [None] * len(kept)
        self.placeholders, self.variable_slots = {}, []
        node = g.node
        for nid in leaves:
            if data[nid].kind == "placeholder":
                self.placeholders[nid] = node(nid)
            else:
                self.variable_slots.append((own[nid], node(nid)))
        for nid, v in consts:
            template[own[nid]] = v if data[nid].weak else backend.asarray(v)
        # The steps proper are made on first read (_LazySteps): a program that runs
        # generated scalar code never needs them unless a call falls back to arrays.
        self._n_steps = len(steps)
        self._pending = sweep + (own, flat)
        self.plan = Plan({nid: slot[nid] for nid in leaves}, template,
                         LazySteps(self._materialize, len(steps), flat),
                         tuple(slot[o.id] for o in self.run_outputs), kept, g,
                         direct, self.options)
        del steps, sweep
        # run-time lengths are checked between placeholders only: none without a None axis
        checks = _lengths.compile_checks(g, order) if any(
            None in data[nid].shape for nid in self.placeholders) else None
        del order
        self.check_lengths = _lengths.LengthCheck(g, checks, slot) if checks else None
        self.feed_spec = FeedSpec.of(self)   # what bind and the generated binders check
        self.copy_outputs = self._aliasing_outputs(leaves, sharers, roots)
        if _plan.debug_enabled():
            _plan.verify(self.plan)
        self._pick_executor()

    def _pick_executor(self):
        """The executor, chosen once: generated code (flowgrad/engine/codegen.py) where it
        accepts the plan, else the interpreter (flat for large plans)."""
        accepted = self._codegen and _executors.GENERATED.accepts(self.plan, self.backend)
        self._generated = _codegen.generate(self) if accepted else None
        self._call = _codegen.make_caller(self, self._generated) if self._generated else None
        if self._call is None:
            self.executor = _executors.reference_for(self.plan)
            self._reference_run = self.executor.build(self.plan, self.backend)
        else:
            self.executor = _executors.SCALAR if self._generated.scalar is not None else \
                _executors.GENERATED

    @property
    def generated(self):
        """The program's generated code (flowgrad/engine/codegen.py's Generated), or None."""
        return self._generated

    def _materialize(self):
        """Make the plan's steps from the sweep's lists, once; returns them."""
        with self._plan_lock:
            pending = self._pending
            if pending is not None and pending[0] is not None:
                steps, n_freed, freed, own, flat = pending
                self._pending = (None, None, None, None, flat)  # the sweep's lists go
                self.plan.steps = _flat_steps(steps, n_freed, freed, own,
                                              self.plan.slots) if flat else \
                    _list_steps(steps, n_freed, freed, own)
        return self.plan.steps

    def op_names(self) -> set:
        """The names of the ops the plan runs (without making its steps)."""
        pending = self._pending
        if pending is not None and pending[0] is not None:
            return {op.name for op in set(pending[0][1])}
        steps = self.plan.made_steps()
        ops = steps.ops if isinstance(steps, FlatSteps) else [s.op for s in steps]
        return {op.name for op in set(ops)}

    def _aliasing_outputs(self, leaves, sharers, roots):
        """Positions of outputs to copy: a fed array or variable (the caller's or the
        graph's storage), a constant (later calls reuse it), a view of one in the
        simplified plan (``w.T``, ``x[1:]``, ``reshape(x * 1.0)``: simplify's
        ``sharers``), and the second and later of outputs that may share storage with
        each other: one slot listed twice, or views of one computed value (``h``,
        ``h.T``, ``reshape(h)``: one of simplify's ``storage_roots``). Decided once
        here; outputs that view nothing in common copy nothing."""
        leaf_slots = {self.slot_of[nid] for nid in leaves}
        seen, seen_roots, copy = set(), set(), []
        for k, (o, s) in enumerate(zip(self.run_outputs, self.plan.outputs)):
            root = roots.get(o.id, ("slot", s))
            if s in leaf_slots or s in seen or o.id in sharers or root in seen_roots:
                copy.append(k)
            seen.add(s)
            seen_roots.add(root)
        return tuple(copy)

    # -- run --------------------------------------------------------------------
    def bind(self, args, kwargs) -> list:
        """The slot list of one call: the plan's constants with every leaf filled in
        from the feeds (checked: names, dtypes, shapes, run-time lengths) or from its
        variable's value."""
        fed = _feeds.resolve(self.graph, _feeds.collect(args, kwargs))
        missing = [p.name for nid, p in self.placeholders.items() if nid not in fed]
        if missing:
            raise located(FeedError, f"missing feed for placeholder(s) {missing}")
        vals = list(self.plan.consts)
        backend, placeholders = self.backend, self.placeholders
        for leaf in self.feed_spec.placeholders:
            vals[leaf.slot] = _feeds.check(placeholders[leaf.node], fed[leaf.node], backend)
        for s, var in self.variable_slots:
            v = fed.get(var.id)
            vals[s] = _feeds.check(var, v, backend) if v is not None else \
                backend.read_variable(var)
        self.feed_spec.check_lengths(vals)  # run-time lengths that must agree: FeedError
        return vals

    def run_reference(self, vals) -> list:
        """Run the plan on the bound ``vals`` with the reference interpreter (made on
        first need); returns the slot list (outputs filled; with keep_all, all)."""
        run = self._reference_run
        if run is None:
            ex = _executors.reference_for(self.plan)
            run = self._reference_run = ex.build(self.plan, self.backend)
        return run(vals)

    def run_checked(self, vals) -> list:
        """Run the plan on the bound ``vals`` with the NaN/Inf-checked executor
        (engine/executors/checked.py, made on first need): NumericsError at the first
        node that makes a NaN or ±Inf from finite inputs."""
        run = self._checked_run
        if run is None:
            run = self._checked_run = _executors.Checked(self).build(self.plan, self.backend)
        return run(vals)

    def run_bound(self, vals) -> list:
        """The output values for the bound slot list ``vals`` (``bind``'s), by the
        program's executor (NaN/Inf-checked when asked for): for callers that bind once
        and run many times (flowgrad/higher_order.py). The values of ``run_outputs``:
        declared state updates' follow the outputs, and none is written."""
        if self.check_numerics or _anomaly.on:
            vals = self.run_checked(vals)
        elif self._generated is not None and not _codegen.fp_raises():
            return self._generated.array_fn(vals)
        else:
            vals = self.run_reference(vals)
        return [vals[s] for s in self.plan.outputs]

    def step_error(self, k, exc, vals=None):
        """Raise a RunError for ``exc``, raised by plan step ``k``'s kernel: it names the
        node, its op, its inputs (their values' shapes and dtypes when ``vals`` is given)
        and the user's line that built it, and chains ``exc`` (every executor reports
        through engine/executors/base.py's raise_step_error, which this calls)."""
        _executors.raise_step_error(self.plan, k, exc, vals)

    def _execute(self, vals):
        if self.check_numerics or _anomaly.on:
            return self.run_checked(vals)
        return self.run_reference(vals)

    def __call__(self, /, *args, **kwargs):
        """Run with feeds (``prog(x=X)`` or ``prog({x: X})``); returns the output values.
        Every keyword is a feed: ``self`` is positional-only, so a placeholder named
        ``self`` (or anything else) can be fed by keyword too."""
        if self._call is not None and not (self.check_numerics or _anomaly.on):
            return self._call(args, kwargs)          # generated code (flowgrad/engine/codegen.py)
        return self._reference(args, kwargs)

    def call(self, args, kwargs):
        """``self(*args, **kwargs)`` without repacking the feeds (a trainer's hot path)."""
        if self._call is not None and not (self.check_numerics or _anomaly.on):
            return self._call(args, kwargs)
        return self._reference(args, kwargs)

    def call_pending(self, args, kwargs):
        """``(result, pending)``: a call whose declared state writes (flowgrad/state.py)
        are computed but left to ``pending.commit()``; ``pending`` is None for a program
        that writes no state. An optimizer commits them with its step; fit's
        validation drops them."""
        if not self.state_updates:
            return self.call(args, kwargs), None
        if self._call is not None and not (self.check_numerics or _anomaly.on):
            return self._call.pending(args, kwargs)
        return self._reference.pending(args, kwargs)

    def finish(self, outs, args, kwargs) -> list:
        """The backend's ``finish`` of one call's output values (a lazy backend computes
        them here); a failure there that names no step (a task of dask's own) raised as
        the numpy backend's RunError for the feeds ``args``/``kwargs``
        (flowgrad/engine/lazy_errors.py's ``raise_located``)."""
        try:
            return self.backend.finish(outs)
        except Exception as exc:
            from .lazy_errors import raise_located
            raise_located(self, exc, args, kwargs)

    def reference_call(self, args, kwargs):
        """A call on the interpreter loop: the plan's own numpy kernels, which honour
        numpy's error state. Generated code sends its calls here while that state asks
        for an exception on a floating-point error (codegen.fp_raises). For a program
        with state updates it hands back ``run_outputs``' values (the updates' after the
        outputs) and writes nothing: the program's call does (state.Committing)."""
        vals = self.bind(args, kwargs)
        if self.check_numerics or _anomaly.on:  # one test per call, none per step
            self.run_checked(vals)
        else:
            self.run_reference(vals)
        out = self.finish([vals[s] for s in self.plan.outputs], args, kwargs)
        if self.copy_outputs:  # never hand out a variable's or the caller's own array
            for k in self.copy_outputs:
                if hasattr(out[k], "copy"):
                    out[k] = out[k].copy()
        return out[0] if self.run_single else out

    def profile(self, /, *args, repeat=10, **kwargs):
        """Time every node of a call on these feeds (as a call takes them): a warm-up,
        then ``repeat`` calls on the profiling interpreter. A ``Profile``
        (flowgrad/profile.py): ``rows`` slowest first (op, calls, seconds, share),
        ``wall``, ``groups`` (what generated code fuses), ``result``, ``table()``."""
        from ..profile import profile
        return profile(self, args, kwargs, repeat)

    def values(self, /, *args, **kwargs) -> dict[int, object]:
        """{node id: value} of every node the outputs depend on. A program without
        keep_all frees values after their last use, so it asks a keep_all twin (made
        once, as ``trace`` makes its program) instead of handing out None for them."""
        if not self.keep_all:
            return self._keep_all_twin().values(*args, **kwargs)
        vals = self.finish(self._execute(self.bind(args, kwargs)), args, kwargs)
        return {nid: vals[s] for nid, s in self.slot_of.items()}

    def trace(self, /, *args, **kwargs):
        """Every value computed and, if the first output is a real scalar, every adjoint
        v̄ (a complex one has no implicit seed: fg.adjoints with seed=)."""
        from ..tracing import Trace
        from ..loops.loop_op import recording_loops
        if self._trace_program is None:
            self._build_trace_program()
        # issue 20: the loops of the program keep each iteration's values (drawn unrolled)
        with recording_loops([self.graph.node(i) for i in self.order]) as runs:
            values = self._trace_program.values(*args, **kwargs)
        return Trace(self, values, self._adjoints, loop_runs=runs)

    def _keep_all_twin(self) -> "Program":
        """This program's outputs compiled with keep_all (nothing freed), made once under
        the lock and published whole."""
        twin = self._values_program
        if twin is None:
            with self._lock:
                twin = self._values_program
                if twin is None:
                    twin = self._values_program = Program(
                        self.outputs, self.backend, keep_all=True,
                        check_numerics=self.check_numerics, **self.options.flags())
        return twin

    def _build_trace_program(self):
        """Build the trace program once, under the lock; publish it last, so a thread
        that sees ``_trace_program`` set also sees ``_adjoints``."""
        with self._lock:
            if self._trace_program is not None:
                return
            first = self.outputs[0]
            # a real scalar: a complex one has no one gradient, and fg.adjoints refuses
            # its implicit seed of 1 (as torch's backward()); no adjoints, then
            if first.shape == () and first.dtype.kind == "f":
                from ..autodiff import adjoints
                # Adjoints of what the inputs and variables reach: a constant's v̄
                # (the exponent of x**2, say) is never asked for and may be log(<0).
                leaves = [self.graph.node(i) for i in ancestors([first])
                          if self.graph.handles[i].kind in ("placeholder", "variable")]
                adj = adjoints(first, leaves or None)
            else:
                adj = {}
            extra = [a for a in adj.values()]
            prog = Program(self.outputs + extra, self.backend, keep_all=True,
                           check_numerics=self.check_numerics, **self.options.flags())
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
        from ..viz.notebook import mimebundle  # drawn inline in Jupyter, text without `dot`
        return mimebundle(self, include, exclude)


def _list_steps(steps, n_freed, freed, own) -> list:
    """The plan's ``Step`` records, ascending, from the backward sweep's lists
    (descending)."""
    step_ids, ops_l, attrs_l, ins_l = steps
    out = []
    none = ()
    end = len(freed)
    for k in range(len(step_ids) - 1, -1, -1):
        ins = ins_l[k]
        n = len(ins)
        sl = (own[ins[0]], own[ins[1]]) if n == 2 else (own[ins[0]],) if n == 1 else \
            tuple([own[i] for i in ins])
        c = n_freed[k]         # this step's frees: the last c of what is left of freed
        if not c:
            fr = none
        elif c == 1:
            end -= 1
            fr = (own[freed[end]],)
        else:
            fr = tuple([own[i] for i in freed[end - c:end]])
            end -= c
        nid = step_ids[k]
        out.append(Step(ops_l[k], attrs_l[k], nid, sl, own[nid], fr))
    return out


def _flat_steps(steps, n_freed, freed, own, slot_nodes) -> FlatSteps:
    """The plan's steps as ``FlatSteps`` columns, made a column at a time: ids become
    slots by one numpy gather a column (``own`` dense) or a C-level map (a dict), with
    no Python call a step."""
    p = FlatSteps()
    # the sweep's columns are descending: steps ascend. Reversed in place and taken
    # over (a reversed copy would hold both at once; nothing else reads them)
    for col in steps:
        col.reverse()
    nodes, p.ops, p.attrs, ins = steps
    p.slot_nodes = slot_nodes   # step k's node: slot_nodes[out[k]] (no column of its own)
    slots = _slots_of(own)
    # the frees first: each sweep list goes once its column is made (the compile's peak)
    n_freed.reverse()
    p.n_frees = n_freed
    # frees as the sweep found them: the blocks descend, so step k's is read from the end
    p.frees = slots(freed)
    del freed[:]
    p.arity = arity = array("i", map(len, ins))
    p.out = slots(nodes)
    del nodes[:]
    if arity.count(1) + arity.count(2) == len(arity):
        # no wide step: b of a one-input step is never read
        p.a = slots(map(itemgetter(0), ins), len(ins))
        p.b = slots(map(itemgetter(-1), ins), len(ins))
        p.wide = {}
    else:
        at = own.__getitem__
        code = own.typecode if isinstance(own, array) else "q"
        p.a = array(code, [at(i[0]) if i else -1 for i in ins])
        p.b = array(code, [at(i[1]) if len(i) > 1 else -1 for i in ins])
        p.wide = {p.out[k]: tuple(map(at, ins[k])) for k in range(len(ins))
                  if arity[k] != 1 and arity[k] != 2}
    del ins[:]
    p.ends = None
    return p


def _slot_type(n_slots):
    """The ``array`` typecode and numpy dtype of a flat plan's slot columns: 4-byte ints
    while the slots fit (a 3*10^6-step plan: 48 MB less than 8-byte ones), else 8."""
    return ("i", np.int32) if n_slots < 2 ** 31 - 1 else ("q", np.int64)


def _slots_of(own):
    """ids -> an ``array`` of their slots (own's typecode): numpy gathers when ``own``
    is the dense ``array`` of _slot_index (~10x faster than a map of its
    ``__getitem__`` at 10^6 steps), else a C-level map over the dict."""
    if not isinstance(own, array):
        return lambda ids, n=None: array("q", map(own.__getitem__, ids))
    code = own.typecode
    table = np.frombuffer(own, dtype=np.int32 if code == "i" else np.int64)

    def slots(ids, n=None):
        n = len(ids) if n is None else n
        out = array(code, [0]) * n
        view = np.frombuffer(out, dtype=table.dtype)
        # in chunks, written in place: the column is the only allocation of its size
        # (a whole-column gather held three: the compile's peak at 10^6 nodes)
        if isinstance(ids, array):   # the sweep's ids: read from their buffer
            flat = np.frombuffer(ids, dtype=np.int32 if ids.typecode == "i" else np.int64)
            chunks = (flat[k:k + _CHUNK] for k in range(0, n, _CHUNK))
        else:
            ids = iter(ids)
            chunks = (np.fromiter(ids, np.int64, min(_CHUNK, n - k))
                      for k in range(0, n, _CHUNK))
        for k, chunk in zip(range(0, n, _CHUNK), chunks):
            np.take(table, chunk, out=view[k:k + len(chunk)])
        del view, chunks   # (the buffers are exported while views live)
        return out
    return slots


_CHUNK = 1 << 16


def compile(outputs, backend=None, check_numerics=False, codegen=True,
            verify=None) -> Program:
    """Prune, order and plan the evaluation of ``outputs`` (a node or a list) once.

    ``check_numerics=True`` tests every value for NaN/Inf as it is computed and raises
    ``fg.NumericsError`` at the first node that creates one (see ``fg.detect_anomaly``).
    ``codegen=False`` runs the plan on the reference interpreter loop instead of
    generated code (the tests compare the two). ``verify=True`` (default: the
    environment's ``FLOWGRAD_VERIFY=1``) runs every call beside the reference
    interpreter and raises ``fg.VerifyError`` where they disagree (engine/lockstep.py)."""
    return Program(outputs, backend, check_numerics=check_numerics, codegen=codegen,
                   verify=verify)


#: how many compiled programs fg.run keeps for one graph: the most recently used
RUN_CACHE_SIZE = 64


class RunCache:
    """fg.run's programs for one graph, {(output ids, single, backend): Program}, the
    ``RUN_CACHE_SIZE`` most recently used. Held by the graph itself (``owned_table``),
    so a dropped graph's programs are freed with it: a WeakKeyDictionary keyed by the
    graph kept every graph ever run, its values (programs) holding the graph's nodes."""

    def __init__(self):
        self.programs: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            prog = self.programs.get(key)
            if prog is not None:
                self.programs.move_to_end(key)
            return prog

    def put(self, key, prog):
        """Keep ``prog`` for ``key`` (or the program another thread kept first: one is
        published) and drop the least recently used past RUN_CACHE_SIZE."""
        with self.lock:
            prog = self.programs.setdefault(key, prog)
            self.programs.move_to_end(key)
            while len(self.programs) > RUN_CACHE_SIZE:
                self.programs.popitem(last=False)
            return prog

    def __len__(self):
        return len(self.programs)


def run_cache(graph) -> RunCache:
    """The programs fg.run has compiled and kept for ``graph``."""
    return owned_table(graph, "run_programs", RunCache)


def run(outputs, feed=None, /, backend=None, **kwargs):
    """One-shot evaluation; the compiled program is cached on the graph (its
    ``RUN_CACHE_SIZE`` = 64 most recently used programs, freed with the graph).

    ``outputs`` and ``feed`` are positional-only, so placeholders named ``outputs`` or
    ``feed`` (any name but ``backend``) can be fed by keyword (``feed={...}`` still
    passes the dict where no leaf is named ``feed``). ``backend=`` takes a
    backend (a name, a Backend or None); anything else given as ``backend=`` feeds a
    placeholder or variable named ``backend``, if the graph has one (a number or an
    array is never a backend); a dict of feeds works for every name."""
    outs, _ = as_outputs(outputs)
    g = outs[0].graph
    if feed is None and isinstance(kwargs.get("feed"), dict) and g.name_id("feed") is None:
        feed = kwargs.pop("feed")     # feed={...} by keyword, as before: no leaf has the name
    if backend is not None and not isinstance(backend, (str, Backend)):
        if g.name_id("backend") is None:
            raise BackendError(f"backend= takes a backend name, a Backend or None, not "
                               f"{type(backend).__name__}")
        kwargs["backend"], backend = backend, None      # a feed of the leaf 'backend'
    b = get_backend(backend)
    key = (tuple(o.id for o in outs), isinstance(outputs, Node), b)  # the instance: two DaskBackends may differ
    cache = run_cache(g)
    prog = cache.get(key)
    if prog is None:   # compiled outside the cache's lock (two threads may both compile)
        prog = cache.put(key, Program(outputs, b))
    return prog(feed, **kwargs)
