"""A scan RNN step (forward + gradient) against the same RNN unrolled in flowgrad and
hand-written numpy BPTT, in one process (issue 20).

    h_{t+1} = tanh(h_t W + x_t U),   loss = Σ_t sum(h_{t+1}²) / T

(``--loss both`` adds sum(h_T²): a loss reading both the scan's ys and its final carry,
whose gradient is one backward scan receiving both results' cotangents)

with H hidden units, batch B, inputs of width D. For each T it reports the compile time
(building the graph, its gradient and fg.compile), the first call (a scan compiles its
bodies' programs then) and the median run time of one forward + gradient call, for

- flowgrad ``fg.scan``: one node, whatever T;
- flowgrad unrolled: a Python loop building T copies of the cell;
- numpy: the forward loop keeping every h, then the backward loop by hand;
- the peers, where installed (benchmarks/scan_peers.py): ``jax.lax.scan`` under
  ``jax.jit`` (``jax.value_and_grad``), PyTensor ``scan`` (``pytensor.function``).

All three gradients are checked to agree (1e-10) before timing.

    python benchmarks/bench_scan.py [--T 100 1000] [--H 64] [--B 16] [--repeats 7] [--no-peers]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import flowgrad as fg

import scan_peers


def build(T, H, D, unrolled, both=False):
    """(program of [loss, dW, dU], seconds to build and compile); ``both``: the loss
    reads the final carry too."""
    t0 = time.perf_counter()
    with fg.Graph():
        W = fg.placeholder("W", (H, H))
        U = fg.placeholder("U", (D, H))
        xs = fg.placeholder("xs", (T if unrolled else None, None, D))
        h0 = fg.zeros_like(xs[0] @ U)

        def step(h, x):
            h = fg.tanh(h @ W + x @ U)
            return h, fg.sum(h * h)

        if unrolled:
            h, ys = h0, []
            for t in range(T):
                h, y = step(h, xs[t])
                ys.append(y)
            loss = fg.sum(fg.stack(ys)) / T
        else:
            h, ys = fg.scan(step, h0, xs)
            loss = fg.sum(ys) / T
        if both:
            loss = loss + fg.sum(h * h)
        prog = fg.compile([loss, *fg.grad(loss, [W, U])])
    return prog, time.perf_counter() - t0


def numpy_bptt(W, U, xs, both=False):
    """loss, dW, dU by hand: the forward keeps every h, the backward walks back
    (``both``: the loss adds sum(h_T²))."""
    T, B, _ = xs.shape
    hs = np.empty((T + 1, B, W.shape[0]))
    hs[0] = 0.0
    for t in range(T):
        hs[t + 1] = np.tanh(hs[t] @ W + xs[t] @ U)
    loss = np.sum(hs[1:] ** 2) / T
    dW, dU = np.zeros_like(W), np.zeros_like(U)
    dh = np.zeros_like(hs[0])
    if both:
        loss = loss + np.sum(hs[T] ** 2)
        dh = 2.0 * hs[T]
    for t in range(T - 1, -1, -1):
        dh = dh + 2.0 * hs[t + 1] / T
        da = dh * (1.0 - hs[t + 1] ** 2)
        dW += hs[t].T @ da
        dU += xs[t].T @ da
        dh = da @ W.T
    return loss, dW, dU


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--D", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-unrolled", action="store_true", help="skip the unrolled model")
    parser.add_argument("--no-peers", action="store_true", help="skip jax and PyTensor")
    parser.add_argument("--loss", choices=("ys", "both"), default="ys",
                        help="both: the loss reads the final carry too (flowgrad only)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    H, D, B = args.H, args.D, args.B
    W = rng.normal(size=(H, H)) / np.sqrt(H)
    U = rng.normal(size=(D, H)) / np.sqrt(D)
    print(f"H = {H}, B = {B}, D = {D}; forward + gradient of W and U; median of "
          f"{args.repeats} calls")
    print(f"{'T':>6} {'model':>10} {'compile s':>10} {'1st ms':>9} {'run ms':>9} "
          f"{'× numpy':>8}")
    for T in args.T:
        xs = rng.normal(size=(T, B, D))
        both = args.loss == "both"
        want = numpy_bptt(W, U, xs, both)
        t_np = median_time(lambda: numpy_bptt(W, U, xs, both), args.repeats)
        print(f"{T:6d} {'numpy':>10} {'':>10} {'':>9} {t_np * 1e3:9.2f} {1.0:8.2f}")
        for unrolled in ((False,) if args.no_unrolled else (False, True)):
            prog, t_build = build(T, H, D, unrolled, both)
            t0 = time.perf_counter()
            got = prog(W=W, U=U, xs=xs)      # (a scan compiles its bodies here)
            t_first = time.perf_counter() - t0
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
            t = median_time(lambda: prog(W=W, U=U, xs=xs), args.repeats)
            name = "unrolled" if unrolled else "fg.scan"
            print(f"{T:6d} {name:>10} {t_build:10.3f} {t_first * 1e3:9.1f} {t * 1e3:9.2f} "
                  f"{t / t_np:8.2f}")
        if not args.no_peers and not both:
            peers(T, H, D, (W, U, xs), want, t_np, args.repeats)


def peers(T, H, D, inputs, want, t_np, repeats):
    """One row per installed peer, checked against the hand gradient first."""
    for name, make in (("jax.scan", scan_peers.jax_scan), ("pytensor", scan_peers.pytensor_scan)):
        made = make(T, H, D)
        if made is None:
            print(f"{T:6d} {name:>10}   (not installed)")
            continue
        fn, t_build = made
        t0 = time.perf_counter()
        got = fn(*inputs)
        t_first = time.perf_counter() - t0
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-12)
        t = median_time(lambda: fn(*inputs), repeats)
        print(f"{T:6d} {name:>10} {t_build:10.3f} {t_first * 1e3:9.1f} {t * 1e3:9.2f} "
              f"{t / t_np:8.2f}")


if __name__ == "__main__":
    main()
