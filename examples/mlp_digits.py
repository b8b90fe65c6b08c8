"""A small multilayer perceptron on scikit-learn's digits (8×8 images, 10 classes).

    64 pixels → 128 ReLU units → dropout → 10 logits,
    loss = softmax cross-entropy + λ·½‖W‖²

built with fg.nn (an MLP of Dense layers, He initialisation, dropout switched by a
boolean placeholder), trained with ``opt.fit`` (Adam on shuffled mini-batches, a
progress bar, validation accuracy every epoch, early stopping that keeps the best
weights), summarised with fg.summary, its history plotted, and saved to / restored
from an .npz checkpoint. The run must reach at least 97 % accuracy on the held-out
(validation) quarter of the data (exit status 0).

    python examples/mlp_digits.py [--backend numpy|cupy] [--epochs 30] [--quick]
                                  [--save model.npz] [--plot history.png]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

import flowgrad as fg


def load_digits(seed=0):
    """(X_train, X_test, y_train, y_test): pixels scaled to [0, 1], a stratified 3:1 split."""
    from sklearn.datasets import load_digits as load
    from sklearn.model_selection import train_test_split
    X, y = load(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=seed)


def build(n_hidden=128, rate=0.2, lam=1e-4, seed=0):
    """Placeholders, the model, and the nodes fit needs: loss and accuracy."""
    fg.random.set_seed(seed)   # the initial weights and every dropout mask replay exactly
    x = fg.placeholder("x", shape=(None, 64))
    t = fg.placeholder("t", shape=(None,), dtype="int64")          # class indices
    training = fg.placeholder("training", shape=(), dtype="bool")  # dropout on or off
    model = fg.nn.MLP([n_hidden, 10], activation=fg.relu, dropout=rate, training=training)
    logits = model(x).named("logits")
    weights = [layer.W for layer in model.layers if isinstance(layer, fg.nn.Dense)]
    penalty = fg.l2(weights[0]) + fg.l2(weights[1])
    loss = (fg.softmax_cross_entropy(logits, t) + lam * penalty).named("loss")
    acc = fg.metrics.accuracy(logits, t).named("accuracy")
    return x, t, training, model, logits, loss, acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy (default) or cupy")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--quick", action="store_true", help="12 epochs (smoke test)")
    parser.add_argument("--save", metavar="PATH", help="keep the trained weights here (.npz)")
    parser.add_argument("--plot", metavar="PATH", default="mlp_digits_history.png",
                        help="where to draw the training history (PNG)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    epochs = 12 if args.quick else args.epochs

    X_train, X_test, y_train, y_test = load_digits()
    with fg.Graph() as graph:
        x, t, training, model, logits, loss, acc = build()
        print(fg.summary(loss))
        steps = epochs * -(-len(X_train) // args.batch_size)
        opt = fg.optim.Adam(model.variables,
                            lr=fg.optim.cosine_decay(args.lr, steps, final=args.lr / 10))
        print(f"{len(X_train)} training and {len(X_test)} validation images; Adam, {epochs} epochs")
        history = opt.fit(loss, data={x: X_train, t: y_train}, epochs=epochs,
                          batch_size=args.batch_size, val={x: X_test, t: y_test},
                          metrics={"acc": acc}, training=training, seed=0,
                          backend=args.backend, verbose=False if args.quiet else None,
                          callbacks=[fg.EarlyStopping("val_acc", patience=8)])
        print(history)
        evaluate = fg.compile([loss, acc], backend=args.backend)

        def accuracy(X, y):
            return float(fg.to_numpy(evaluate(x=X, t=y, training=False)[1]))

        train_acc, test_acc = accuracy(X_train, y_train), accuracy(X_test, y_test)
        best = history.best_epoch
        print(f"after {opt.iterations} steps (best epoch {best + 1 if best is not None else '-'}"
              f"): loss {history['loss'][-1]:.4f}, training accuracy {train_acc:.4f}, "
              f"validation accuracy {test_acc:.4f}")

        import matplotlib
        matplotlib.use("Agg")
        history.plot(args.plot)
        print(f"history drawn to {args.plot}")

        # Save, scramble, restore: the restored weights predict exactly as before.
        path = args.save or os.path.join(tempfile.mkdtemp(), "mlp_digits.npz")
        path = fg.save_variables(path, graph)
        for p in model.variables:
            p.value = np.zeros(p.shape)
        fg.load_variables(path, graph)
        restored = accuracy(X_test, y_test)
        print(f"checkpoint {path}: {len(model.variables)} arrays; "
              f"restored validation accuracy {restored:.4f}")
        if not args.save:
            os.remove(path)
            os.rmdir(os.path.dirname(path))

    target = 0.97
    ok = test_acc >= target and restored == test_acc
    print("OK" if ok else f"FAILED (validation accuracy below {target})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
