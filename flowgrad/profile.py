"""``Program.profile``: which node is slow. One row per executed node (op, calls,
seconds, share), slowest first, the profiled wall time, a text and HTML table, and
``fg.viz.draw(p)`` shading each box by its time.

**What is timed.** The reference interpreter's step loop, a clock read after each
step (the profiling executor, flowgrad/engine/executors/profile.py, which says how its
own overhead is kept out). One warm-up call runs first and is not counted (imports,
caches, numpy's first-touch costs); then ``repeat`` calls. A node's time is its mean
over those calls (a call's share), and the wall time the calls' mean, less the
profiler's own cost (the calibrated ``overhead`` a step, taken off the nodes too: on
the 2000-step chain it is ~15 % of a call, which would otherwise sit in the wall and in
no node). Both come from the same calls, so the per-node times add up to at most the
wall time (a median per node would not: on a loaded machine each node's median comes
from another call, and their sum strayed ±50 % from the median wall time in our tests).

**Fused steps.** Generated code runs some steps as one kernel (numba regions, numexpr
chains). The per-node rows time the interpreter, not the generated function: timing
inside one generated function would mean generating other code (timers between its
lines, numba regions split open) — measuring something that is not what runs — and the
interpreter gives every node its own time on every backend. So each node is timed on
its own, and ``p.groups`` lists the groups the program's generated code fuses, each with
two times. ``seconds``: its nodes' summed interpreter time, what the steps cost apart.
``fused_seconds``: the kernel that does run for them, timed on its own — the callable the
program's generated function calls, on the group's operands from the warm-up call, one
warm-up call of it and then ``repeat`` calls between clock reads, their mean less a
clock read (flowgrad/engine/fused_timing.py). It is None, and ``fused_note`` says why,
where that kernel would not run on these values or is not there to time: a numexpr
chain under ``fusion.NUMEXPR_MIN`` entries, a numba loop not compiled yet (a program
compiles its loops on its second call, and profiling calls no program: call it twice
first), numpy's error state raising, a device kernel, dask. The table shows both
("fused 150 µs vs 3.1 ms as separate steps"). The wall time and the per-node rows are
the interpreter's, as before: the fused times are not in them.

**dask.** A step's kernel only builds tasks; the work is done by one compute at the
end. The profile times that compute with dask's own diagnostics
(``dask.diagnostics.Profiler``, local schedulers) with graph optimisation off, so every
task belongs to the dask layer one step created; a node's time is its step (building
its tasks) plus its tasks' run time. Tasks no step created (the feeds' chunks,
dask's finalize) are one row without a node. With several worker threads the task
times add up across threads, so the per-node sum may exceed the wall time; on a
``dask.distributed`` cluster the local Profiler sees no task, and the profile refuses
(``BackendError``) rather than report times it did not measure.
"""
from __future__ import annotations

import html
import numbers
from dataclasses import dataclass
from math import fsum
from time import perf_counter

from .errors import BackendError, UsageError

__all__ = ["Profile", "ProfileRow", "ProfileGroup", "profile"]


@dataclass
class ProfileRow:
    """One executed node: its Node (None for a dask row of tasks no step made), name,
    op, how many times it ran (``calls``), its mean seconds a call, and its share of
    the per-node sum."""
    node: object
    name: str
    op: str
    calls: int
    seconds: float
    share: float
    where: str = ""


@dataclass
class ProfileGroup:
    """Steps that generated code runs as one kernel: its kind, its nodes, their summed
    interpreter time (``seconds``, ``share``), and ``fused_seconds``, that kernel's own
    time on the call's values (None when not measured; ``fused_note`` says why)."""
    kind: str
    nodes: list
    seconds: float
    share: float
    fused_seconds: float | None = None
    fused_note: str = ""

    def describe(self) -> str:
        """"fused 150 µs vs 3.1 ms as separate steps", or why the kernel was not timed."""
        apart = f"{fmt_seconds(self.seconds)} as separate steps"
        if self.fused_seconds is None:
            return f"{apart}; fused kernel not timed: {self.fused_note}"
        return f"fused {fmt_seconds(self.fused_seconds)} vs {apart}"


class Profile:
    """The result of ``prog.profile(...)``: ``rows`` (slowest first), ``wall`` (the
    mean profiled call, seconds), ``groups`` (what generated code fuses), ``result``
    (the call's outputs, as ``prog(...)`` returns them), ``outputs`` (the output nodes),
    ``table()``; ``fg.viz.draw(p)`` draws the graph shaded by time."""

    def __init__(self, outputs, rows, groups, wall, repeat, overhead, result, backend):
        self.outputs, self.rows, self.groups, self.wall = outputs, rows, groups, wall
        self.repeat, self.overhead, self.result, self.backend = repeat, overhead, result, backend

    @property
    def total(self) -> float:
        """The per-node times added up (seconds a call)."""
        return sum(r.seconds for r in self.rows)

    def table(self, limit: int = 25) -> str:
        """The ``limit`` slowest nodes, then the fused groups, as text."""
        lines = [f"profile on {self.backend}: {len(self.rows)} node(s), wall "
                 f"{fmt_seconds(self.wall)} a call (mean of {self.repeat}), per-node sum "
                 f"{fmt_seconds(self.total)}; {fmt_seconds(self.overhead)} a step of "
                 "timing overhead removed",
                 f"  {'share':>6}  {'seconds':>10}  {'calls':>5}  {'op':<14} node"]
        for r in self.rows[:limit]:
            at = f"  ({r.where})" if r.where else ""
            lines.append(f"  {r.share:6.1%}  {fmt_seconds(r.seconds):>10}  {r.calls:>5}  "
                         f"{r.op:<14} {r.name}{at}")
        if len(self.rows) > limit:
            lines.append(f"  … {len(self.rows) - limit} more")
        for g in self.groups:
            lines.append(f"  {g.kind}: {g.describe()} ({g.share:.1%}) — "
                         + ", ".join(n.name for n in g.nodes))
        return "\n".join(lines)

    def __repr__(self):
        return self.table()

    def _repr_html_(self):
        cells = "".join(
            f"<tr><td>{r.share:.1%}</td><td>{fmt_seconds(r.seconds)}</td><td>{r.calls}</td>"
            f"<td>{html.escape(r.op)}</td><td>{html.escape(r.name)}</td>"
            f"<td>{html.escape(r.where)}</td></tr>" for r in self.rows)
        groups = "".join(
            f"<tr><td>{html.escape(g.kind)}</td><td>{html.escape(g.describe())}</td>"
            f"<td>{g.share:.1%}</td>"
            f"<td>{html.escape(', '.join(n.name for n in g.nodes))}</td></tr>"
            for g in self.groups)
        if groups:
            groups = ("<table><tr><th>fused group</th><th>time</th><th>share</th>"
                      f"<th>nodes</th></tr>{groups}</table>")
        return (f"<p>wall {fmt_seconds(self.wall)} a call (mean of {self.repeat})</p>"
                "<table><tr><th>share</th><th>seconds</th><th>calls</th><th>op</th>"
                f"<th>node</th><th>line</th></tr>{cells}</table>{groups}")

    def shading(self) -> tuple[dict, dict]:
        """({node: fill colour}, {node: caption}) for ``fg.viz.draw(p)``: darker for a
        larger share of the time, each box captioned with its time and share."""
        colours, captions = {}, {}
        top = max((r.share for r in self.rows), default=0.0) or 1.0
        for r in self.rows:
            if r.node is None:
                continue
            colours[r.node] = _shade(r.share / top)
            captions[r.node] = f"{fmt_seconds(r.seconds)} ({r.share:.0%})"
        return colours, captions


def fmt_seconds(s: float) -> str:
    """``s`` seconds with a readable unit: 1.23 s, 45.6 ms, 789 µs, 12 ns."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _shade(t: float) -> str:
    """A fill colour from pale (t = 0) to deep orange (t = 1)."""
    lo, hi = (0xFF, 0xF5, 0xEB), (0xF1, 0x69, 0x13)
    return "#" + "".join(f"{round(a + (b - a) * t):02X}" for a, b in zip(lo, hi))


def check_repeat(repeat) -> int:
    """``repeat`` as an int ≥ 1, else UsageError (bools and floats too: 1.5, 2.0)."""
    if isinstance(repeat, bool) or not isinstance(repeat, numbers.Integral) or repeat < 1:
        raise UsageError(f"profile's repeat= takes a whole number of calls ≥ 1, got "
                         f"{repeat!r}")
    return int(repeat)


def profile(prog, args, kwargs, repeat=10) -> Profile:
    """Profile ``prog`` (a Program) on the feeds ``args``/``kwargs`` (as a call takes
    them): a warm-up call, then ``repeat`` timed calls."""
    repeat = check_repeat(repeat)
    from .engine.executors.profile import PROFILING
    from .engine.fused_timing import group_timer
    steps = prog.plan.made_steps()
    tasks = _DaskTasks() if prog.backend.lazy_tasks else None
    run = PROFILING.build(prog.plan, prog.backend, tasks.watch if tasks else None)
    fused = group_timer(prog, repeat, run.overhead, tasks is not None)
    samples, walls = [], []
    for r in range(repeat + 1):        # call 0 warms up: not counted
        t0 = perf_counter()
        vals = prog.bind(args, kwargs)
        if tasks is not None:
            tasks.start(vals)
        elif r == 0 and fused.due:     # the warm-up hands the fused kernels their operands
            fused.start(vals)
            run.watch = fused.watch
        run(vals)
        if tasks is None:
            run.watch = None
        outs = [vals[s] for s in prog.plan.outputs]
        outs = tasks.compute(outs) if tasks is not None else prog.backend.finish(outs)
        wall = perf_counter() - t0
        if r:
            walls.append(max(wall - len(steps) * run.overhead, 0.0))   # its clock reads
            samples.append(tasks.add(run.times) if tasks is not None else list(run.times))
    rows = _rows(prog, steps, samples, run.overhead, repeat)
    return Profile(prog.outputs, sorted(rows, key=lambda r: -r.seconds),
                   _groups(fused, rows), fsum(walls) / repeat, repeat, run.overhead,
                   _result(prog, outs), prog.backend.name)


def _rows(prog, steps, samples, overhead, repeat) -> list:
    """One row per step, in plan order (and the dask row of other tasks last), shares
    filled in; each time the mean over the calls, less the timing overhead."""
    per = [fsum(col) / len(col) for col in zip(*samples)]
    g, rows = prog.graph, []
    for k, st in enumerate(steps):
        node = g.node(st.node)
        rows.append(ProfileRow(node, node.name, st.op.name, repeat,
                               max(0.0, per[k] - overhead), 0.0, node.where or ""))
    if len(per) > len(rows):
        rows.append(ProfileRow(None, "(dask tasks no step made: feeds, finalize)", "dask",
                               repeat, per[-1], 0.0))
    total = sum(r.seconds for r in rows)
    for r in rows:
        r.share = r.seconds / total if total > 0 else 0.0
    return rows


def _groups(fused, rows) -> list:
    """The fused groups of the program's generated array code (``fused``, the
    GroupTimer: none when the program runs the interpreter or scalar code, neither of
    which fuses), slowest first, each with its kernel's time."""
    out = []
    for kern in fused.kernels:
        ks, t = kern.steps, fused.times[kern.steps[-1]]
        out.append(ProfileGroup(kern.kind, [rows[k].node for k in ks],
                                sum(rows[k].seconds for k in ks),
                                sum(rows[k].share for k in ks), t.seconds, t.note))
    return sorted(out, key=lambda grp: -grp.seconds)


def _result(prog, outs):
    """The outputs as the program's own call hands them out (copies where they alias;
    without the values of declared state updates, which profiling never writes)."""
    for k in prog.copy_outputs:
        if hasattr(outs[k], "copy"):
            outs[k] = outs[k].copy()
    outs = outs[:len(prog.outputs)]
    return outs[0] if prog.single else outs


class _DaskTasks:
    """Which dask layers each step created (``watch``), and the compute's task times
    (dask's local ``Profiler``) added to the steps that made them (``add``)."""

    def __init__(self):
        import dask
        from dask.diagnostics import Profiler
        self.dask, self.Profiler = dask, Profiler
        self.seen, self.layer_step, self.tasks = set(), {}, []

    def start(self, vals):
        """A new call: the layers already there (the feeds', constants') belong to no step."""
        self.layer_step = {}
        self.seen = set()
        for v in vals:
            graph = getattr(v, "dask", None)
            if graph is not None:
                self.seen.update(graph.layers)

    def watch(self, k, value):
        graph = getattr(value, "dask", None)
        if graph is None:
            return
        for name in graph.layers:      # steps run in topological order: new ones are k's
            if name not in self.seen:
                self.seen.add(name)
                self.layer_step[name] = k

    def compute(self, outs):
        lazy = [k for k, v in enumerate(outs) if isinstance(v, self.dask.array.Array)]
        if not lazy:
            self.tasks = []
            return outs
        with self.Profiler() as prof:
            done = self.dask.compute(*[outs[k] for k in lazy], optimize_graph=False)
        if not prof.results:
            raise BackendError("profile on dask times tasks with dask's local Profiler, "
                               "which saw none: a dask.distributed client runs them; "
                               "profile without the client (or on the numpy backend)")
        self.tasks = prof.results
        outs = list(outs)
        for k, v in zip(lazy, done):
            outs[k] = v
        return outs

    def add(self, times) -> list:
        """The steps' times with their tasks' added, and the other tasks' time last."""
        got, other = list(times), 0.0
        for t in self.tasks:
            name = t.key[0] if isinstance(t.key, tuple) else t.key
            k = self.layer_step.get(name)
            if k is None:
                other += t.end_time - t.start_time
            else:
                got[k] += t.end_time - t.start_time
        return got + [other]
