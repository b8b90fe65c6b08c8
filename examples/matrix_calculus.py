"""The lecture notes' matrix-calculus exercises, worked in flowgrad.

Each exercise writes f as on paper, asks flowgrad for the gradient (and Hessian, where
the exercise asks for one) and prints it beside the closed form with the largest
difference. The script exits non-zero if any difference exceeds 1e-8.

    python examples/matrix_calculus.py            # every exercise
    python examples/matrix_calculus.py --quiet    # the summary table only
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg

TOL = 1e-8
rng = np.random.default_rng(0)
n = 3
A = rng.standard_normal((n, n))
S = A + A.T                                   # a symmetric matrix
B = rng.standard_normal((n, n))
b = rng.standard_normal(n)
a = rng.standard_normal(n)
x0 = rng.standard_normal(n) * 0.5
X0 = n * np.eye(n) + rng.standard_normal((n, n))    # invertible, det > 0
SPD = A @ A.T + n * np.eye(n)                       # symmetric positive definite
I = np.eye(n)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def derivatives(f_of, at, hessian=False):
    """flowgrad's gradient (and Hessian) of ``f_of(node)`` at the array ``at``."""
    with fg.Graph():
        x = fg.placeholder("x", shape=np.shape(at))
        f = f_of(x)
        outs = [fg.grad(f, x)] + ([fg.hessian(f, x)] if hessian else [])
        return fg.compile(outs)(x=at)


# Each exercise: (number, statement, f over a node, point, closed-form gradient,
#                 closed-form Hessian or None)

def ex3():
    return ("3", "f(x) = ½xᵀAx + bᵀx", lambda x: 0.5 * (x @ (A @ x)) + fg.dot(b, x), x0,
            0.5 * (A + A.T) @ x0 + b, 0.5 * (A + A.T))


def ex4():
    e = np.exp(-x0 @ x0)
    return ("4", "f(x) = −exp(−xᵀx)", lambda x: -fg.exp(-(x @ x)), x0,
            2 * x0 * e, 2 * e * (I - 2 * np.outer(x0, x0)))


def ex5():
    return ("5", "f(x) = ½‖Ax − b‖²", lambda x: 0.5 * fg.norm(A @ x - b) ** 2, x0,
            A.T @ (A @ x0 - b), A.T @ A)


def ex7():
    r = np.linalg.norm(A @ x0)
    return ("7", "f(x) = ‖Ax‖₂", lambda x: fg.norm(A @ x), x0, A.T @ A @ x0 / r, None)


def ex8():
    s = 1 + x0 @ x0
    return ("8", "f(x) = −1/(1 + xᵀx)", lambda x: -1 / (1 + x @ x), x0,
            2 * x0 / s ** 2, 2 * I / s ** 2 - 8 * np.outer(x0, x0) / s ** 3)


def ex9():
    q = x0 @ SPD @ x0
    return ("9", "f(x) = log(xᵀAx), A ≻ 0", lambda x: fg.log(x @ (SPD @ x)), x0,
            2 * SPD @ x0 / q, None)


def ex10():
    return ("10", "f(X) = det X", fg.det, X0, np.linalg.det(X0) * np.linalg.inv(X0).T, None)


def ex11():
    Xi = np.linalg.inv(X0)
    # d²: −tr(X⁻¹ dX X⁻¹ dX), i.e. H[i, j, k, l] = −(X⁻¹)_jk (X⁻¹)_li
    return ("11", "f(X) = log det X", fg.logdet, X0, Xi.T, -np.einsum("jk,li->ijkl", Xi, Xi))


def ex12():
    M, c = rng.standard_normal((4, n)), rng.standard_normal(4)
    p = np.exp(M @ x0 + c)
    p /= p.sum()
    return ("12", "f(x) = log Σ exp(aᵢᵀx + bᵢ)", lambda x: fg.logsumexp(M @ x + c), x0,
            M.T @ p, M.T @ (np.diag(p) - np.outer(p, p)) @ M)


def ex15():
    return ("15", "f(X) = ‖X‖²_F", lambda X: fg.norm(X, "fro") ** 2, X0, 2 * X0, None)


def ex17():
    return ("17", "f(X) = tr AX", lambda X: fg.trace(A @ X), X0, A.T, None)


def ex18():
    return ("18", "f(X) = ⟨S, X⟩ − log det X", lambda X: fg.sum(S * X) - fg.logdet(X), X0,
            S - np.linalg.inv(X0).T, None)


def ex20():
    s = sigmoid(a @ x0)
    return ("20", "f(x) = ln(1 + exp⟨a, x⟩)", lambda x: fg.softplus(fg.dot(a, x)), x0,
            s * a, s * (1 - s) * np.outer(a, a))


def ex21():
    r = np.linalg.norm(x0)
    return ("21", "f(x) = ⅓‖x‖³", lambda x: fg.norm(x) ** 3 / 3, x0,
            r * x0, r * I + np.outer(x0, x0) / r)


def ex22():
    Bm = rng.standard_normal((n, n))
    R = A @ X0 - Bm
    return ("22", "f(X) = ‖AX − B‖_F", lambda X: fg.norm(A @ X - Bm, "fro"), X0,
            A.T @ R / np.linalg.norm(R), None)


def ex24():
    t = x0 @ x0
    f = t ** t
    grad = 2 * f * (np.log(t) + 1) * x0
    hess = 2 * f * (np.log(t) + 1) * I + 4 * f * ((np.log(t) + 1) ** 2 + 1 / t) * \
        np.outer(x0, x0)
    return ("24", "f(x) = ⟨x, x⟩^⟨x, x⟩", lambda x: (x @ x) ** (x @ x), x0, grad, hess)


def ex25():
    r2 = x0 @ x0
    f = x0 @ S @ x0 / r2
    return ("25", "f(x) = ⟨Ax, x⟩ / ‖x‖²", lambda x: (x @ (S @ x)) / (x @ x), x0,
            2 * (S @ x0 - f * x0) / r2, None)


def ex26():
    r2 = x0 @ x0
    return ("26", "f(x) = ½‖A − xxᵀ‖²_F", lambda x: 0.5 * fg.norm(S - fg.outer(x, x)) ** 2, x0,
            2 * (r2 * x0 - S @ x0), 2 * (r2 * I + 2 * np.outer(x0, x0) - S))


def ex27():
    return ("27", "f(x) = ‖xxᵀ‖₂", lambda x: fg.norm(fg.outer(x, x), 2), x0, 2 * x0, 2 * I)


def ex29():
    Xi = np.linalg.inv(X0)
    return ("29", "f(X) = tr X⁻¹", lambda X: fg.trace(fg.inv(X)), X0, -(Xi @ Xi).T, None)


def ex30():
    t0 = 0.3
    M = A - t0 * I
    Mi = np.linalg.inv(M)
    d = np.linalg.det(M)
    return ("30", "f(t) = det(A − tI)", lambda t: fg.det(A - t * I), np.array(t0),
            -d * np.trace(Mi), d * (np.trace(Mi) ** 2 - np.trace(Mi @ Mi)))


def ex31():
    Xi = np.linalg.inv(X0)
    grad = A.T @ Xi @ B.T @ X0.T + X0.T @ A.T @ Xi @ B.T - Xi.T @ A @ X0 @ X0 @ B @ Xi.T
    return ("31", "f(X) = tr(A X² B X⁻ᵀ)",
            lambda X: fg.trace(A @ X @ X @ B @ fg.inv(X).T), X0, grad, None)


EXERCISES = [ex3, ex4, ex5, ex7, ex8, ex9, ex10, ex11, ex12, ex15, ex17, ex18, ex20, ex21,
             ex22, ex24, ex25, ex26, ex27, ex29, ex30, ex31]


def work(exercise, quiet):
    number, statement, f_of, at, grad, hess = exercise()
    got = derivatives(f_of, at, hessian=hess is not None)
    diffs = [float(np.max(np.abs(got[0] - grad)))]
    if hess is not None:
        diffs.append(float(np.max(np.abs(got[1] - hess))))
    if not quiet:
        print(f"\nExercise {number}: {statement}")
        with np.printoptions(precision=6, suppress=True, linewidth=100):
            print("  flowgrad ∇f:\n" + _indent(got[0]) + "\n  closed form:\n" + _indent(grad))
            if hess is not None:
                print("  flowgrad ∇²f:\n" + _indent(got[1].reshape(np.size(at), -1)) +
                      "\n  closed form:\n" + _indent(np.reshape(hess, (np.size(at), -1))))
    return number, statement, diffs


def _indent(arr):
    return "\n".join("    " + line for line in str(np.asarray(arr)).splitlines())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print the summary table only")
    args = parser.parse_args(argv)
    rows = [work(ex, args.quiet) for ex in EXERCISES]
    print(f"\n{'exercise':>8}  {'function':<30} {'max |∇ diff|':>13} {'max |∇² diff|':>14}")
    worst = 0.0
    for number, statement, diffs in rows:
        hess = f"{diffs[1]:14.2e}" if len(diffs) > 1 else f"{'—':>14}"
        print(f"{number:>8}  {statement:<30} {diffs[0]:13.2e} {hess}")
        # a NaN difference must fail: max(0.0, nan) is 0.0, which passed a NaN Hessian
        worst = max(worst, *diffs) if np.isfinite(diffs).all() else float("inf")
    ok = worst <= TOL
    print(f"\nlargest difference {worst:.2e}: {'OK' if ok else 'FAILED'} (tolerance {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
