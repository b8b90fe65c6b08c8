"""The lecture notes' exercise 1: the gradient of a Taylor series of cos(x), against −sin(x).

    cos x ≈ Σ_{k=0}^{K−1} (−1)ᵏ x²ᵏ / (2k)!

``taylor_cosine`` below is the lecture notes' function written with flowgrad ops: each term
is the previous one times −x²/((2k−1)·2k), so the graph holds K terms and no
factorials. In a define-and-run framework the number of terms is fixed when the
graph is built (autograd's version can stop "while |term| > tol" because it traces
values); K = 20 is ample for |x| ≤ 2π, where the first neglected term is below 1e-17.

The derivative comes from reverse mode: for x of shape (n,), each output depends
only on its own input, so fg.grad(sum(c), x) is the vector of derivatives c'(xᵢ).
It is checked against
- −sin x (the limit), and the exact derivative of the truncated series;
- the second derivative, grad of the gradient, against −cos x;
and a table shows how the error against −sin falls with the number of terms.

    python examples/taylor_cosine.py [--terms 20] [--quick] [--plot PATH]
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import flowgrad as fg


def taylor_cosine(x, terms=20):
    """Taylor approximation to the cosine function, as a graph: Σ (−1)ᵏ x²ᵏ/(2k)!."""
    ans = term = fg.ones_like(x)
    x2 = x * x
    for k in range(1, terms):
        term = term * (-x2 / ((2 * k - 1) * (2 * k)))
        ans = ans + term
    return ans


def truncated_derivative(x, terms):
    """The exact derivative of the K-term series: Σ_{k=1}^{K−1} (−1)ᵏ x²ᵏ⁻¹/(2k−1)!."""
    return sum((-1) ** k * x ** (2 * k - 1) / math.factorial(2 * k - 1) for k in range(1, terms))


def derivatives(xs, terms):
    """(c, c', c'') of the ``terms``-term series at ``xs``, by flowgrad."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        c = taylor_cosine(x, terms)
        dc = fg.grad(fg.sum(c), x)        # c'(xᵢ) for every i
        d2c = fg.grad(fg.sum(dc), x)      # c''(xᵢ): derivatives are nodes, so again
        return [fg.to_numpy(v) for v in fg.compile([c, dc, d2c])(x=xs)]


def plot(path, xs, dc, terms):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(xs, -np.sin(xs), lw=3, alpha=0.4, label="−sin x")
    ax1.plot(xs, dc, "--", label=f"flowgrad: d/dx of the {terms}-term series")
    ax1.set_xlabel("x")
    ax1.legend()
    ax2.semilogy(xs, np.maximum(np.abs(dc + np.sin(xs)), 1e-17))
    ax2.set_xlabel("x")
    ax2.set_ylabel("|c'(x) + sin x|")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=20, help="terms of the series (20)")
    parser.add_argument("--quick", action="store_true", help="a coarser grid (smoke test)")
    parser.add_argument("--plot", metavar="PATH", help="draw c'(x) and −sin x to this PNG")
    args = parser.parse_args(argv)

    xs = np.linspace(-2 * np.pi, 2 * np.pi, 41 if args.quick else 1001)
    c, dc, d2c = derivatives(xs, args.terms)
    err_cos = np.max(np.abs(c - np.cos(xs)))
    err_sin = np.max(np.abs(dc + np.sin(xs)))
    err_trunc = np.max(np.abs(dc - truncated_derivative(xs, args.terms)))
    err_2nd = np.max(np.abs(d2c + np.cos(xs)))
    print(f"{args.terms}-term Taylor series of cos on [−2π, 2π] ({len(xs)} points):")
    print(f"  max |c(x) − cos x|                    {err_cos:.1e}")
    print(f"  max |c'(x) + sin x|                   {err_sin:.1e}   (flowgrad reverse mode)")
    print(f"  max |c'(x) − exact series derivative| {err_trunc:.1e}")
    print(f"  max |c''(x) + cos x|                  {err_2nd:.1e}   (grad of the grad)")

    print("\nError of the gradient against −sin x, by number of terms:")
    print(f"  {'terms':>5} {'|x| ≤ π/2':>11} {'|x| ≤ π':>11} {'|x| ≤ 2π':>11}")
    for k in (2, 4, 6, 8, 10, 12, 15, 20):
        _, d, _ = derivatives(xs, k)
        e = np.abs(d + np.sin(xs))
        row = [np.max(e[np.abs(xs) <= r + 1e-12]) for r in (np.pi / 2, np.pi, 2 * np.pi)]
        print(f"  {k:5d} " + " ".join(f"{v:11.1e}" for v in row))

    if args.plot:
        plot(args.plot, xs, dc, args.terms)
        print(f"\nplot: {args.plot}")
    # The series' own derivative is reproduced to rounding; the limit −sin x to the
    # truncation error, which is below 1e-12 on [−2π, 2π] from 20 terms on.
    ok = err_trunc < 1e-12 and (args.terms < 20 or (err_sin < 1e-12 and err_2nd < 1e-11))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
