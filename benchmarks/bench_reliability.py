"""Reliability overhead (issue 10): per-call cost of the seed's scalar example and the
build time of a 10^5-node chain, for the run-time checks and build-time line recording.

    .venv/bin/python benchmarks/bench_reliability.py [--repeats 30]

Run it with ``PYTHONPATH=<a checkout of another commit>`` to measure that commit in the
same session; the figures in RESULTS.md are the medians of such interleaved runs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flowgrad as fg
from bench_core import median_time


def scalar_call(repeats, lam=0.1):
    """One call of the compiled seed example (feeds bound, plan run, outputs returned)."""
    with fg.Graph():
        x = fg.placeholder("x")
        t = fg.placeholder("t")
        w = fg.variable(0.8, name="w")
        b = fg.variable(-0.3, name="b")
        y = fg.sigmoid(w * x + b)
        loss = 0.5 * (y - t) ** 2 + lam * (0.5 * w ** 2)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    X, T = np.float64(1.5), np.float64(1.0)
    return median_time(lambda: prog(x=X, t=T), repeats, 500)


def chain_build(n=100_000):
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
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    call = scalar_call(args.repeats)
    build = min(chain_build() for _ in range(3))
    print(f"scalar seed example, one call: {call * 1e6:.2f} µs")
    print(f"10^5-node chain, graph build: {build:.3f} s ({build / 1e5 * 1e6:.2f} µs/node)")


if __name__ == "__main__":
    main()
