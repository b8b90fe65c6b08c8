"""Pointwise regions (flowgrad/engine/regions.py): one numba loop per connected set of cheap
elementwise steps, against the same program's unfused numpy steps.

    .venv/bin/python benchmarks/bench_regions.py [--repeats 15]

1. the size threshold: a region of 2 and of 8 arithmetic steps at n = 16 … 10⁶ entries,
   against the same program compiled with regions off (numpy steps; numexpr chains from
   2¹⁹ entries), interleaved (the program's whole call, as a user sees it);
2. tanh's 4th derivative at n = 1000 … 10⁶: fused, unfused, hand-written numpy, PyTensor;
3. first-call latency in a fresh process: the first call (numpy steps), the second
   (numba's import and JIT, with an empty disk cache, then with the cache the first
   run left), the third.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import flowgrad as fg
from flowgrad.engine import codegen

sys.path.insert(0, os.path.dirname(__file__))
from bench_peers import fmt, interleaved, pytensor, pytensor_tanh_derivative  # noqa: E402


def _compile_both(build):
    with fg.Graph():
        outs, feed = build()
        fused = fg.compile(outs)
        codegen.REGIONS = False
        try:
            unfused = fg.compile(outs)
        finally:
            codegen.REGIONS = True
    fused(**feed)                              # the first call runs the numpy steps,
    a, b = fused(**feed), unfused(**feed)      # the second compiles the loop
    np.testing.assert_array_equal(a, b)
    return fused, unfused, feed


def threshold(repeats):
    print("### Region size threshold (whole program call, medians)\n")
    print("| n | plan steps | regions off | region loop | ratio |")
    print("|---|---|---|---|---|")
    for n in (16, 64, 256, 1000, 10_000, 100_000, 1_000_000):
        for steps in (2, 8):
            def build():
                x = fg.placeholder("x", shape=(n,))
                y = fg.placeholder("y", shape=(n,))
                z = x * y + 1.5
                for i in range(steps - 2):
                    z = z * x if i % 2 == 0 else z - y
                return z, {"x": np.linspace(-1, 1, n), "y": np.linspace(2, 3, n)}
            fused, unfused, feed = _compile_both(build)
            inner = max(3, 20_000 // n)
            t = interleaved({"u": lambda: unfused(**feed), "f": lambda: fused(**feed)},
                            repeats, inner)
            print(f"| {n:,} | {steps} | {fmt(t['u'])} | {fmt(t['f'])} | {t['f'] / t['u']:.2f}× |")
            sys.stdout.flush()


def tanh4(repeats):
    print("\n### 4th derivative of tanh (medians)\n")
    print("| n | hand numpy | PyTensor | flowgrad, regions off | flowgrad regions | "
          "÷ PyTensor | ÷ hand |")
    print("|---|---|---|---|---|---|---|")
    for n in (1000, 100_000, 1_000_000):
        xv = np.linspace(-2, 2, n)

        def build():
            x = fg.placeholder("x", shape=(n,))
            d = fg.tanh(x)
            for _ in range(4):
                d = fg.grad(fg.sum(d), x)
            return d, {"x": xv}
        fused, unfused, feed = _compile_both(build)

        def hand():
            t = np.tanh(xv)
            return 8.0 * t * (1.0 - t * t) * (2.0 - 3.0 * t * t)
        fns = {"hand": hand, "u": lambda: unfused(**feed), "f": lambda: fused(**feed)}
        if pytensor is not None:
            pf = pytensor_tanh_derivative(4)
            fns["pt"] = lambda: pf(xv)
        t = interleaved(fns, repeats, max(3, 20_000 // n))
        pt_t = t.get("pt")
        vs_pt = f"{t['f'] / pt_t:.2f}×" if pt_t else "—"
        print(f"| {n:,} | {fmt(t['hand'])} | {fmt(pt_t) if pt_t else '—'} | {fmt(t['u'])} | "
              f"{fmt(t['f'])} | {vs_pt} | {t['f'] / t['hand']:.2f}× |")
        sys.stdout.flush()


_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np, flowgrad as fg
t1 = time.perf_counter()


def build(order):
    with fg.Graph():
        x = fg.placeholder("x", shape=(1000,))
        d = fg.tanh(x)
        for _ in range(order):
            d = fg.grad(fg.sum(d), x)
        return fg.compile(d)


prog = build(4)
t2 = time.perf_counter()
calls = []
for _ in range(3):
    xv = np.linspace(-2, 2, 1000)
    a = time.perf_counter()
    prog(x=xv)
    calls.append(time.perf_counter() - a)
prog = build(3)                      # another structure: numba is loaded, one more JIT
prog(x=xv)
a = time.perf_counter()
prog(x=xv)
calls.append(time.perf_counter() - a)
print(t1 - t0, t2 - t1, *calls)
"""


def first_call():
    print("\n### First-call latency, tanh⁽⁴⁾ at 1000 points, fresh process each\n")
    print("The first call runs the numpy steps; the second compiles the loop (numba's "
          "import and start-up, then the JIT or the disk cache's load).\n")
    print("| disk cache | import flowgrad | grad + compile | 1st call | 2nd call | 3rd call | "
          "2nd call of tanh⁽³⁾ next |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, FLOWGRAD_CACHE_DIR=d)
        for label in ("empty", "warm (left by the run above)"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            print(f"| {label} | " + " | ".join(fmt(float(v)) for v in out) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    try:
        import numba
    except ImportError:
        print("numba is not installed (pip install -e .[fast]): no regions to measure")
        return
    print(f"numba {numba.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs\n")
    only = set(filter(None, args.only.split(",")))
    if not only or "threshold" in only:
        threshold(args.repeats)
    if not only or "tanh4" in only:
        tanh4(args.repeats)
    if not only or "first" in only:
        first_call()


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
