"""Core benchmarks (issue 2): flowgrad against hand-written numpy, in the same process.

1. Gradient of the batch logistic regression loss (mean BCE from logits + λ·½‖w‖²),
   n=100,000, d=100, float64.
2. Gradient of the lecture notes' scalar univariate example.
3. The plan's overhead per executed node on that scalar example.

    .venv/bin/python benchmarks/bench_core.py [--repeats 30]

Ratios are medians of interleaved runs, so both sides see the same machine state.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flowgrad as fg
from reference import logistic_loss_and_gradient


def median_time(fn, repeats, inner=1):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times))


def interleaved(fa, fb, repeats, inner=1):
    """Median times of fa and fb measured alternately."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(median_time(fa, 1, inner))
        tb.append(median_time(fb, 1, inner))
    return float(np.median(ta)), float(np.median(tb))


def batch_logistic(repeats, n=100_000, d=100):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    T = (rng.random(n) < 0.5).astype(np.float64)
    W, B, lam = rng.standard_normal(d) * 0.1, 0.1, 1e-3
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(W, name="w")
        b = fg.variable(B, name="b")
        loss = fg.bce_with_logits(fg.linear(x, w, b), t) + lam * fg.l2(w)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])

    def hand():
        return logistic_loss_and_gradient(np, X, T, W, B, lam)

    def flow():
        return prog(x=X, t=T)

    got, want = flow(), hand()
    assert all(np.allclose(a, b, rtol=1e-10) for a, b in zip(got, want))
    tf, th = interleaved(flow, hand, repeats)
    return tf, th, prog.n_steps


def scalar_seed(repeats, lam=0.1):
    w0, b0, x0, t0 = 0.8, -0.3, 1.5, 1.0
    with fg.Graph():
        x = fg.placeholder("x")
        t = fg.placeholder("t")
        w = fg.variable(w0, name="w")
        b = fg.variable(b0, name="b")
        y = fg.sigmoid(w * x + b)
        loss = 0.5 * (y - t) ** 2 + lam * (0.5 * w ** 2)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    X, T = np.float64(x0), np.float64(t0)
    Wv, Bv = np.float64(w0), np.float64(b0)

    def hand():
        z = Wv * X + Bv
        y = 1.0 / (1.0 + np.exp(-z))
        loss = 0.5 * (y - T) ** 2 + lam * 0.5 * Wv ** 2
        zbar = (y - T) * y * (1.0 - y)
        return loss, zbar * X + lam * Wv, zbar

    # the plan alone, without feed checking: the per-node cost of the hot loop
    from flowgrad.engine import Plan
    from flowgrad.engine.executors import INTERPRETER
    bound = prog.bind((), {"x": X, "t": T})
    run = INTERPRETER.build(prog.plan, prog.backend)

    def plan_only():
        run(list(bound))

    def flow():
        return prog(x=X, t=T)

    got, want = flow(), hand()
    assert all(np.allclose(a, b, rtol=1e-12) for a, b in zip(got, want))
    inner = 200
    tf, th = interleaved(flow, hand, repeats, inner)
    tp = median_time(plan_only, repeats, inner)

    # The loop's own cost: the same plan with every kernel swapped for a no-op.
    def noop(*values):
        return None
    p = prog.plan
    steps = p.made_steps()
    noop_plan = Plan(p.leaves, p.consts, steps, p.outputs, p.slots, p.graph)
    noop_plan._kernels[id(np)] = [noop] * len(steps)     # (the plan's kernel cache)
    run = INTERPRETER.build(noop_plan, prog.backend)
    t_dispatch = median_time(plan_only, repeats, inner)
    return tf, th, tp, t_dispatch, prog.n_steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    tf, th, steps = batch_logistic(args.repeats)
    print("| benchmark | flowgrad | hand-written numpy | ratio |")
    print("|---|---|---|---|")
    print(f"| batch logistic gradient, n=100,000, d=100, float64 ({steps} plan steps) "
          f"| {tf * 1e3:.2f} ms | {th * 1e3:.2f} ms | {tf / th:.2f}× |")
    tf, th, tp, td, steps = scalar_seed(args.repeats)
    print(f"| seed's univariate example, gradient ({steps} plan steps) "
          f"| {tf * 1e6:.1f} µs | {th * 1e6:.1f} µs | {tf / th:.2f}× |")
    print()
    print(f"scalar example, per executed node: dispatch {td / steps * 1e9:.0f} ns "
          f"(the plan loop with no-op kernels); plan with numpy kernels "
          f"{tp / steps * 1e9:.0f} ns; whole call incl. feed checks {tf / steps * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
