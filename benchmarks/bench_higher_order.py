"""Higher-order benchmarks (issue 4), measured in one process:

1. hvp time / gradient time for the lecture notes' exercise 28,
   f(x) = 1/n Σ log(1+exp(aᵢᵀx)) + μ/2‖x‖², n=10,000, d=1,000, float64 (target ≤ 3),
   both flowgrad programs, plus the hand-written numpy gradient and hvp for reference.
2. jvp time / forward time for the same f (target ≤ 3), and the hand-written ratio.
3. Node counts of tanh's k-th derivative (k = 1…6) by nested fg.grad: op nodes in the
   graph (= plan steps without simplification) and plan steps with it.

    .venv/bin/python benchmarks/bench_higher_order.py [--repeats 15] [--n 10000] [--d 1000]

Ratios are medians of interleaved runs, so both sides see the same machine state.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flowgrad as fg
from flowgrad.engine import simplify
from flowgrad.autodiff import ancestors


def interleaved(fns, repeats):
    """Median seconds of each of ``fns``, run in turn ``repeats`` times (every side sees
    the same machine state), each called once first so first-call work is not measured."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def exercise_28(n, d, repeats, mu=0.1):
    rng = np.random.default_rng(0)
    A_val = rng.standard_normal((n, d)) / np.sqrt(d)
    x_val, v_val = rng.standard_normal(d), rng.standard_normal(d)
    with fg.Graph():
        A = fg.placeholder("A", shape=(n, d))
        x = fg.placeholder("x", shape=(d,))
        v = fg.placeholder("v", shape=(d,))
        f = fg.mean(fg.softplus(A @ x)) + mu / 2 * fg.sum(x * x)
        progs = {
            "forward": fg.compile(f),
            "jvp": fg.compile(fg.jvp(f, x, v)),
            "grad": fg.compile(fg.grad(f, x)),
            "hvp fwd-rev": fg.compile(fg.hvp(f, x, v)),
            "hvp rev-rev": fg.compile(fg.hvp(f, x, v, mode="rev-rev")),
        }
    feed = {"A": A_val, "x": x_val, "v": v_val}

    def sig(z):
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0, e) / (1.0 + e)

    def np_forward():
        z = A_val @ x_val
        return np.mean(np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) + mu / 2 * x_val @ x_val

    def np_grad():
        return A_val.T @ sig(A_val @ x_val) / n + mu * x_val

    def np_hvp():
        s = sig(A_val @ x_val)
        return A_val.T @ (s * (1 - s) * (A_val @ v_val)) / n + mu * v_val

    def np_jvp():
        z = A_val @ x_val
        return np.mean(sig(z) * (A_val @ v_val)) + mu * x_val @ v_val

    # correctness first
    np.testing.assert_allclose(progs["hvp fwd-rev"](feed), np_hvp(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(progs["hvp rev-rev"](feed), np_hvp(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(progs["jvp"](feed), np_jvp(), rtol=1e-10)
    names = list(progs) + ["np forward", "np jvp", "np grad", "np hvp"]
    fns = [lambda p=p: p(feed) for p in progs.values()] + [np_forward, np_jvp, np_grad, np_hvp]
    for fn in fns:
        fn()
    t = dict(zip(names, interleaved(fns, repeats)))
    steps = {k: p.n_steps for k, p in progs.items()}
    return t, steps


def tanh_counts(kmax=6):
    rows = []
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(8,))
        d = fg.tanh(x)
        for k in range(1, kmax + 1):
            d = fg.grad(fg.sum(d), x)
            ops = sum(1 for i in ancestors([d]) if g.node(i).kind == "op")
            with simplify.disabled():
                plain = fg.compile(d).n_steps
            t0 = time.perf_counter()
            simplified = fg.compile(d).n_steps
            rows.append((k, len(g), ops, plain, simplified, time.perf_counter() - t0))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=1_000)
    args = ap.parse_args()
    t, steps = exercise_28(args.n, args.d, args.repeats)
    ms = {k: v * 1e3 for k, v in t.items()}
    print(f"exercise 28, n={args.n}, d={args.d}, float64, median of {args.repeats} interleaved runs")
    print("| program | flowgrad | plan steps | hand-written numpy |")
    print("|---|---|---|---|")
    print(f"| forward f(x) | {ms['forward']:.2f} ms | {steps['forward']} | {ms['np forward']:.2f} ms |")
    print(f"| jvp ∇f(x)·v | {ms['jvp']:.2f} ms | {steps['jvp']} | {ms['np jvp']:.2f} ms |")
    print(f"| gradient ∇f(x) | {ms['grad']:.2f} ms | {steps['grad']} | {ms['np grad']:.2f} ms |")
    print(f"| hvp fwd-rev | {ms['hvp fwd-rev']:.2f} ms | {steps['hvp fwd-rev']} | {ms['np hvp']:.2f} ms |")
    print(f"| hvp rev-rev | {ms['hvp rev-rev']:.2f} ms | {steps['hvp rev-rev']} | |")
    print()
    print(f"hvp (fwd-rev) / gradient = {t['hvp fwd-rev'] / t['grad']:.2f}  (target ≤ 3; "
          f"hand-written {t['np hvp'] / t['np grad']:.2f})")
    print(f"hvp (rev-rev) / gradient = {t['hvp rev-rev'] / t['grad']:.2f}")
    print(f"jvp / forward = {t['jvp'] / t['forward']:.2f}  (target ≤ 3; "
          f"hand-written {t['np jvp'] / t['np forward']:.2f})")
    print()
    print("| k | graph nodes | op nodes (no simplification = plan steps) | plan steps, simplified "
          "| compile time |")
    print("|---|---|---|---|---|")
    for k, total, ops, plain, simplified, secs in tanh_counts():
        assert ops == plain
        print(f"| {k} | {total} | {plain} | {simplified} | {secs * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
