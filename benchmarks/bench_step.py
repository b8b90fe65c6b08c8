"""What ``Optimizer.step`` costs beyond the program it runs (issue 12, linear regression).

    .venv/bin/python benchmarks/bench_step.py [--repeats 41] [--n 10,100,1000,10000]

Per n (rows of X, d = 5), interleaved rounds, medians: the program alone
(``prog(x=X, y=Y)``: loss and both gradients), ``fg.optim.SGD.step`` and
``fg.optim.Adam.step`` on it (also with ``check_finite=True``, what ``fit``'s TerminateOnNaN
turns on: one fused finiteness check of the loss and gradients before the commit), and the
hand-written numpy SGD iteration. "step − program" is the optimizer's own share: the
binding look-up, the lock, the updates and the commit.
"""
from __future__ import annotations

import argparse

import numpy as np

import flowgrad as fg

import bench_peers  # the shared timer (this folder is on sys.path when run as a script)


def workload(n, d=5, lr=0.01):
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal(n)
    fns = {}
    checked = lambda cls: lambda v, lr: cls(v, lr=lr, check_finite=True)  # noqa: E731
    for name, make in (("program alone", None), ("SGD step", fg.optim.SGD),
                       ("Adam step", fg.optim.Adam),
                       ("SGD step, checked", checked(fg.optim.SGD)),
                       ("Adam step, checked", checked(fg.optim.Adam))):
        with fg.Graph():
            x = fg.placeholder("x", shape=(None, d))
            y = fg.placeholder("y", shape=(None,))
            w = fg.variable(np.zeros(d), name="w")
            b = fg.variable(0.0, name="b")
            loss = fg.mse(fg.linear(x, w, b), y)
            prog = fg.compile([loss, *fg.grad(loss, [w, b])])
        if make is None:
            fns[name] = lambda prog=prog: prog(x=X, y=Y)
        else:
            opt = make([w, b], lr=lr)
            fns[name] = lambda opt=opt, prog=prog: opt.step(prog, x=X, y=Y)
    hand = {"w": np.zeros(d), "b": 0.0}

    def hand_sgd():
        r = X @ hand["w"] + hand["b"] - Y
        loss_ = r @ r / n
        hand["w"] = hand["w"] - lr * ((2.0 / n) * (X.T @ r))
        hand["b"] = hand["b"] - lr * (2.0 * r.mean())
        return loss_
    fns["hand numpy SGD"] = hand_sgd
    return fns


def interleaved(fns, repeats, inner):
    """bench_peers' interleaved medians, after one warm-up call of each."""
    for f in fns.values():
        f()
    return bench_peers.interleaved(fns, repeats, inner)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--n", default="10,100,1000,10000")
    args = ap.parse_args()
    cols = ["program alone", "SGD step", "Adam step", "SGD step, checked",
            "Adam step, checked", "hand numpy SGD"]
    print("| n | " + " | ".join(cols) + " | SGD step − program | Adam step − program "
          "| check_finite's cost (SGD) |")
    print("|" + "---|" * (len(cols) + 4))
    for n in (int(s) for s in args.n.split(",")):
        t = interleaved(workload(n), args.repeats, max(20, 20_000 // n))
        us = {k: v * 1e6 for k, v in t.items()}
        print(f"| {n} | " + " | ".join(f"{us[c]:.1f} µs" for c in cols)
              + f" | {us['SGD step'] - us['program alone']:.1f} µs"
              + f" | {us['Adam step'] - us['program alone']:.1f} µs"
              + f" | {us['SGD step, checked'] - us['SGD step']:.1f} µs |")


if __name__ == "__main__":
    main()
