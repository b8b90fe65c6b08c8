"""√a by Newton's iteration in a ``fg.while_loop``, and its gradient by reverse mode.

    x₀ = a,   x_{k+1} = ½ (x_k + a / x_k)   while |x_k² − a| > 10⁻¹⁴ a

The number of iterations depends on ``a`` and is decided while the program runs, so the
loop cannot be unrolled into the graph: it is one ``while_loop`` node. Its gradient is
reverse mode through the loop: the forward pass keeps the iterates it computed, and the
vjp is a scan backwards over them through the step's own vjp. The derivative of the
converged iteration is the derivative of √a, 1/(2√a), which the script checks, together
with the second derivative −1/(4 a^{3/2}) (the gradient of the gradient, a loop again),
to relative errors of 1e-12 and 1e-10; it exits with status 1 when they are exceeded.

    python examples/newton_sqrt.py [--quick]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg

# the check: relative errors against the closed forms (the script exits 1 above them)
GRAD_TOL, SECOND_TOL = 1e-12, 1e-10


def newton_sqrt(a, tol=1e-14):
    return fg.while_loop(lambda x: fg.abs(x * x - a) > tol * a,
                         lambda x: 0.5 * (x + a / x), a, max_iters=200)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points (smoke test)")
    args = parser.parse_args(argv)
    values = np.array([0.25, 2.0, 10.0] if args.quick else [1e-3, 0.25, 2.0, 10.0, 1e4])
    with fg.Graph():
        a = fg.placeholder("a", ())
        root = newton_sqrt(a)
        d1 = fg.grad(root, a)
        d2 = fg.grad(d1, a)
        prog = fg.compile([root, d1, d2])
        print(f"{'a':>8} {'√a':>20} {'d√a/da':>20} {'rel err vs 1/(2√a)':>18} "
              f"{'|rel err| of d²':>16}")
        worst1 = worst2 = 0.0
        for v in values:
            r, g1, g2 = prog(a=v)
            err1 = abs(g1 - 1 / (2 * np.sqrt(v))) * 2 * np.sqrt(v)
            err2 = abs(g2 + 0.25 * v ** -1.5) / (0.25 * v ** -1.5)
            worst1, worst2 = max(worst1, err1), max(worst2, err2)
            print(f"{v:8.4g} {float(r):20.15g} {float(g1):20.15g} {err1:18.2e} {err2:16.2e}")
    print(f"largest relative error of the gradient: {worst1:.2e}")
    print(f"largest relative error of the second derivative: {worst2:.2e}")
    # not `<=` on the errors: a NaN error must fail the check
    ok = not (worst1 > GRAD_TOL or worst2 > SECOND_TOL or np.isnan(worst1 + worst2))
    print("OK" if ok else f"FAILED (tolerances {GRAD_TOL:g}, {SECOND_TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
