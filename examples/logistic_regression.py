"""Logistic regression in flowgrad, from the lecture notes' worked example to a real data set.

(a) The lecture notes' univariate logistic least squares example: one forward and one backward
    pass, printing each adjoint v̄ beside the lecture notes' hand formula.
(b) Batch logistic regression on scikit-learn's breast-cancer data (shipped inside the
    package, standardized), checked against finite differences first, then trained with
    three optimizers — SGD, Adam and Nesterov momentum — on the regularized objective

        f(w, b) = mean_i BCE(x_i·w + b, t_i) + λ·½‖w‖²          (b not penalized)

    and compared with scikit-learn's LogisticRegression (L-BFGS, tight tolerance) on the
    same objective. sklearn minimizes C·Σ_i BCE_i + ½‖w‖², which is N·C times f when
    λ = 1/(N·C): same minimizer, so we set C = 1/(N·λ) and evaluate *our* loss graph at
    sklearn's (w, b) to compare the two minima. Nesterov momentum, tuned from the
    objective's curvature (lr = 1/L, momentum (√κ − 1)/(√κ + 1), κ = L/λ), must reach
    sklearn's loss to 1e-6 relative.
(c) The same model written with a layer, ``fg.nn.Dense(1)`` (zero initial weights), and
    trained with ``opt.fit`` (full batch, one step per epoch): its loss must follow the
    hand-built graph's step for step. Exit status 0 when every check passes.

    python examples/logistic_regression.py [--backend numpy|cupy|dask] [--quick]
                                           [--plot loss.png]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg


def seed_example(w0=0.8, b0=-0.3, x0=1.5, t0=1.0, lam=0.1):
    """The lecture notes' forward and backward pass; returns {symbol: (flowgrad, hand formula)}."""
    with fg.Graph():
        nodes = fg.worked_example.univariate_logistic(w0, b0, lam)
        tr = fg.compile(nodes["loss"]).trace(x=x0, t=t0)
    hand = fg.worked_example.hand_adjoints(w0, b0, x0, t0, lam)
    bar = "\u0304"  # combining macron: "w" -> "w̄"
    return {s + bar: (float(fg.to_numpy(tr.adjoint(nodes[s]))), hand[s])
            for s in ("L", "R", "y", "z", "w", "b", "x")}


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


def build_dense_model(d, lam):
    """The same objective with a ``fg.nn.Dense(1)`` layer in place of the hand-made w, b."""
    x = fg.placeholder("x", shape=(None, d))
    t = fg.placeholder("t", shape=(None,))
    layer = fg.nn.Dense(1, init="zeros", name="logistic")
    logits = layer(x)[:, 0].named("logits")          # (N, 1) → (N,): one logit per row
    loss = (fg.bce_with_logits(logits, t) + lam * fg.l2(layer.W)).named("loss")
    return x, t, layer, logits, loss


def train_dense(X, T, make_optimizer, *, backend="numpy", steps=2000, lam=1e-3):
    """Part (c): the Dense(1) model trained by opt.fit; returns its loss history."""
    with fg.Graph():
        x, t, layer, logits, loss = build_dense_model(X.shape[1], lam)
        opt = make_optimizer(layer.variables)
        history = opt.fit(loss, data={x: X, t: T}, epochs=steps, batch_size=None,
                          shuffle=False, backend=backend, verbose=False)
        return np.array(history["loss"])


def curvature(X, lam):
    """L, an upper bound of the Hessian's largest eigenvalue: ‖[X 1]‖₂²/(4N) + λ
    (σ' ≤ ¼), and κ = L/λ, the condition number the momentum is tuned for."""
    N = X.shape[0]
    L = np.linalg.norm(np.hstack([X, np.ones((N, 1))]), 2) ** 2 / (4 * N) + lam
    return L, L / lam


def optimizers(X, lam):
    """The three optimizers compared, by name (each a function of the variables)."""
    L, kappa = curvature(X, lam)
    beta = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    return {
        "SGD (lr 1/L)": lambda v: fg.optim.SGD(v, lr=1 / L),
        "Adam (lr 0.05)": lambda v: fg.optim.Adam(v, lr=0.05),
        f"Nesterov (lr 1/L, μ {beta:.3f})":
            lambda v: fg.optim.Momentum(v, lr=1 / L, momentum=beta, nesterov=True),
    }


def train(X, T, make_optimizer, *, backend="numpy", steps=2000, lam=1e-3, verbose=True,
          desc="training"):
    """Full-batch training from w = 0, b = 0; returns (history, accuracy, w, b, f_at)
    where ``f_at(w, b)`` evaluates the same loss graph at other coefficients."""
    with fg.Graph():
        x, t, w, b, logits, loss = build_model(X.shape[1], lam)
        # Check the gradient before training, on a few rows, as autograd's example does.
        w.value = np.random.default_rng(0).normal(scale=0.1, size=X.shape[1])
        fg.check_grads(loss, [w, b], feed={x: X[:8], t: T[:8]}, order=1)
        w.value = np.zeros(X.shape[1])

        train_step = make_optimizer([w, b]).minimize(loss, backend=backend)
        losses = []
        bar = fg.progress(range(steps), desc=desc, disable=not verbose or None, leave=False)
        for _ in bar:
            losses.append(train_step(x=X, t=T))
            bar.update_metrics(loss=losses[-1])
        history = np.array([float(v) for v in fg.to_numpy(losses)])
        scores = fg.to_numpy(fg.run(logits, {x: X}, backend=backend))
        accuracy = float(np.mean((scores > 0) == (T > 0.5)))
        w_v, b_v = fg.to_numpy(w.value), float(fg.to_numpy(b.value))

        def f_at(w_new, b_new):  # feeding a variable overrides its value for one run
            return float(fg.to_numpy(fg.run(loss, {x: X, t: T, w: w_new, b: b_new},
                                            backend=backend)))
        return history, accuracy, w_v, b_v, f_at


def sklearn_fit(X, T, lam):
    """scikit-learn's L-BFGS on the same objective: C = 1/(N·λ), tight tolerance."""
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=1 / (len(X) * lam), tol=1e-12, max_iter=10_000)
    clf.fit(X, T)
    return clf.coef_[0], float(clf.intercept_[0])


def plot_losses(path, curves, f_star):
    """The loss curves f_k − f* on a log scale (f* = the best loss found), to a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, history in curves.items():
        ax.semilogy(np.maximum(history - f_star, 1e-16), label=name)
    ax.axhline(1e-6 * f_star, color="gray", ls=":", label="1e-6 · f* (the target)")
    ax.set_xlabel("step (full batch)")
    ax.set_ylabel("f(w_k, b_k) − f*")
    ax.set_title("Regularized logistic regression, breast-cancer data")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy (default), cupy or dask")
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    parser.add_argument("--plot", metavar="PATH", help="draw the loss curves to this PNG")
    parser.add_argument("--lam", type=float, default=1e-3, help="λ of λ·½‖w‖² (1e-3)")
    args = parser.parse_args(argv)

    print("(a) The lecture notes' univariate example: adjoints v̄ = ∂𝓛/∂v")
    print(f"    {'':3} {'flowgrad':>14} {'hand formula':>14}")
    worst = 0.0
    for sym, (auto, hand) in seed_example().items():
        worst = max(worst, abs(auto - hand))
        print(f"    {sym:3} {auto:14.10f} {hand:14.10f}")
    print(f"    largest difference: {worst:.1e}")

    print("\n(b) Batch logistic regression on the breast-cancer data "
          f"(backend: {args.backend}, λ = {args.lam:g})")
    X, T = load_breast_cancer()
    steps = 600 if args.quick else 2000
    chosen = optimizers(X, args.lam)
    if args.quick:  # the smoke test: only the tuned run, which must match scikit-learn
        chosen = dict([list(chosen.items())[-1]])
    curves, results = {}, {}
    for name, make in chosen.items():
        history, acc, w_v, b_v, f_at = train(X, T, make, backend=args.backend, steps=steps,
                                             lam=args.lam, desc=name.split()[0])
        curves[name], results[name] = history, (acc, w_v, b_v)
    w_sk, b_sk = sklearn_fit(X, T, args.lam)
    f_sk = f_at(w_sk, b_sk)
    print(f"    scikit-learn L-BFGS (C = 1/(Nλ) = {1 / (len(X) * args.lam):.4f}): "
          f"f = {f_sk:.12f}")
    print(f"    {'optimizer':28} {'final f':>16} {'(f − f_sk)/f_sk':>16} {'accuracy':>9}")
    for name, history in curves.items():
        print(f"    {name:28} {history[-1]:16.12f} {(history[-1] - f_sk) / f_sk:16.1e} "
              f"{results[name][0]:9.3f}")
    best = list(curves)[-1]  # the tuned Nesterov run
    acc, w_v, b_v = results[best]
    f_best = f_at(w_v, b_v)  # the loss at the final weights (history ends one step before)
    rel = abs(f_best - f_sk) / f_sk
    dw = np.linalg.norm(w_v - w_sk) / np.linalg.norm(w_sk)
    print(f"    {best}: |f − f_sk|/f_sk = {rel:.1e} (target 1e-6), "
          f"‖w − w_sk‖/‖w_sk‖ = {dw:.1e}, |b − b_sk| = {abs(b_v - b_sk):.1e}")

    print("\n(c) The same model as a fg.nn.Dense(1) layer, trained with opt.fit")
    # dask computes each step's small graph eagerly: a shorter run shows the same agreement
    steps_c = steps if args.backend == "numpy" else min(steps, 100)
    dense = train_dense(X, T, chosen[best], backend=args.backend, steps=steps_c, lam=args.lam)
    hand = curves[best][:steps_c]
    dense_diff = float(np.max(np.abs(dense - hand) / hand))
    print(f"    {best}, {steps_c} steps: Dense(1) loss {dense[-1]:.12f}, hand-built "
          f"{hand[-1]:.12f}; largest relative difference over the run {dense_diff:.1e}")
    if args.plot:
        plot_losses(args.plot, curves, min(f_sk, f_best))
        print(f"    loss curves drawn to {args.plot}")
    ok = worst < 1e-12 and rel < 1e-6 and acc >= 0.95 and dense_diff < 1e-9
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
