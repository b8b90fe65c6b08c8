"""A small multilayer perceptron on scikit-learn's digits (8×8 images, 10 classes).

    64 pixels → 64 ReLU units → 10 logits,   loss = softmax cross-entropy + λ·½‖W‖²

trained with Adam on shuffled mini-batches (fg.batches), with a progress bar showing
the epoch's loss and the test accuracy (fg.progress), and saved to / restored from
an .npz checkpoint (fg.save_variables / fg.load_variables). The run must reach at
least 95 % accuracy on the held-out quarter of the data (exit status 0).

    python examples/mlp_digits.py [--backend numpy|cupy] [--epochs 30] [--quick]
                                  [--save model.npz]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

import flowgrad as fg


def load_digits(seed=0):
    """(X_train, y_train, X_test, y_test): pixels scaled to [0, 1], a stratified 3:1 split."""
    from sklearn.datasets import load_digits as load
    from sklearn.model_selection import train_test_split
    X, y = load(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=seed)


def build_mlp(n_in, n_hidden, n_out, lam, seed=0):
    """The graph: placeholders x (pixels) and t (one-hot targets), the variables of
    two layers (He initialisation), the logits and the regularized loss."""
    rng = np.random.default_rng(seed)
    x = fg.placeholder("x", shape=(None, n_in))
    t = fg.placeholder("t", shape=(None, n_out))
    with fg.name_scope("hidden"):
        W1 = fg.variable(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_hidden)), name="W")
        b1 = fg.variable(np.zeros(n_hidden), name="b")
        h = fg.relu(fg.linear(x, W1, b1))
    with fg.name_scope("output"):
        W2 = fg.variable(rng.normal(0, np.sqrt(1 / n_hidden), (n_hidden, n_out)), name="W")
        b2 = fg.variable(np.zeros(n_out), name="b")
        logits = fg.linear(h, W2, b2).named("logits")
    loss = (fg.softmax_cross_entropy(logits, t) + lam * (fg.l2(W1) + fg.l2(W2))).named("loss")
    return x, t, [W1, b1, W2, b2], logits, loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy (default) or cupy")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--quick", action="store_true", help="10 epochs (smoke test)")
    parser.add_argument("--save", metavar="PATH", help="keep the trained weights here (.npz)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    epochs = 10 if args.quick else args.epochs

    X_train, X_test, y_train, y_test = load_digits()
    T_train = np.eye(10)[y_train]  # one-hot targets
    with fg.Graph() as graph:
        x, t, params, logits, loss = build_mlp(64, 64, 10, lam=1e-4)
        steps = epochs * -(-len(X_train) // args.batch_size)
        opt = fg.optim.Adam(params, lr=fg.optim.cosine_decay(args.lr, steps, final=args.lr / 10))
        train = opt.minimize(loss, backend=args.backend)
        predict = fg.compile(logits, backend=args.backend)

        def accuracy(X, y):
            return float(np.mean(np.argmax(fg.to_numpy(predict(x=X)), axis=1) == y))

        print(f"{len(X_train)} training and {len(X_test)} test images; "
              f"{sum(p.value.size for p in params)} parameters; Adam, {epochs} epochs")
        bar = fg.progress(range(epochs), desc="training", unit="epoch",
                          disable=True if args.quiet else None)
        for epoch in bar:
            losses = [train(**feed) for feed in fg.batches(
                x=X_train, t=T_train, batch_size=args.batch_size, seed=epoch)]
            epoch_loss = float(np.mean(fg.to_numpy(losses)))
            bar.update_metrics(loss=epoch_loss, test_acc=accuracy(X_test, y_test))
        bar.close()
        train_acc, test_acc = accuracy(X_train, y_train), accuracy(X_test, y_test)
        print(f"after {opt.iterations} steps: loss {epoch_loss:.4f}, "
              f"training accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")

        # Save, scramble, restore: the restored weights predict exactly as before.
        path = args.save or os.path.join(tempfile.mkdtemp(), "mlp_digits.npz")
        path = fg.save_variables(path, graph)
        for p in params:
            p.value = np.zeros(p.shape)
        fg.load_variables(path, graph)
        restored = accuracy(X_test, y_test)
        print(f"checkpoint {path}: {len(params)} arrays; restored test accuracy {restored:.4f}")
        if not args.save:
            os.remove(path)
            os.rmdir(os.path.dirname(path))

    target = 0.95
    ok = test_acc >= target and restored == test_acc
    print("OK" if ok else f"FAILED (test accuracy below {target})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
