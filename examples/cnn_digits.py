"""A small convolutional network on scikit-learn's digits (8×8 images, NCHW, 10 classes).

    1×8×8 → Conv2D 16@3×3 same, ReLU → MaxPool 2 → Conv2D 32@3×3 same, ReLU → MaxPool 2
          → Flatten (32·2·2) → dropout → Dense 10 logits

built from fg.nn layers (kernels in PyTorch's (out, in, kh, kw) layout), trained with
``opt.fit`` (Adam, shuffled mini-batches, validation accuracy every epoch, early stopping
that keeps the best weights), summarised with fg.summary, and drawn with each layer
collapsed to one box. The run must reach at least 98 % accuracy on the held-out
(validation) quarter of the data (exit status 0); ``--quick`` trains fewer epochs as a
smoke test (CI) and asks for 95 %.

    python examples/cnn_digits.py [--epochs 40] [--quick] [--graph cnn_graph]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg


def load_digits(seed=0):
    """(X_train, X_test, y_train, y_test): images (N, 1, 8, 8) in [0, 1], a stratified
    3:1 split (the same split as mlp_digits.py)."""
    from sklearn.datasets import load_digits as load
    from sklearn.model_selection import train_test_split
    X, y = load(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8)
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)


def build(rate=0.25, seed=0):
    """Placeholders, the model, and the nodes fit needs: loss and accuracy."""
    fg.random.set_seed(seed)   # initial weights and dropout masks replay exactly
    x = fg.placeholder("x", shape=(None, 1, 8, 8))
    t = fg.placeholder("t", shape=(None,), dtype="int64")
    training = fg.placeholder("training", shape=(), dtype="bool")
    model = fg.nn.Sequential([
        fg.nn.Conv2D(16, 3, padding="same", activation="relu"),
        fg.nn.MaxPool2D(2),
        fg.nn.Conv2D(32, 3, padding="same", activation="relu"),
        fg.nn.MaxPool2D(2),
        fg.nn.Flatten(),
        fg.nn.Dropout(rate, training=training),
        fg.nn.Dense(10),
    ])
    logits = model(x).named("logits")
    loss = fg.softmax_cross_entropy(logits, t).named("loss")
    acc = fg.metrics.accuracy(logits, t).named("accuracy")
    return x, t, training, model, logits, loss, acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--quick", action="store_true", help="8 epochs (smoke test)")
    parser.add_argument("--graph", metavar="PATH", default="cnn_digits_graph",
                        help="where to draw the model, layers collapsed (PATH.svg)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    epochs = 8 if args.quick else args.epochs
    target = 0.95 if args.quick else 0.98

    X_train, X_test, y_train, y_test = load_digits()
    with fg.Graph():
        x, t, training, model, logits, loss, acc = build()
        print(fg.summary(loss))
        steps = epochs * -(-len(X_train) // args.batch_size)
        opt = fg.optim.Adam(model.variables,
                            lr=fg.optim.cosine_decay(args.lr, steps, final=args.lr / 10))
        print(f"{len(X_train)} training and {len(X_test)} validation images; Adam, "
              f"{epochs} epochs")
        history = opt.fit(loss, data={x: X_train, t: y_train}, epochs=epochs,
                          batch_size=args.batch_size, val={x: X_test, t: y_test},
                          metrics={"acc": acc}, training=training, seed=0,
                          verbose=False if args.quiet else None,
                          callbacks=[fg.EarlyStopping("val_acc", patience=10)])
        print(history)
        evaluate = fg.compile([loss, acc])
        test_acc = float(evaluate(x=X_test, t=y_test, training=False)[1])
        print(f"after {opt.iterations} steps: validation accuracy {test_acc:.4f}")

        # The model as the reader thinks of it: one box per layer, with its parameters.
        tr = fg.compile(loss).trace(x=X_test[:4], t=y_test[:4], training=False)
        drawing = fg.viz.draw(tr, collapse=True, rankdir="LR")
        try:
            print(f"graph drawn to {drawing.render(args.graph, format='svg', cleanup=True)}")
        except fg.viz.dot.GraphvizNotFoundError as e:   # no `dot` binary: say so, go on
            print(f"graph not drawn: {e}")

    ok = test_acc >= target and np.isfinite(history["loss"][-1])
    print("OK" if ok else f"FAILED (validation accuracy below {target})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
