"""The profiling executor: the reference interpreter's step loop with a clock read
around each step (``fg.Program.profile``; the report is flowgrad/profile.py).

Each step is timed from just before its kernel is called to just after its frees
(dropping a value is part of what the step costs: a large array's memory goes back
then). ``TimedRun.times`` holds the last run's raw seconds a step.

**Keeping the profiler's own cost out.** A timed step costs, beside its kernel, one
``perf_counter`` read and the slot stores of the loop. ``calibrate()`` measures that
cost by timing an *empty step* (the same loop body around a kernel that does nothing)
many times; its median is ``TimedRun.overhead``, which the report subtracts from each
step's time (never below 0). What is left outside every step (the loop's unpacking,
the binder, the backend's ``finish``) is counted in the profiled wall time only, so
the per-node times sum to slightly less than the wall time; the tests hold the sum
within 20 % of it.

``watch(k, value)``, when given, is called after step ``k`` outside the timed span
(the dask report uses it to learn which dask layers each step created).
"""
from __future__ import annotations

from statistics import median
from time import perf_counter

from .base import raise_step_error
from .interp import instructions

__all__ = ["Profiling", "TimedRun", "PROFILING", "calibrate"]


def _nothing(v):
    return v


def calibrate(n: int = 2001) -> float:
    """The median cost in seconds of one timed empty step (clock read, a call, a store)."""
    clock, vals, fn = perf_counter, [0.0], _nothing
    got = []
    for _ in range(n):
        t0 = clock()
        vals[0] = fn(vals[0])
        got.append(clock() - t0)
    return median(got)


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
            for k, (arity, fn, a, b, ins, out, frees) in enumerate(self.code):
                t0 = clock()
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
                times[k] = clock() - t0
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
