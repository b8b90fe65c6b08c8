"""Logistic regression in flowgrad, from the seed's worked example to a real data set.

(a) The seed's univariate logistic least squares example: one forward and one backward
    pass, printing each adjoint v̄ beside the seed's hand formula.
(b) Batch logistic regression on scikit-learn's breast-cancer data (shipped inside the
    package, standardized), checked against finite differences first, then trained by
    gradient descent; prints loss and accuracy.

    python examples/logistic_regression.py [--backend numpy|cupy|dask] [--quick]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg


def seed_example(w0=0.8, b0=-0.3, x0=1.5, t0=1.0, lam=0.1):
    """The seed's forward and backward pass; returns {symbol: (flowgrad, hand formula)}."""
    with fg.Graph():
        x = fg.placeholder("x")
        t = fg.placeholder("t")
        w = fg.variable(w0, name="w")
        b = fg.variable(b0, name="b")
        z = (w * x + b).named("z")
        y = fg.sigmoid(z).named("y")
        L = (0.5 * (y - t) ** 2).named("L")
        R = (0.5 * w ** 2).named("R")
        total = (L + lam * R).named("loss")
        tr = fg.compile(total).trace(x=x0, t=t0)

        # The seed's backward pass, by hand.
        z_v = w0 * x0 + b0
        y_v = 1 / (1 + np.exp(-z_v))
        Lbar = 1.0
        Rbar = lam
        ybar = Lbar * (y_v - t0)
        zbar = ybar * y_v * (1 - y_v)
        hand = {"L̄": Lbar, "R̄": Rbar, "ȳ": ybar, "z̄": zbar,
                "w̄": zbar * x0 + Rbar * w0, "b̄": zbar, "x̄": zbar * w0}
        nodes = {"L̄": L, "R̄": R, "ȳ": y, "z̄": z, "w̄": w, "b̄": b, "x̄": x}
        return {k: (float(fg.to_numpy(tr.adjoint(n))), hand[k]) for k, n in nodes.items()}


def load_breast_cancer():
    from sklearn.datasets import load_breast_cancer as load
    X, y = load(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y.astype(np.float64)


def build_model(d, lam):
    """Mean binary cross-entropy from logits plus λ·½‖w‖²: the regularized objective."""
    x = fg.placeholder("x", shape=(None, d))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(d), name="w")
    b = fg.variable(0.0, name="b")
    logits = fg.linear(x, w, b).named("logits")
    loss = (fg.bce_with_logits(logits, t) + lam * fg.l2(w)).named("loss")
    return x, t, w, b, logits, loss


def train(X, T, *, backend="numpy", epochs=300, lr=0.5, lam=1e-3, verbose=True):
    """Full-batch gradient descent; returns (final loss, accuracy, loss history)."""
    with fg.Graph():
        x, t, w, b, logits, loss = build_model(X.shape[1], lam)
        # Check the gradient before training, on a few rows, as autograd's example does.
        w.value = np.random.default_rng(0).normal(scale=0.1, size=X.shape[1])
        fg.check_grads(loss, [w, b], feed={x: X[:8], t: T[:8]}, order=1)
        w.value = np.zeros(X.shape[1])

        opt = fg.optim.SGD([w, b], lr=lr)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])], backend=backend)
        history = []
        for _ in fg.progress(range(epochs), desc="training", disable=not verbose or None):
            history.append(float(fg.to_numpy(opt.step(prog, x=X, t=T))))
        scores = fg.to_numpy(fg.run(logits, {x: X}, backend=backend))
        accuracy = float(np.mean((scores > 0) == (T > 0.5)))
        return history[-1], accuracy, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy (default), cupy or dask")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    args = parser.parse_args(argv)

    print("(a) The seed's univariate example: adjoints v̄ = ∂𝓛/∂v")
    print(f"    {'':3} {'flowgrad':>14} {'hand formula':>14}")
    worst = 0.0
    for sym, (auto, hand) in seed_example().items():
        worst = max(worst, abs(auto - hand))
        print(f"    {sym:3} {auto:14.10f} {hand:14.10f}")
    print(f"    largest difference: {worst:.1e}")

    print("\n(b) Batch logistic regression on the breast-cancer data "
          f"(backend: {args.backend})")
    X, T = load_breast_cancer()
    epochs = 60 if args.quick else 300
    loss, acc, history = train(X, T, backend=args.backend, epochs=epochs)
    print(f"    loss {history[0]:.4f} -> {loss:.4f} in {epochs} epochs; "
          f"training accuracy {acc:.3f}")
    ok = worst < 1e-12 and history[-1] < history[0] and acc >= 0.95
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
