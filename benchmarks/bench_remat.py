"""fg.remat's memory saving (issue 21): the peak memory of a deep tanh network's gradient
program, plain and with each segment of layers in ``fg.remat``.

    .venv/bin/python benchmarks/bench_remat.py [--layers 40] [--segment 8] \
        [--batch 1024] [--width 64]

The network is h_{k+1} = tanh(h_k W_k), loss = Σ h_L², and the program computes the
loss and its gradients with respect to every W_k. The peak is tracemalloc's over one
run of the compiled program, after warm-up runs (the first runs make generated code
and caches, which are not what is measured); the weights already exist before it
starts, so what it sees is the values the run allocates: activations kept for the
backward pass, temporaries, and the gradients returned. Wall time is the median of
interleaved runs. Both programs' results are checked equal (rtol 1e-12).
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import flowgrad as fg


def stack(h, *Ws):
    """Layers h ← tanh(h W) for each W."""
    for w in Ws:
        h = fg.tanh(h @ w)
    return h


def program(layers, segment, batch, width):
    rng = np.random.default_rng(0)
    with fg.Graph():
        x = fg.placeholder("x", shape=(batch, width))
        Ws = [fg.variable(rng.standard_normal((width, width)) / np.sqrt(width), name=f"W{k}")
              for k in range(layers)]
        h = x
        if segment:
            for k in range(0, layers, segment):
                h = fg.remat(stack)(h, *Ws[k:k + segment])
        else:
            h = stack(h, *Ws)
        loss = fg.sum(h * h)
        return fg.compile([loss, *fg.grad(loss, Ws)])


def measure(prog, X, repeats):
    for _ in range(3):
        prog(x=X)
    tracemalloc.start()
    try:
        out = prog(x=X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prog(x=X)
        times.append(time.perf_counter() - t0)
    return peak, float(np.median(times)), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--segment", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    X = np.random.default_rng(1).standard_normal((a.batch, a.width))
    rows = {}
    for name, seg in (("plain", 0), (f"remat per {a.segment} layers", a.segment)):
        rows[name] = measure(program(a.layers, seg, a.batch, a.width), X, a.repeats)
    (p0, t0, out0), (p1, t1, out1) = rows.values()
    for u, v in zip(out0, out1):
        np.testing.assert_allclose(v, u, rtol=1e-12)
    act = a.batch * a.width * 8 / 2 ** 20
    print(f"{a.layers}-layer tanh network, batch {a.batch}, width {a.width}, float64 "
          f"(one activation {act:.2f} MiB); results equal to rtol 1e-12")
    print(f"{'program':<22} {'peak (MiB)':>11} {'time (ms)':>10}")
    for name, (peak, t, _) in rows.items():
        print(f"{name:<22} {peak / 2 ** 20:11.2f} {t * 1e3:10.2f}")
    print(f"peak ratio remat/plain: {p1 / p0:.3f} (goal ≤ 0.5); time ratio {t1 / t0:.2f}")


if __name__ == "__main__":
    main()
