"""The fused kernels of a program's generated code, timed on a profiled call's values
(``Program.profile``'s groups; the report is flowgrad/profile.py).

The profile times every node on the reference interpreter, so a group of steps that
generated code runs as one kernel (a numba region's loop, a numexpr chain) shows only
what those steps cost *apart*. Here each group's kernel is timed too: the very callable
the program's array function calls (its global ``r<k>`` or ``f<k>``, as it stands when
the profile runs), with the arguments that function would pass (a region's 0-d
operands as Python numbers), on the group's operands as the profile's warm-up call
computed them. The warm-up call hands each value over as its step ends
(``GroupTimer.watch``, the profiling executor's hook, outside its timed spans); when a
group's last step has run, its kernel is called once to warm up (numba compiles for new
argument types, numexpr parses its expression) and then ``repeat`` times, each call
between two clock reads; its time is their mean less one clock read (the profiler's
calibrated ``overhead``), as the nodes' times are. The operands are let go as soon as
no group still needs them.

A group gets no time (None, and ``note`` says why) where the generated code would not run
its kernel on these values, or where it cannot be timed here: a numba loop this process
has not compiled yet (a program compiles its loops on its second call; the profile never
calls the program, so it compiles nothing), or one numba could not compile; a numexpr
chain whose operands are under ``fusion.NUMEXPR_MIN`` entries, or a region with run-time
lengths whose operands broadcast or are under ``regions.MIN_SIZE`` entries (the separate
steps run); while numpy's error state raises (calls run the interpreter); a device
kernel (cupy's: it is queued, not run, when the call returns); and lazy backends (dask).
"""
from __future__ import annotations

from math import fsum
from time import perf_counter

from . import codegen as _codegen
from . import fusion as _fusion
from . import regions as _regions

__all__ = ["FusedKernel", "FusedTime", "GroupTimer", "fused_kernels", "group_timer",
           "time_kernel"]


class FusedTime:
    """A group's fused kernel time: ``seconds`` a call (None: not measured) and ``note``
    (why not; "" when measured)."""

    def __init__(self, seconds, note=""):
        self.seconds, self.note = seconds, note


class FusedKernel:
    """One group the array function runs as one kernel: ``kind``, ``steps`` (plan indices,
    plan order: the last is where it runs), ``operands`` (slots, in argument order);
    ``call(values)`` is (kernel, arguments) for these operand values, or a note saying
    why the generated code would not run the kernel on them."""

    def __init__(self, kind, steps, operands):
        self.kind, self.steps, self.operands = kind, tuple(steps), tuple(operands)

    def call(self, values):
        raise NotImplementedError


class _Region(FusedKernel):
    def __init__(self, rg, lazy, ns):
        super().__init__("numba region", rg.steps, rg.operands)
        self.rg, self.lazy, self.ns = rg, lazy, ns

    def call(self, values):
        rg, lazy = self.rg, self.lazy
        args = [values[s] for s in rg.operands]
        if rg.dynamic:                 # the generated code's per-call test, on these values
            full = args[:rg.n_full]
            if any(a.shape != full[0].shape for a in full) or full[0].size < _regions.MIN_SIZE:
                return (f"runs as separate steps on these values (operands that "
                        f"broadcast, or under {_regions.MIN_SIZE} entries)")
        if lazy.error is not None:
            return "numba could not compile its loop: its steps run instead"
        fn = self.ns[f"r{rg.steps[-1]}"]
        if fn is lazy:
            fn = lazy.compiled()
            if fn is None:
                return ("its numba loop is not compiled yet (a program compiles it on its "
                        "second call: call the program twice, then profile)")
        args = [a if kind is None else (float(a) if kind == "float" else bool(a))
                for a, kind in zip(args, rg.scalar)]
        return fn, args


class _Chain(FusedKernel):
    def __init__(self, plan, root, ch, ns):
        super().__init__("numexpr chain", ch.steps, ch.operands)
        self.plan, self.fn = plan, ns[f"f{root}"]

    def call(self, values):
        big = _codegen.big_operand(self.plan, self.operands)
        if big is False or (big is not True and values[big].size < _fusion.NUMEXPR_MIN):
            return (f"runs as separate steps: numexpr runs only on {_fusion.NUMEXPR_MIN} "
                    "entries or more")
        return self.fn, [values[s] for s in self.operands]


class _DeviceChain(FusedKernel):
    def __init__(self, ch):
        super().__init__("fused chain", ch.steps, ch.operands)

    def call(self, values):
        return "a device kernel (queued, not run, when the call returns): not timed"


def fused_kernels(prog) -> list:
    """The FusedKernels of ``prog``'s generated array function (none without one)."""
    gen = prog.generated
    if gen is None:
        return []
    parts = gen.fused_parts()
    out = [_Region(rg, parts.lazy[k], parts.ns) for k, rg in parts.regions.items()]
    numexpr = prog.backend.fusion == "numexpr"
    for k, ch in parts.chains.items():
        out.append(_Chain(prog.plan, k, ch, parts.ns) if numexpr else _DeviceChain(ch))
    return out


def time_kernel(fn, args, repeat, overhead):
    """(mean seconds a call less ``overhead``, never below 0; the last call's outputs as a
    list): one warm-up call, then ``repeat`` calls, each between two clock reads."""
    out = fn(*args)                    # warm-up: numba's compile for these types, numexpr's parse
    clock, spans = perf_counter, []
    for _ in range(repeat):
        t0 = clock()
        out = fn(*args)
        spans.append(clock() - t0)
    return max(fsum(spans) / repeat - overhead, 0.0), \
        list(out) if isinstance(out, tuple) else [out]


class GroupTimer:
    """Times ``kernels`` on one call's values: ``start(vals)`` once the call is bound,
    ``watch(k, value)`` after its step ``k``; ``times`` {last step: FusedTime}."""

    def __init__(self, plan, kernels, repeat, overhead, why_not=None):
        self.kernels, self.repeat, self.overhead = kernels, repeat, overhead
        self.out_of = [st.out for st in plan.made_steps()]
        self.due = {} if why_not else {kern.steps[-1]: kern for kern in kernels}
        self.times = {kern.steps[-1]: FusedTime(None, why_not or "its steps did not run")
                      for kern in kernels}
        self.need, self.held = {}, {}
        for kern in self.due.values():
            for s in set(kern.operands):
                self.need[s] = self.need.get(s, 0) + 1

    def start(self, vals):
        """Keep the operands no step makes (feeds, variables, constants)."""
        made = set(self.out_of)
        self.held = {s: vals[s] for s in self.need if s not in made}

    def watch(self, k, value):
        s = self.out_of[k]
        if s in self.need:
            self.held[s] = value
        kern = self.due.pop(k, None)
        if kern is None:
            return
        self.times[k] = self._time(kern)
        for s in set(kern.operands):   # let go of what no group still needs
            self.need[s] -= 1
            if not self.need[s]:
                del self.need[s]
                self.held.pop(s, None)

    def _time(self, kern) -> FusedTime:
        # never raises: this runs inside the profiled call's step loop, which would blame
        # the group's last node for it (a kernel that refuses the values is also what
        # makes the generated code run a region's steps instead)
        try:
            got = kern.call(self.held)
            if isinstance(got, str):
                return FusedTime(None, got)
            seconds, _ = time_kernel(*got, self.repeat, self.overhead)
        except Exception as exc:
            return FusedTime(None, f"its kernel refused these values ({exc!r:.120})")
        return FusedTime(seconds)


def group_timer(prog, repeat, overhead, lazy_tasks=False) -> GroupTimer:
    """A GroupTimer for ``prog``'s fused kernels (none unless it runs generated array code)."""
    from . import executors as _ex
    kernels = fused_kernels(prog) if prog.executor is _ex.GENERATED else []
    why_not = None
    if lazy_tasks:
        why_not = "a lazy backend's step only builds tasks: not timed"
    elif _codegen.fp_raises():
        why_not = "numpy's error state raises: calls run the interpreter's steps"
    return GroupTimer(prog.plan, kernels, repeat, overhead, why_not)
