"""The 4th derivative of tanh by nesting fg.grad, against its closed form, on a grid.

Each fg.grad call differentiates the previous derivative *node*, so

    d = tanh(x);  d = grad(sum(d), x)  four times

is tanh⁗ at every entry of x (each output depends only on its own input, so the
gradient of the sum is the vector of derivatives). The closed form, with t = tanh x,
follows from tanh' = 1 − t²:

    tanh⁗ x = 16 t − 40 t³ + 24 t⁵ = 8 t (1 − t²)(2 − 3 t²)

The compiled program is simplified (CSE, folding, identities); the script prints the
node counts before and after, the largest error, and saves a plot.

    python examples/higher_order.py [--points 401] [--out out/tanh_4th.png]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import flowgrad as fg
from flowgrad.autodiff import ancestors


def closed_form(x):
    """tanh⁗ x = 8 t (1 − t²)(2 − 3t²), t = tanh x: with s = 1 − t², tanh' = s,
    tanh'' = −2ts, tanh''' = s(6t² − 2), tanh⁗ = 12ts² − 2ts(6t² − 2) = 8ts(2 − 3t²)."""
    t = np.tanh(x)
    s = 1 - t * t
    return 8 * t * s * (2 - 3 * t * t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=401, help="grid points on [-4, 4]")
    ap.add_argument("--order", type=int, default=4, help="which derivative (closed form: 4)")
    ap.add_argument("--out", default=os.path.join("out", "tanh_4th.png"), help="plot file")
    args = ap.parse_args(argv)

    grid = np.linspace(-4.0, 4.0, args.points)
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(args.points,))
        d = fg.tanh(x)
        for _ in range(args.order):
            d = fg.grad(fg.sum(d), x)
        prog = fg.compile(d)
        before = sum(1 for i in ancestors([d]) if g.node(i).kind == "op")
    values = prog(x=grid)
    print(f"derivative order {args.order}: {before} op nodes in the graph, "
          f"{prog.n_steps} plan steps after simplification")
    if args.order == 4:
        err = float(np.max(np.abs(values - closed_form(grid))))
        print(f"max |error| against the closed form: {err:.3e}")
        if not err < 1e-10:
            print("MISMATCH", file=sys.stderr)
            return 1

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, values, lw=2.5, label=f"flowgrad: grad nested {args.order}×")
    if args.order == 4:
        ax.plot(grid, closed_form(grid), "k--", lw=1, label="closed form 8t(1−t²)(2−3t²)")
    ax.plot(grid, np.tanh(grid), lw=1, alpha=0.6, label="tanh")
    ax.set_xlabel("x")
    ax.set_title(f"derivative {args.order} of tanh")
    ax.legend()
    ax.grid(alpha=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"plot saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
