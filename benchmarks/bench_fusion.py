"""Elementwise fusion on numpy: which kernel form pays (issue 12, lever 3).

The chain is the reverse of the stable logistic loss, r = g·(σ(z) − t), with σ through
e = exp(−|z|), on n float64 entries, in four forms, timed interleaved in one process:

* unfused — one numpy call per op, a new temporary each (what the interpreter runs);
* out= buffers — the same calls writing into buffers allocated once (generated-code style);
* numexpr, 1 thread and all threads — one pass, no temporaries.

    .venv/bin/python benchmarks/bench_fusion.py [--repeats 21]
"""
from __future__ import annotations

import argparse
import os

import numexpr
import numpy as np

from bench_peers import fmt, interleaved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    print(f"numexpr {numexpr.__version__}, {os.cpu_count()} CPUs\n")
    print("| n | unfused numpy | out= buffers | numexpr 1 thread | numexpr all threads |")
    print("|---|---|---|---|---|")
    ex = numexpr.NumExpr("g * (where(z >= 0, 1.0, exp(-abs(z))) / (1.0 + exp(-abs(z))) - t)",
                         signature=[("z", np.float64), ("t", np.float64), ("g", np.float64)])
    for n in (1_000, 100_000, 1_000_000):
        rng = np.random.default_rng(0)
        z, t, g = rng.standard_normal(n), rng.random(n), np.float64(1.0 / n)
        e, s, d = np.empty(n), np.empty(n), np.empty(n)

        def unfused():
            e_ = np.exp(-np.abs(z))
            return g * (np.where(z >= 0, 1.0, e_) / (1.0 + e_) - t)

        def buffers():
            np.abs(z, out=e)
            np.negative(e, out=e)
            np.exp(e, out=e)
            np.add(e, 1.0, out=d)
            np.copyto(s, e)
            s[z >= 0] = 1.0
            np.divide(s, d, out=s)
            np.subtract(s, t, out=s)
            np.multiply(s, g, out=s)
            return s

        def ne1():
            numexpr.set_num_threads(1)
            return ex(z, t, g)

        def ne_all():
            numexpr.set_num_threads(os.cpu_count() or 1)
            return ex(z, t, g)

        want = unfused()
        for f in (buffers, ne1, ne_all):
            assert np.allclose(f(), want, rtol=1e-12, atol=1e-18)
        tm = interleaved({"u": unfused, "b": buffers, "1": ne1, "a": ne_all}, args.repeats,
                         max(1, 100_000 // n))
        print(f"| {n:,} | {fmt(tm['u'])} | {fmt(tm['b'])} ({tm['b'] / tm['u']:.2f}×) | "
              f"{fmt(tm['1'])} ({tm['1'] / tm['u']:.2f}×) | {fmt(tm['a'])} ({tm['a'] / tm['u']:.2f}×) |")


if __name__ == "__main__":
    main()
