"""The plan: what a compiled program runs, declared once and read by every executor.

A plan evaluates some output nodes over a list of **slots** (one per value it holds).
Slots are filled three ways: a leaf's slot by the binder on each call (``leaves``), a
constant's from ``consts`` (the same object every call), and every other by one
**step**: ``out = op(*ins)``. Steps are in execution order; a step's ``frees`` are the
slots whose last reader it is (dropped right after it, unless the program keeps every
value). Outputs are never freed.

    Step(op, attrs, node, ins, out, frees)
    Plan(leaves, consts, steps, outputs, slots, graph)

A step's ``attrs`` may hold a ``Plan`` (a sub-plan, run by a loop node): the printer
and the verifier walk nested plans (iteratively, with a work list).

Large plans (``FLAT_STEPS``: the 10^6-node chain) keep their steps as parallel arrays
(``FlatSteps``): ~8 bytes a field instead of ~200 bytes of objects a step. Reading one
(``plan.steps[k]``, iteration) makes its ``Step`` record on read; the flat interpreter
reads the columns themselves (``FlatSteps``' documented fields).

Kernels belong to a backend, not to the plan's meaning: ``plan.kernels(xp)`` makes the
callable of each step once per plan (one shared object per attribute-free op).

``verify(plan)`` checks the invariants every executor relies on (run by the tests and
under ``FLOWGRAD_DEBUG=1``); ``format_plan(plan)`` (``str(plan)``) lists it, one line a
step: ``%5 = mul(%2, %3)  # name, file:line; frees %2``.
"""
from __future__ import annotations

import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import FlowgradError

__all__ = ["Step", "Plan", "FlatSteps", "LazySteps", "PlanError", "verify", "format_plan",
           "FLAT_STEPS", "debug_enabled", "node_table", "ProgramOptions", "program_options",
           "DEFAULT_OPTIONS", "flags_of"]

#: plans with more steps than this are stored flat (``FlatSteps``): the one definition
#: (the scheduler stores flat beyond it, generated code stays off beyond it)
FLAT_STEPS = 200_000


def node_table(graph) -> list:
    """The graph's nodes by id (``graph.handles``): executors read a step's node fields
    (``.shape``, ``.dtype`` …) from it while they build."""
    return graph.handles


def debug_enabled() -> bool:
    """Whether ``FLOWGRAD_DEBUG=1``: every compiled plan is then verified."""
    return os.environ.get("FLOWGRAD_DEBUG", "") not in ("", "0")


class PlanError(FlowgradError):
    """A plan breaks one of its invariants (the verifier found it): a bug in the
    compiler, never in the user's graph. The message names the step and the slot."""


@dataclass(frozen=True)
class ProgramOptions:
    """How a program was compiled, for the programs its steps compile and run in turn (a
    loop's bodies, each iteration): ``codegen`` (False: the reference interpreter) and
    ``verify`` (lockstep mode, flowgrad/engine/lockstep.py). A plan declares them
    (``Plan.options``), and the kernel of every op that declares ``runs_programs`` is
    made with them (``options=``), so that ``fg.compile(..., codegen=False)`` or
    ``verify=True`` reaches every body, nested ones too. (``check_numerics`` needs no
    field: a checked run turns the thread's anomaly flag on, which every program it
    runs reads.) Made by ``program_options``: one object per combination."""
    codegen: bool = True
    verify: bool = False

    def flags(self) -> dict:
        """These options as ``fg.compile``'s keyword arguments."""
        return {"codegen": self.codegen, "verify": self.verify}


def flags_of(options) -> dict:
    """``fg.compile``'s flags for a program an op's kernel runs under ``options`` (None,
    a kernel made outside a plan: compile's defaults, FLOWGRAD_VERIFY included)."""
    return {} if options is None else options.flags()


_OPTIONS = {(c, v): ProgramOptions(c, v) for c in (True, False) for v in (True, False)}
#: what ``fg.compile`` gives by default (outside FLOWGRAD_VERIFY=1)
DEFAULT_OPTIONS = _OPTIONS[True, False]


def program_options(codegen, verify) -> ProgramOptions:
    """The one ``ProgramOptions`` for these flags (compared by identity on a hot path)."""
    return _OPTIONS[bool(codegen), bool(verify)]


@dataclass(slots=True)
class Step:
    """One instruction: ``slots[out] = op(*slots[ins], **attrs)``, then drop ``frees``.

    ``node`` is the graph node id whose value the step computes (its name, line and
    inferred shape and dtype describe the step); ``ins``, ``out``, ``frees`` are slots."""
    op: object
    attrs: dict
    node: int
    ins: tuple
    out: int
    frees: tuple


@dataclass(slots=True)
class Plan:
    """A compiled evaluation order.

    - ``leaves``: {node id: slot} of the placeholders and variables, bound each call;
    - ``consts``: per slot, the constant it holds (the backend's array or a weak Python
      number), None for every slot a leaf or a step fills;
    - ``steps``: the steps in execution order (a list, or ``FlatSteps`` for large plans);
    - ``outputs``: the output slots, in the program's output order (a slot may repeat);
    - ``slots``: per slot, the node id whose value it holds;
    - ``graph``: the graph the ids belong to (names, lines, inferred shapes);
    - ``direct_ufuncs``: the ops with a ``ufunc`` whose every step here reads a float
      or complex first input, so that their kernel may be the backend's function itself
      (``Op.kernel(direct=True)``); the compiler finds them, and empty is always right.;
    - ``options``: the program's ``ProgramOptions``, for the kernels of the ops that
      run programs of their own (``Op.runs_programs``: a loop)."""
    leaves: dict
    consts: list
    steps: Sequence
    outputs: tuple
    slots: Sequence
    graph: object = None
    direct_ufuncs: frozenset = frozenset()
    options: ProgramOptions = DEFAULT_OPTIONS
    # caches, never copied by dataclasses.replace: {id(xp): kernels}, {out slot: step}
    _kernels: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __len__(self):
        return len(self.steps)

    @property
    def flat(self) -> bool:
        """Whether the steps are (or will be made) ``FlatSteps``."""
        s = self.steps
        return isinstance(s, FlatSteps) or (isinstance(s, LazySteps) and s.flat)

    def made_steps(self):
        """The steps themselves (made now if they were not yet: ``LazySteps``)."""
        s = self.steps
        return s.made() if isinstance(s, LazySteps) else s

    def kernels(self, xp) -> list:
        """The callable of every step for array namespace ``xp``, made once (a plain
        op without attrs shares one kernel object: ``Op.kernel``)."""
        got = self._kernels.get(id(xp))
        if got is None:
            got = _make_kernels(self.made_steps(), xp, self.options, self.direct_ufuncs)
            from .lazy_errors import lazy_backend, naming
            if lazy_backend(xp) is not None:   # a task's failure names its step, later
                got = naming(self, got)
            self._kernels[id(xp)] = got
        return got

    def step_of_slot(self, out) -> int:
        """Index of the step that writes slot ``out`` (error reports: not a hot path)."""
        steps = self.made_steps()
        if isinstance(steps, FlatSteps):
            return steps.out.index(out)
        index = self._index
        if index is None:
            index = self._index = {s.out: k for k, s in enumerate(steps)}
        return index[out]

    def __str__(self):
        return format_plan(self)


def _make_kernels(steps, xp, options, direct=frozenset()) -> list:
    from ..ops.base import Op
    if isinstance(steps, FlatSteps):
        ops, attrs = steps.ops, steps.attrs
    else:
        ops, attrs = [s.op for s in steps], [s.attrs for s in steps]
    distinct = set(ops)   # (once: a 10^6-step plan's list)
    made = {op: op.kernel(xp, {}, op in direct) for op in distinct if type(op) is Op}
    if len(made) == len(distinct) and not any(attrs):
        if isinstance(steps, FlatSteps):   # one kernel an op, looked up as steps are read
            return KernelsByOp(made, ops)
        return list(map(made.__getitem__, ops))
    # (a region's or a rewritten step's op may be another kind of object: getattr)
    return [op.kernel(xp, {**at, "options": options}) if getattr(op, "runs_programs", False)
            else made[op] if not at and type(op) is Op else op.kernel(xp, at)
            for op, at in zip(ops, attrs)]


class KernelsByOp(Sequence):
    """A large plan's kernels when each op has one (no attrs): ``made[op]`` of each step,
    read on demand (iteration is a C-level map), not a list of 8 bytes a step."""

    __slots__ = ("made", "ops")

    def __init__(self, made, ops):
        self.made, self.ops = made, ops

    def __len__(self):
        return len(self.ops)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.made[op] for op in self.ops[k]]
        return self.made[self.ops[k]]

    def __iter__(self):
        return map(self.made.__getitem__, self.ops)


class LazySteps(Sequence):
    """A plan's steps before they are made: ``make()`` makes them (and puts them in the
    plan's ``steps``) on the first read, which then reads through; ``len`` and ``flat``
    need nothing made. A program that runs generated scalar code never makes them
    unless a call falls back to arrays."""

    __slots__ = ("make", "n", "flat")

    def __init__(self, make, n, flat):
        self.make, self.n, self.flat = make, n, flat

    def made(self):
        return self.make()

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        return self.make()[k]

    def __iter__(self):
        return iter(self.make())


class FlatSteps(Sequence):
    """A large plan's steps as parallel arrays, read as ``Step`` records.

    Columns (public, read by the flat interpreter): ``ops``, ``attrs`` (per step);
    ``slot_nodes`` (the plan's ``slots``: slot -> node id, so step k's node is
    ``slot_nodes[out[k]]``, not a column of its own: 8 bytes a step); ``arity`` (number of inputs); ``a``, ``b`` (the first two input slots, -1 or
    unread where absent); ``out``; ``wide`` ({out slot: input slots} of steps with
    other than one or two inputs); ``n_frees`` (how many slots each step frees) and
    ``frees`` (every step's frees, in blocks of *descending* step order: step 0's block
    is the last, as the compiler's backward sweep found them)."""

    __slots__ = ("slot_nodes", "ops", "attrs", "arity", "a", "b", "out", "wide", "n_frees",
                 "frees", "ends")

    def __len__(self):
        return len(self.out)

    def ins_of(self, k) -> tuple:
        n, out = self.arity[k], self.out[k]
        return (self.a[k], self.b[k]) if n == 2 else (self.a[k],) if n == 1 else \
            self.wide[out]

    def frees_of(self, k) -> tuple:
        if self.ends is None:      # where each step's block ends (errors, tests only)
            ends, e = array("q"), len(self.frees)
            for c in self.n_frees:
                ends.append(e)
                e -= c
            self.ends = ends
        e, c = self.ends[k], self.n_frees[k]
        return tuple(self.frees[e - c:e])

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        out = self.out[k]
        return Step(self.ops[k], self.attrs[k], self.slot_nodes[out], self.ins_of(k), out,
                    self.frees_of(k))

    def __iter__(self):
        fr, j = self.frees, len(self.frees)
        for k, c in enumerate(self.n_frees):
            j -= c
            out = self.out[k]
            yield Step(self.ops[k], self.attrs[k], self.slot_nodes[out], self.ins_of(k),
                       out, tuple(fr[j:j + c]))


# -- the verifier ---------------------------------------------------------------------

def verify(plan: Plan, shapes: bool = True) -> Plan:
    """Check ``plan`` (and every sub-plan in a step's attrs); raise PlanError at the
    first broken invariant, else return the plan. Invariants:

    - every slot a step reads holds a value then: a leaf, a constant, or an earlier
      step's result not yet freed (a read before the write, or after a free, fails);
    - a step writes a slot that holds nothing (each slot is written once);
    - a free drops a slot that holds a value, no later step reads it (frees come
      after the last read), and no output slot is ever freed;
    - every output slot holds a value at the end;
    - with ``shapes`` and a graph: each step's op, given its input nodes, infers the
      shape and dtype its node records (run-time lengths, None, match any length)."""
    work = [plan]
    while work:
        p = work.pop()
        _verify_slots(p)
        if shapes and p.graph is not None:
            _verify_types(p)
        for st in p.steps:
            work.extend(v for v in st.attrs.values() if isinstance(v, Plan))
    return plan


def _verify_slots(p):
    n = len(p.slots)
    if len(p.consts) != n:
        raise PlanError(f"plan has {n} slots but {len(p.consts)} constant entries")
    live = bytearray(n)
    for s in p.leaves.values():
        live[s] = 1
    for s, v in enumerate(p.consts):
        if v is not None:
            live[s] = 1
    outs = set(p.outputs)
    for k, st in enumerate(p.steps):
        for s in st.ins:
            if not 0 <= s < n or not live[s]:
                raise PlanError(f"step {k} ({_what(p, st)}) reads slot %{s}, which holds "
                                "no value there (read before written, or after freed)")
        if not 0 <= st.out < n or live[st.out]:
            raise PlanError(f"step {k} ({_what(p, st)}) writes slot %{st.out}, which "
                            "already holds a value or is out of range")
        if p.slots[st.out] != st.node:
            raise PlanError(f"step {k} computes node {st.node} into slot %{st.out}, "
                            f"which holds node {p.slots[st.out]}")
        live[st.out] = 1
        for s in st.frees:
            if s in outs:
                raise PlanError(f"step {k} ({_what(p, st)}) frees output slot %{s}")
            if not live[s]:
                raise PlanError(f"step {k} ({_what(p, st)}) frees slot %{s}, which "
                                "holds no value")
            live[s] = 0
    for s in p.outputs:
        if not live[s]:
            raise PlanError(f"output slot %{s} holds no value at the end of the plan")


def _verify_types(p):
    g = p.graph
    for k, st in enumerate(p.steps):
        node = g.node(st.node)
        try:
            shape, dtype = st.op.infer(*[g.node(p.slots[s]) for s in st.ins], **st.attrs)
        except Exception as exc:
            raise PlanError(f"step {k} ({_what(p, st)}): its op refuses its inputs' "
                            f"shapes or dtypes: {exc}") from exc
        shape = tuple(shape)
        want = tuple(node.shape)
        if len(shape) != len(want) or any(
                a is not None and b is not None and a != b for a, b in zip(shape, want)):
            raise PlanError(f"step {k} ({_what(p, st)}) infers shape {shape}, its node "
                            f"records {want}")
        if dtype != node.dtype:
            raise PlanError(f"step {k} ({_what(p, st)}) infers dtype {dtype}, its node "
                            f"records {node.dtype}")


def _what(p, st) -> str:
    name = getattr(st.op, "name", st.op)
    if p.graph is None:
        return f"{name}, node {st.node}"
    return f"{name}, node {p.graph.node(st.node).name!r}"


# -- the printer ----------------------------------------------------------------------

def format_plan(plan: Plan) -> str:
    """The plan as text: its leaves and constants, then one line a step,
    ``%5 = mul(%2, %3)  # name, file:line; frees %2``; a sub-plan indented under its
    step. Iterative: a stack of (plan, indent, next step) frames."""
    lines = []
    stack = [(plan, "", None)]
    while stack:
        p, pad, it = stack.pop()
        if it is None:
            lines.extend(pad + line for line in _head(p))
            it = iter(enumerate(p.steps))
        for k, st in it:
            lines.append(pad + _step_line(p, st))
            subs = [v for v in st.attrs.values() if isinstance(v, Plan)]
            if subs:
                stack.append((p, pad, it))        # resume this plan after its sub-plans
                stack.extend((q, pad + "    ", None) for q in reversed(subs))
                break
        else:
            lines.append(pad + "return " + ", ".join(f"%{s}" for s in p.outputs))
    return "\n".join(lines)


def _head(p):
    g = p.graph
    for nid, s in sorted(p.leaves.items(), key=lambda kv: kv[1]):
        name = g.node(nid).name if g is not None else nid
        yield f"%{s} = leaf  # {name}"
    for s, v in enumerate(p.consts):
        if v is not None:
            text = repr(v) if getattr(v, "size", 1) <= 4 else \
                f"<{getattr(v, 'dtype', type(v).__name__)} array {getattr(v, 'shape', '')}>"
            yield f"%{s} = const {' '.join(text.split())}"


def _step_line(p, st):
    args = ", ".join(f"%{s}" for s in st.ins)
    plain = {k: v for k, v in st.attrs.items() if not isinstance(v, Plan)}
    if plain:
        args += (", " if args else "") + ", ".join(f"{k}={v!r}" for k, v in plain.items())
    line = f"%{st.out} = {getattr(st.op, 'name', st.op)}({args})"
    notes = []
    if p.graph is not None:
        node = p.graph.node(st.node)
        notes.append(node.name + (f", {node.where}" if node.where else ""))
    if st.frees:
        notes.append("frees " + ", ".join(f"%{s}" for s in st.frees))
    return line + ("  # " + "; ".join(notes) if notes else "")
