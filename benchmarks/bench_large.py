"""Large graphs (issue 12, lever 5): a chain y = sin(y) of N nodes — build, gradient,
compile (with and without generated code) and one run, with time and memory, and the
same chain's value and derivative by a hand-written numpy loop for the ratio.

    .venv/bin/python benchmarks/bench_large.py [--n 1000000] [--profile]

Memory is the process's peak resident size (ru_maxrss) growth over the start, so the
figures include Python's own overheads. Each phase also reports its CPU time (the
process's), steadier than wall time on a shared machine; --profile prints where building and compiling
spend their time (cProfile, top entries).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time

import numpy as np

import flowgrad as fg


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    n = args.n
    base = rss_mb()
    prof = cProfile.Profile() if args.profile else None
    marks = {}
    cpu = {}
    c = time.process_time()
    t = time.perf_counter()
    with fg.Graph() as g:
        if prof:
            prof.enable()
        x = fg.placeholder("x")
        y = x
        for _ in range(n):
            y = fg.sin(y)
        marks["build"] = (time.perf_counter() - t, rss_mb() - base, len(g))
        cpu["build"] = time.process_time() - c
        c = time.process_time()
        t = time.perf_counter()
        dy = fg.grad(y, x)
        marks["grad"] = (time.perf_counter() - t, rss_mb() - base, len(g))
        cpu["grad"] = time.process_time() - c
        c = time.process_time()
        t = time.perf_counter()
        prog = fg.compile([y, dy])
        marks["compile (codegen)"] = (time.perf_counter() - t, rss_mb() - base, prog.n_steps)
        cpu["compile (codegen)"] = time.process_time() - c
        if prof:
            prof.disable()
        c = time.process_time()
        t = time.perf_counter()
        value, deriv = prog(x=0.5)
        marks["run"] = (time.perf_counter() - t, rss_mb() - base, None)
        cpu["run"] = time.process_time() - c
    v, d = 0.5, 1.0
    for _ in range(min(n, 10_000)):
        v, d = np.sin(v), d * np.cos(v)
    if n <= 10_000:
        assert abs(float(value) - v) < 1e-12 and abs(float(deriv) - d) < 1e-9
    total = sum(m[0] for k, m in marks.items() if k != "run")
    print(f"chain of {n:,} sin nodes (graph: {marks['grad'][2]:,} nodes after grad); "
          f"Python {sys.version.split()[0]}\n")
    print("| phase | time | CPU time | peak RSS growth | nodes / plan steps |")
    print("|---|---|---|---|---|")
    for k, (tm, mem, cnt) in marks.items():
        print(f"| {k} | {tm:.2f} s | {cpu[k]:.2f} s | {mem:,.0f} MB | "
              f"{'' if cnt is None else f'{cnt:,}'} |")
    total_cpu = sum(v for k, v in cpu.items() if k != "run")
    print(f"\nbuild + grad + compile: {total:.1f} s ({total_cpu:.1f} s CPU); peak RSS growth {rss_mb() - base:,.0f} MB "
          f"= {(rss_mb() - base) * 2**20 / marks['grad'][2]:,.0f} bytes per graph node")
    hand = _hand_numpy_seconds(n)
    print(f"hand-written numpy, the same chain's value and derivative (one loop, CPU): "
          f"{hand:.2f} s; flowgrad's run {cpu['run'] / hand:.2f}×, build + grad + compile "
          f"+ run {(total_cpu + cpu['run']) / hand:.2f}× it")
    if prof:
        print()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def _hand_numpy_seconds(n):
    """CPU seconds of the chain by hand: v = sin(v) and its derivative d·cos(v), n steps,
    numpy's scalar functions (what the flowgrad program computes, without a graph)."""
    c = time.process_time()
    v, d = np.float64(0.5), np.float64(1.0)
    for _ in range(n):
        v, d = np.sin(v), d * np.cos(v)
    return time.process_time() - c


if __name__ == "__main__":
    main()
