"""The lecture notes' exercise 2: gradient descent for linear regression, analytic vs automatic.

The lecture notes fit f(x) = w·x to y = 2x by gradient descent on the mean squared error
J(w) = mean((w·x − y)²), with a hand-written gradient. Here the same loop runs twice
for each data size n in np.logspace(1, 4) (50 sizes, n = 10 … 10 000, x evenly
spaced in [1, 4] as the lecture notes' X = [1, 2, 3, 4]):

- analytic: numpy, dJ/dw = mean(2x·(w·x − y)) = np.dot(2*x, y_pred − y) / n
- flowgrad: the same loss as a graph, its gradient by reverse mode, fg.optim.SGD

until J < 1e-9, and the wall time of each is measured over ≥ 3 runs (the median is
kept). Both loops take the very same iterations (checked), so the ratio of times is
the price of automatic differentiation's per-step overhead. The program is compiled
once, outside the timing: its placeholders have length None, so one serves every n.

A correction to the lecture notes: its gradient, ``np.dot(2*x, y_pred - y).mean()``, takes the
mean of a scalar — a no-op — so it is the gradient of the *sum* of squares, n times the
gradient of the mean its comment states. With the lecture notes' learning rate 0.01 that sum
gradient already diverges at n = 15 here (once 0.01·2·Σx² > 2). We use the mean's
gradient, and the script prints the two side by side.

    python examples/linear_regression_timing.py [--quick] [--runs 3] [--plot PATH]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import flowgrad as fg

TOL = 1e-9
LR = 0.01  # the lecture notes' learning rate
MAX_ITERS = 100_000


def data(n):
    x = np.linspace(1.0, 4.0, n)
    return x, 2.0 * x


def seed_gradient(x, y, y_pred):
    """The lecture notes' formula, verbatim: the gradient of Σ(w·x − y)², not of the mean."""
    return np.dot(2 * x, y_pred - y).mean()


def gradient(x, y, y_pred):
    """dJ/dw for J = mean((w·x − y)²): mean(2x(w·x − y))."""
    return np.dot(2 * x, y_pred - y) / len(x)


def fit_analytic(x, y, lr=LR, grad=gradient):
    """The lecture notes' loop with the hand-written gradient: predict, loss, gradient, update,
    until the loss (before its update) is below TOL. Returns (w, iterations)."""
    w = 0.0
    for k in range(1, MAX_ITERS + 1):
        y_pred = w * x
        loss = ((y_pred - y) ** 2).mean()
        w -= lr * grad(x, y, y_pred)
        if loss < TOL or not np.isfinite(loss):
            return w, k
    raise RuntimeError("analytic gradient descent did not converge")


def build():
    """The flowgrad model: placeholders of any length, one variable, loss and its gradient,
    compiled once."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        y = fg.placeholder("y", shape=(None,))
        w = fg.variable(0.0, name="w")
        loss = fg.mse(w * x, y)
        opt = fg.optim.SGD([w], lr=LR)
        prog = fg.compile([loss, *fg.grad(loss, [w])])
    return w, opt, prog


def fit_flowgrad(model, x, y):
    """The same loop with flowgrad: ``opt.step`` computes loss and gradient, updates w
    and returns the loss before its update. Returns (w, iterations)."""
    w, opt, prog = model
    w.value = 0.0
    for k in range(1, MAX_ITERS + 1):
        if opt.step(prog, x=x, y=y) < TOL:
            return float(fg.to_numpy(w.value)), k
    raise RuntimeError("flowgrad gradient descent did not converge")


def time_both(model, n, runs):
    """Median wall times (s) of both fits over ``runs`` interleaved runs, and the
    iteration count; checks that both loops agree."""
    x, y = data(n)
    t_an, t_fg = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        w_an, k_an = fit_analytic(x, y)
        t1 = time.perf_counter()
        w_fg, k_fg = fit_flowgrad(model, x, y)
        t2 = time.perf_counter()
        t_an.append(t1 - t0)
        t_fg.append(t2 - t1)
    if k_an != k_fg or abs(w_an - w_fg) > 1e-12:
        raise AssertionError(f"n={n}: analytic ({w_an}, {k_an} its) and flowgrad "
                             f"({w_fg}, {k_fg} its) disagree")
    return float(np.median(t_an)), float(np.median(t_fg)), k_an


def check_gradients(model):
    """flowgrad's gradient against the corrected formula, and the lecture notes' formula beside
    it, on the lecture notes' own data X = [1, 2, 3, 4]. Returns the largest flowgrad error."""
    w, opt, prog = model
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = 2 * x
    worst = 0.0
    print("Gradients at the lecture notes' data X = [1, 2, 3, 4], Y = 2X:")
    print(f"  {'w':>5} {'flowgrad':>12} {'mean formula':>13} {'seed formula':>13}")
    for w0 in (0.0, 1.0, 2.5):
        w.value = w0
        _, g = prog(x=x, y=y)
        mean_g, seed_g = gradient(x, y, w0 * x), seed_gradient(x, y, w0 * x)
        worst = max(worst, abs(float(fg.to_numpy(g)) - mean_g))
        print(f"  {w0:5.1f} {float(fg.to_numpy(g)):12.6f} {mean_g:13.6f} {seed_g:13.6f}")
    print(f"  flowgrad vs the mean's gradient: largest difference {worst:.1e}; the lecture notes' "
          f"formula is n = {len(x)} times larger:\n  np.dot(2*x, y_pred - y).mean() is the "
          "gradient of the SUM of squares (.mean() of a scalar does nothing).")
    # When does the lecture notes' sum-gradient make lr = 0.01 diverge on this data?
    n_bad = next(n for n in range(2, 10_000) if LR * 2 * np.sum(data(n)[0] ** 2) > 2)
    with np.errstate(over="ignore", invalid="ignore"):
        w_bad, _ = fit_analytic(*data(100), grad=seed_gradient)
    print(f"  With lr = {LR}, descent along the lecture notes' gradient diverges for n ≥ {n_bad} "
          f"here (at n = 100 w reaches {w_bad:.1e}); the mean's gradient converges for all n.")
    return worst


def plot(path, ns, t_an, t_fg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns, t_an, t_fg = map(np.asarray, (ns, t_an, t_fg))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.loglog(ns, 1e3 * t_an, "o-", ms=3, label="analytic gradient (numpy)")
    ax1.loglog(ns, 1e3 * t_fg, "s-", ms=3, label="flowgrad (reverse mode + SGD)")
    ax1.set_xlabel("n (data points)")
    ax1.set_ylabel(f"time to reach J < {TOL:g} (ms)")
    ax1.set_title("Gradient descent for linear regression")
    ax1.legend()
    ax2.semilogx(ns, t_fg / t_an, "o-", ms=3, color="C2")
    ax2.set_xlabel("n (data points)")
    ax2.set_ylabel("time ratio flowgrad / analytic")
    ax2.set_ylim(bottom=0)
    ax2.set_title("Price of automatic differentiation")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sizes instead of 50")
    parser.add_argument("--runs", type=int, default=5, help="runs per size (≥ 3; default 5)")
    parser.add_argument("--plot", default="out/linear_regression_timing.png", metavar="PATH",
                        help="where to draw time vs n (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="draw nothing")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("the exercise asks for at least 3 runs per size")

    model = build()
    worst = check_gradients(model)
    ns = np.unique(np.logspace(1, 4, 4 if args.quick else 50).round().astype(int))
    print(f"\nTime to reach J < {TOL:g} from w = 0 (lr = {LR}), median of {args.runs} runs:")
    print(f"  {'n':>6} {'iters':>6} {'analytic ms':>12} {'flowgrad ms':>12} {'ratio':>7}")
    t_an, t_fg = [], []
    for n in ns:
        a, f, iters = time_both(model, int(n), args.runs)
        t_an.append(a)
        t_fg.append(f)
        print(f"  {n:6d} {iters:6d} {1e3 * a:12.3f} {1e3 * f:12.3f} {f / a:7.2f}")
    ratios = np.array(t_fg) / np.array(t_an)
    print(f"  ratio flowgrad/analytic: {ratios[0]:.1f} at n = {ns[0]}, "
          f"{ratios[-1]:.1f} at n = {ns[-1]} (median {np.median(ratios):.1f})")
    if not args.no_plot:
        plot(args.plot, ns, t_an, t_fg)
        print(f"  plot: {args.plot}")
    ok = worst < 1e-12
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
