"""What issue 23's numerics tools cost: the profiler (``prog.profile``) and the float32
precision audit (``fg.precision_audit``), against a plain run of the same program.

Two workloads, each its value and gradients:

- **matmul**: a 3-layer tanh MLP, batch 512, widths 256 → 256 → 256 → 10, the loss
  sum(out²)/n and its gradients with respect to the three weights (matmul-heavy);
- **chain**: the 2000-step scalar chain y = sin(y)·1.0001 + 0.1·cos(y) of
  bench_peers.py, its value and dy/dx (many tiny steps: the profiler's worst case).

For each: the median plain call (generated code, the default, and the reference
interpreter, ``codegen=False``, which is the loop the profiler times); the profiled call
(``p.wall``, the mean over ``--profile-repeat`` calls of one ``prog.profile``, and the
whole ``prog.profile`` call's time over its calls, warm-up included); the per-node sum
over the wall (``p.total / p.wall``, issue 23 asks for it within 20 %); and the audit's
time (it rebuilds the graph in float32 and runs both precisions, compiles included) over
a plain call (and a plain ``fg.compile`` for scale). Each of ``--repeats`` rounds measures
everything back to back and takes its ratios within the round; the table gives medians
over the rounds. BLAS threads compete with the clock on a small loaded machine: run
with one (``OMP_NUM_THREADS=1``) for steadier figures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_numerics.py [--repeats 7] \
        [--profile-repeat 10]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

import flowgrad as fg


def matmul_workload(rng):
    """(outputs, feed, name): a 3-layer MLP's loss and its weights' gradients."""
    with fg.Graph():
        x = fg.placeholder("x", (512, 256))
        ws = [fg.placeholder(f"w{k}", shape) for k, shape in
              enumerate([(256, 256), (256, 256), (256, 10)])]
        h = x
        for w in ws[:-1]:
            h = fg.tanh(h @ w)
        out = h @ ws[-1]
        loss = fg.sum(out * out) / 512.0
        outputs = [loss, *fg.grad(loss, ws)]
    feed = {x: rng.standard_normal((512, 256))}
    feed.update({w: rng.standard_normal(w.shape) / 16.0 for w in ws})
    return outputs, feed, "matmul (MLP 512×256, 3 layers, + grads)"


def chain_workload(steps=2000):
    """(outputs, feed, name): the scalar chain's value and its derivative."""
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(steps):
            y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
        outputs = [y, fg.grad(y, x)]
    return outputs, {x: np.float64(0.4)}, f"chain ({steps} steps, + grad)"


def median_seconds(fn, repeats) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(outputs, feed, repeats, profile_repeat) -> dict:
    """The figures of one workload (seconds, ratios), medians over ``repeats`` rounds.
    Each round times the plain calls, a profile and an audit back to back, and its
    ratios are taken within the round: on a loaded machine the load moves between
    rounds, and a ratio of two medians from different minutes would carry it."""
    prog = fg.compile(outputs)
    interp = fg.compile(outputs, codegen=False)
    for _ in range(2):                  # first calls compile regions, warm caches
        prog(feed)
        interp(feed)
    got = {k: [] for k in ("plain", "interp", "wall", "per_call", "ratio", "overhead",
                           "top", "audit", "compile", "x_plain", "x_interp", "audit_x")}
    for _ in range(repeats):
        plain = median_seconds(lambda: prog(feed), 5)
        plain_interp = median_seconds(lambda: interp(feed), 5)
        t0 = time.perf_counter()
        p = prog.profile(feed, repeat=profile_repeat)
        t1 = time.perf_counter()
        fg.precision_audit(outputs, feed, dtype="float32")
        t2 = time.perf_counter()
        fg.compile(outputs)
        t3 = time.perf_counter()
        for key, v in (("plain", plain), ("interp", plain_interp), ("wall", p.wall),
                       ("per_call", (t1 - t0) / (profile_repeat + 1)),
                       ("ratio", p.total / p.wall), ("overhead", p.overhead),
                       ("top", p.rows[0].op), ("audit", t2 - t1), ("compile", t3 - t2),
                       ("x_plain", p.wall / plain), ("x_interp", p.wall / plain_interp),
                       ("audit_x", (t2 - t1) / plain)):
            got[key].append(v)
    out = {k: statistics.median(v) for k, v in got.items() if k != "top"}
    out.update(steps=len(prog.plan.made_steps()), ratio_min=min(got["ratio"]),
               ratio_max=max(got["ratio"]), top=max(set(got["top"]), key=got["top"].count))
    return out


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3g}"


def report(rows):
    print("| workload | plan steps | plain ms | interp. ms | profiled wall ms | "
          "profile() ms a call | wall × plain | wall × interp. | Σ nodes / wall (min–max) "
          "| timer cost a step | slowest op | audit ms | audit × plain | compile ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['steps']} | {fmt_ms(r['plain'])} | {fmt_ms(r['interp'])} | "
              f"{fmt_ms(r['wall'])} | {fmt_ms(r['per_call'])} | "
              f"{r['x_plain']:.2f} | {r['x_interp']:.2f} | "
              f"{r['ratio']:.3f} ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | "
              f"{r['overhead'] * 1e9:.0f} ns | {r['top']} | {fmt_ms(r['audit'])} | "
              f"{r['audit_x']:.1f} | {fmt_ms(r['compile'])} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--profile-repeat", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for outputs, feed, name in (matmul_workload(rng), chain_workload(args.steps)):
            rows.append((name, measure(outputs, feed, args.repeats, args.profile_repeat)))
    report(rows)


if __name__ == "__main__":
    main()
