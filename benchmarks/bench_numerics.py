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
a plain call. Medians over ``--repeats`` measurements.

    .venv/bin/python benchmarks/bench_numerics.py [--repeats 7] [--profile-repeat 10]
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
    """The figures of one workload (seconds, ratios), medians over ``repeats``."""
    prog = fg.compile(outputs)
    interp = fg.compile(outputs, codegen=False)
    for _ in range(2):                  # first calls compile regions, warm caches
        prog(feed)
        interp(feed)
    plain = median_seconds(lambda: prog(feed), max(repeats, 15))
    plain_interp = median_seconds(lambda: interp(feed), max(repeats, 15))
    walls, ratios, per_call, overheads, top = [], [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = prog.profile(feed, repeat=profile_repeat)
        per_call.append((time.perf_counter() - t0) / (profile_repeat + 1))
        walls.append(p.wall)
        ratios.append(p.total / p.wall)
        overheads.append(p.overhead)
        top.append(p.rows[0].op)
    audit = median_seconds(lambda: fg.precision_audit(outputs, feed, dtype="float32"),
                           max(3, repeats // 2))
    return {"steps": len(prog.plan.made_steps()), "plain": plain, "interp": plain_interp,
            "wall": statistics.median(walls), "per_call": statistics.median(per_call),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "overhead": statistics.median(overheads),
            "top": max(set(top), key=top.count), "audit": audit}


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3g}"


def report(rows):
    print("| workload | plan steps | plain ms | interp. ms | profiled wall ms | "
          "profile() ms a call | × plain | × interp. | Σ nodes / wall (min–max) | "
          "timer cost a step | slowest op | audit ms | audit × plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['steps']} | {fmt_ms(r['plain'])} | {fmt_ms(r['interp'])} | "
              f"{fmt_ms(r['wall'])} | {fmt_ms(r['per_call'])} | "
              f"{r['wall'] / r['plain']:.2f} | {r['wall'] / r['interp']:.2f} | "
              f"{r['ratio']:.3f} ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | "
              f"{r['overhead'] * 1e9:.0f} ns | {r['top']} | {fmt_ms(r['audit'])} | "
              f"{r['audit'] / r['plain']:.1f} |")


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
