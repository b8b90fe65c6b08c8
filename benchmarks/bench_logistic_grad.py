"""The batch logistic *gradient alone* (no loss value asked for), n = 10⁵, d = 100, float64,
against hand-written numpy, in one process (issue 19: no value computed only for its shape).

Two ways users write the loss: ``mean(softplus(z) − t·z)`` and ``bce_with_logits(z, t)``,
z = x·w + b. The hand version computes r = (σ(z) − t)/n once (σ from exp(−|z|)) and the two
products Xᵀr and Σr. Ratios are medians of interleaved rounds (CPU time, which load on a
shared machine disturbs less than wall time).

    .venv/bin/python benchmarks/bench_logistic_grad.py [--repeats 25] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if "--threads" in sys.argv:   # before numpy is imported: BLAS reads it once
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]

import numpy as np  # noqa: E402

import flowgrad as fg  # noqa: E402


def hand_gradient(X, T, W, B):
    """∂/∂(w, b) of mean(softplus(z) − t·z): r = (σ(z) − t)/n, σ stably from exp(−|z|)."""
    z = X @ W + B
    e = np.exp(-np.abs(z))
    p = np.where(z >= 0, 1.0, e) / (1.0 + e)
    r = (p - T) / X.shape[0]
    return X.T @ r, r.sum()


def programs(d):
    out = {}
    for form in ("softplus(z) − t·z", "bce_with_logits"):
        with fg.Graph():
            x = fg.placeholder("x", shape=(None, d))
            t = fg.placeholder("t", shape=(None,))
            w, b = fg.variable(np.zeros(d), name="w"), fg.variable(0.0, name="b")
            z = x @ w + b
            loss = (fg.mean(fg.softplus(z) - t * z) if form.startswith("softplus")
                    else fg.bce_with_logits(z, t))
            prog = fg.compile(fg.grad(loss, [w, b]))
        out[form] = (prog, w, b)
    return out


def cpu_median(fns, repeats):
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.process_time()
            f()
            times[k].append(time.process_time() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", default=None)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    n, d = args.n, 100
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    T = (rng.random(n) < 0.5).astype(np.float64)
    W, B = rng.standard_normal(d) * 0.1, 0.1
    fns = {"hand numpy": lambda: hand_gradient(X, T, W, B)}
    want = hand_gradient(X, T, W, B)
    for form, (prog, w, b) in programs(d).items():
        w.value, b.value = W, B
        got = prog(x=X, t=T)
        assert all(np.allclose(g, h, rtol=1e-10, atol=1e-14) for g, h in zip(got, want)), form
        fns[f"flowgrad, {form}"] = (lambda p: lambda: p(x=X, t=T))(prog)
        print(f"{form}: {prog.n_steps} plan steps")
    times = cpu_median(fns, args.repeats)
    hand = times["hand numpy"]
    print("| peer | CPU median | ÷ hand numpy |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v * 1e3:.2f} ms | {v / hand:.2f}× |")


if __name__ == "__main__":
    main()
