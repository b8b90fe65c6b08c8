"""Reliability overhead (issue 10): the per-call cost of the lecture notes' scalar example (as in
bench_core.py) and the build time of a 10^5-node chain, which now records each node's
user line and takes the graph's lock.

    .venv/bin/python benchmarks/bench_reliability.py [--repeats 200]
    PYTHONPATH=DIR .venv/bin/python benchmarks/bench_reliability.py --against flowgrad_main

``--against NAME`` imports a second copy of flowgrad under another package name (an older
commit, its imports renamed) and times both in one process, interleaved, so both see the
same machine load: the figures in RESULTS.md were measured that way.
"""
from __future__ import annotations

import argparse
import importlib
import time

import numpy as np

import flowgrad


def scalar_program(fg, lam=0.1):
    """The compiled seed example: loss and its gradient w.r.t. w and b."""
    with fg.Graph():
        x = fg.placeholder("x")
        t = fg.placeholder("t")
        w = fg.variable(0.8, name="w")
        b = fg.variable(-0.3, name="b")
        y = fg.sigmoid(w * x + b)
        loss = 0.5 * (y - t) ** 2 + lam * (0.5 * w ** 2)
        return fg.compile([loss, *fg.grad(loss, [w, b])])


def time_calls(prog, inner=200):
    X, T = np.float64(1.5), np.float64(1.0)
    t0 = time.perf_counter()
    for _ in range(inner):
        prog(x=X, t=T)
    return (time.perf_counter() - t0) / inner


def chain_build(fg, n=100_000):
    """Seconds to build an n-node chain x → sin → sin → … (one op node per step)."""
    with fg.Graph():
        x = fg.placeholder("x")
        t0 = time.perf_counter()
        y = x
        for _ in range(n):
            y = fg.sin(y)
        return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--against", default=None)
    args = parser.parse_args()
    libs = {"this": flowgrad}
    if args.against:
        libs[args.against] = importlib.import_module(args.against)
    progs = {k: scalar_program(fg) for k, fg in libs.items()}
    calls = {k: [] for k in libs}
    for _ in range(args.repeats):      # interleaved: both see the same load
        for k, prog in progs.items():
            calls[k].append(time_calls(prog))
    builds = {k: [] for k in libs}
    for _ in range(args.builds):
        for k, fg in libs.items():
            builds[k].append(chain_build(fg))
    for k in libs:
        c, b = np.array(calls[k]), np.array(builds[k])
        print(f"{k}: scalar seed example, one call: min {c.min() * 1e6:.2f} µs, "
              f"median {np.median(c) * 1e6:.2f} µs; 10^5-node chain build: "
              f"min {b.min():.3f} s ({b.min() / 1e5 * 1e6:.2f} µs/node), "
              f"median {np.median(b):.3f} s")


if __name__ == "__main__":
    main()
