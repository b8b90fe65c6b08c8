"""Hessian-vector products for the lecture notes' exercise 28, against the analytic Hessian.

    f(x) = 1/n Σᵢ log(1 + exp(aᵢᵀx)) + μ/2 ‖x‖²

    ∇f(x)  = Aᵀ σ(Ax) / n + μ x
    ∇²f(x) = Aᵀ diag(σ(Ax) ⊙ (1 − σ(Ax))) A / n + μ I

``fg.hvp(f, x, v)`` builds H v as graph nodes without ever forming H: forward over
reverse (a jvp of the gradient node) by default, reverse over reverse (the gradient
of ⟨∇f, v⟩) on request. Both are compared with the analytic H v, ``fg.hessian`` with
the analytic H (small d only), and an hvp is timed against a gradient: the ratio
should be a small constant (≈ 2: two extra matrix-vector products).

    python examples/hessian_vector.py [--small] [--n 10000] [--d 1000] [--mu 0.1]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import flowgrad as fg


def analytic_hessian(A, x, mu):
    s = 1.0 / (1.0 + np.exp(-(A @ x)))
    return (A.T * (s * (1 - s))) @ A / len(A) + mu * np.eye(A.shape[1])


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="n=300, d=40 (a smoke test)")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--d", type=int, default=400)
    ap.add_argument("--mu", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    n, d = (300, 40) if args.small else (args.n, args.d)

    rng = np.random.default_rng(0)
    A_val = rng.standard_normal((n, d)) / np.sqrt(d)
    x_val = rng.standard_normal(d)
    v_val = rng.standard_normal(d)

    with fg.Graph():
        A = fg.placeholder("A", shape=(None, d))
        x = fg.placeholder("x", shape=(d,))
        v = fg.placeholder("v", shape=(d,))
        f = fg.mean(fg.softplus(A @ x)) + args.mu / 2 * fg.sum(x * x)
        grad_prog = fg.compile(fg.grad(f, x))
        hvp_prog = fg.compile(fg.hvp(f, x, v))
        hvp_rr_prog = fg.compile(fg.hvp(f, x, v, mode="rev-rev"))
        feed = {A: A_val, x: x_val, v: v_val}

        H = analytic_hessian(A_val, x_val, args.mu)
        expected = H @ v_val
        scale = np.max(np.abs(expected))
        err_fr = np.max(np.abs(hvp_prog(feed) - expected)) / scale
        err_rr = np.max(np.abs(hvp_rr_prog(feed) - expected)) / scale
        print(f"n={n}, d={d}: relative error of H v, forward-over-reverse {err_fr:.2e}, "
              f"reverse-over-reverse {err_rr:.2e}")
        ok = err_fr < 1e-10 and err_rr < 1e-10
        if d <= 200:
            H_fg = fg.run(fg.hessian(f, x), {A: A_val, x: x_val})
            err_h = np.max(np.abs(H_fg - H)) / np.max(np.abs(H))
            print(f"fg.hessian against the analytic Hessian: relative error {err_h:.2e}")
            ok = ok and err_h < 1e-10

        grad_prog(feed), hvp_prog(feed)  # warm up
        t_grad = median_time(lambda: grad_prog(feed), args.repeats)
        t_hvp = median_time(lambda: hvp_prog(feed), args.repeats)
        t_rr = median_time(lambda: hvp_rr_prog(feed), args.repeats)
        print(f"gradient {t_grad * 1e3:.3f} ms, hvp (fwd-rev) {t_hvp * 1e3:.3f} ms "
              f"= {t_hvp / t_grad:.2f}x gradient, hvp (rev-rev) {t_rr * 1e3:.3f} ms "
              f"= {t_rr / t_grad:.2f}x gradient")
    if not ok:
        print("MISMATCH against the analytic Hessian", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
