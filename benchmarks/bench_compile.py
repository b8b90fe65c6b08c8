"""Compile time of issue 12's 2000-step scalar chain, and where it goes.

    .venv/bin/python benchmarks/bench_compile.py [--repeats 15] [--steps 2000]

Builds ``y = sin(y)·1.0001 + 0.1·cos(y)`` (30,003 graph nodes with its gradient) and
times, in interleaved rounds on the same graph, ``fg.compile([y, g])`` (generated code)
and ``fg.compile([y, g], codegen=False)`` (the reference interpreter). Each compile is
timed twice over: wall time, and the process's CPU time (steadier on a shared
machine). Before each round the collector is run, so that a collection of the objects
the graph's build and grad left behind (which their own sweeps pause the collector for)
is not charged to whichever compile allocates first; ``bench_peers.py --only chain``
times one compile straight after grad, collection included.

Then one compile is split into its passes with plain timers (pruning, simplify's
forward pass, the scheduler's backward sweep and slot map, code generation), and the
first, second and a later call are timed: a long scalar plan runs its first call
as a loop over its steps and writes and compiles its Python source on the second.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

import flowgrad as fg
from flowgrad.engine import codegen, program as scheduler, simplify


def build(steps):
    t0 = time.perf_counter()
    g = fg.Graph()
    with g:
        x = fg.placeholder("x")
        y = x
        for _ in range(steps):
            y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
        t1 = time.perf_counter()
        grad = fg.grad(y, x)
    t2 = time.perf_counter()
    return g, [y, grad], t1 - t0, t2 - t1


def timed(f):
    w, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w, time.process_time() - c


def phases(outs):
    """{pass: seconds} of one compile, from wrappers around each pass's function."""
    spent = {}

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        def timed_fn(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, name, timed_fn)
        return fn

    saved = [(scheduler, "_pruned", wrap(scheduler, "_pruned", "prune (DFS + sort)")),
             (scheduler, "simplify", wrap(scheduler, "simplify", "simplify (forward pass)")),
             (codegen, "generate", wrap(codegen, "generate", "codegen (scalar check, stub)")),
             (scheduler.Program, "_build_plan",
              wrap(scheduler.Program, "_build_plan", "_build_plan"))]
    try:
        gc.collect()
        t = time.perf_counter()
        fg.compile(outs)
        total = time.perf_counter() - t
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    build_plan = spent.pop("_build_plan")
    spent["backward sweep, slots, checks"] = build_plan - spent["simplify (forward pass)"] \
        - spent["codegen (scalar check, stub)"]
    spent["rest (Program setup)"] = total - build_plan - spent["prune (DFS + sort)"]
    return total, spent


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--no-phases", action="store_true",
                    help="times only (for a flowgrad without these passes, e.g. an older one)")
    args = ap.parse_args(argv)
    print(f"numpy {np.__version__}, Python {sys.version.split()[0]}")
    g, outs, t_build, t_grad = build(args.steps)
    print(f"\n### compile time, {args.steps}-step scalar chain ({len(g.nx)} graph nodes)\n")
    print(f"build {t_build * 1e3:.0f} ms, grad {t_grad * 1e3:.0f} ms (one run each)\n")
    times = {"codegen": ([], []), "interpreter": ([], [])}
    prog = None
    for _ in range(args.repeats):
        for label, codegen_on in (("codegen", True), ("interpreter", False)):
            prog = None
            gc.collect()
            prog, wall, cpu = timed(lambda: fg.compile(outs, codegen=codegen_on))
            times[label][0].append(wall)
            times[label][1].append(cpu)
    print("| compile | median wall | min wall | median CPU | min CPU |")
    print("|---|---|---|---|---|")
    for label, (wall, cpu) in times.items():
        print(f"| {label} | {np.median(wall) * 1e3:.1f} ms | {min(wall) * 1e3:.1f} ms | "
              f"{np.median(cpu) * 1e3:.1f} ms | {min(cpu) * 1e3:.1f} ms |")
    prog = fg.compile(outs)
    print(f"\n{prog.n_steps} plan steps; simplify {'on' if simplify.enabled() else 'off'}")
    best = None
    for _ in range(0 if args.no_phases else max(3, args.repeats // 3)):
        total, spent = phases(outs)
        if best is None or total < best[0]:
            best = (total, spent)
    if best is not None:
        _print_phases(g, best, max(3, args.repeats // 3))
    x0 = np.float64(0.4)
    gc.collect()
    prog, t_compile, _ = timed(lambda: fg.compile(outs))
    _, first, _ = timed(lambda: prog(x=x0))
    _, second, _ = timed(lambda: prog(x=x0))
    _, later, _ = timed(lambda: prog(x=x0))
    print(f"\ncompile {t_compile * 1e3:.0f} ms; first call {first * 1e3:.0f} ms (a long scalar "
          f"plan: a loop over its steps, flowgrad/engine/scalar_tier.py), second call "
          f"{second * 1e3:.0f} ms (writes and compiles the scalar source), a later call "
          f"{later * 1e3:.2f} ms; time to the first result "
          f"{(t_compile + first) * 1e3:.0f} ms")


def _print_phases(g, best, n):
    total, spent = best
    print(f"\nOne compile by pass (the fastest of {n}: "
          f"{total * 1e3:.1f} ms):\n")
    print("| pass | ms | µs a graph node |")
    print("|---|---|---|")
    for label, t in spent.items():
        print(f"| {label} | {t * 1e3:.1f} | {t / len(g.nx) * 1e6:.2f} |")


if __name__ == "__main__":
    main()
