"""The profiling executor: the reference interpreter's step loop with a clock read
around each step (``fg.Program.profile``; the report is flowgrad/profile.py).

The clock is read once a step, after its frees, and a step's time is the span since
the previous read: its kernel, the frees (dropping a value is part of what the step
costs: a large array's memory goes back then) and the interpreter's own work for it
(unpacking the instruction, picking the arity, storing the value) — work that is the
node's on a chain of tiny steps (22,000 steps of a few hundred ns: timing only the
kernel left ~40 % of the wall outside every node). ``TimedRun.times`` holds the last
run's raw seconds a step.

**Keeping the profiler's own cost out.** What timing adds to a step is one
``perf_counter`` read and two stores. ``calibrate()`` measures it by running the same
loop over empty steps with and without the clock; the difference of their fastest runs,
a step, is ``TimedRun.overhead``, which the report subtracts from each step's time (never below
0). The binder and the backend's ``finish`` are counted in the profiled wall time only,
so the per-node times sum to slightly less than the wall time; the tests hold the sum
within 20 % of it, on a matmul-heavy graph and on the 2000-step chain.

``watch(k, value)``, when given, is called after step ``k`` outside the timed span
(the dask report uses it to learn which dask layers each step created; on the warm-up
call, flowgrad/engine/fused_timing.py takes the fused kernels' operands from it).
"""
from __future__ import annotations

from time import perf_counter

from .base import raise_step_error
from .interp import instructions

__all__ = ["Profiling", "TimedRun", "PROFILING", "calibrate"]


def _nothing(v):
    return v


def _untimed(code, vals):
    """The step loop of ``TimedRun`` without the clock (calibration's baseline)."""
    for k, (arity, fn, a, b, ins, out, frees) in enumerate(code):
        if arity == 1:
            vals[out] = fn(vals[a])
        for s in frees:
            vals[s] = None


def _timed(code, vals, times):
    """The same loop with ``TimedRun``'s clock reads and stores."""
    clock = perf_counter
    t0 = clock()
    for k, (arity, fn, a, b, ins, out, frees) in enumerate(code):
        if arity == 1:
            vals[out] = fn(vals[a])
        for s in frees:
            vals[s] = None
        t1 = clock()
        times[k] = t1 - t0
        t0 = t1


def calibrate(n: int = 501, rounds: int = 31) -> float:
    """The cost in seconds that timing adds to one step (a clock read, two stores): the
    same loop over ``n`` empty steps with and without the clock, each the fastest of
    ``rounds`` runs (a run the machine interrupts is only slower: the minimum is the
    loop's own cost, on a loaded machine too). At least 1 ns."""
    clock, code, vals, times = perf_counter, [(1, _nothing, 0, 0, (), 0, ())] * n, [0.0], [0.0] * n
    untimed, timed = [], []
    for _ in range(rounds):
        t0 = clock()
        _untimed(code, vals)
        t1 = clock()
        _timed(code, vals, times)
        t2 = clock()
        untimed.append(t1 - t0)
        timed.append(t2 - t1)
    return max((min(timed) - min(untimed)) / n, 1e-9)


class TimedRun:
    """``run(vals) -> vals`` of the executor interface, keeping each step's time."""

    def __init__(self, plan, code, watch=None):
        self.plan, self.code, self.watch = plan, code, watch
        self.times = [0.0] * len(code)
        self.overhead = calibrate()

    def __call__(self, vals):
        clock, times, watch = perf_counter, self.times, self.watch
        k = -1
        try:
            t0 = clock()
            for k, (arity, fn, a, b, ins, out, frees) in enumerate(self.code):
                if arity == 1:
                    vals[out] = fn(vals[a])
                elif arity == 2:
                    vals[out] = fn(vals[a], vals[b])
                else:
                    vals[out] = fn(*[vals[i] for i in ins])
                if watch is not None:   # before the frees: the inputs are still there
                    t1 = clock()
                    watch(k, vals[out])
                    t0 += clock() - t1
                for s in frees:
                    vals[s] = None
                t1 = clock()            # one read a step: this step ends, the next begins
                times[k] = t1 - t0
                t0 = t1
        except Exception as exc:
            raise_step_error(self.plan, k, exc, vals)
        return vals


class Profiling:
    """The reference interpreter, timed a step at a time (any plan, any backend)."""
    name = "profiling interpreter"
    bit_identical = True      # the interpreter's kernels, in its order: its bits
    ulps = 0

    def accepts(self, plan, backend) -> bool:
        return True

    def ulps_for(self, program) -> int:
        return 0

    def build(self, plan, backend, watch=None) -> TimedRun:
        return TimedRun(plan, instructions(plan, backend.xp), watch)


PROFILING = Profiling()
