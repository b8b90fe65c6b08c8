"""An LSTM that tells a rising chirp from a falling one, trained with ``opt.fit``.

Each sequence is a noisy sine whose frequency drifts: up in half of them, down in the
others (label 1 and 0). The model reads the sequence one step at a time,

    x (batch, T, 1) → fg.nn.LSTM(16) → the last hidden state (batch, 16) → Dense(1) logit

and is trained with binary cross-entropy on logits. The LSTM is one ``fg.scan`` node, so
the sequence length is a run-time length: the same compiled program that trains on 30
steps is evaluated on 40. It prints the validation loss before and after training and
the accuracy on both lengths; it fails (exit status 1) if the model did not learn.
``--quick`` trains a few epochs on fewer sequences (a CI smoke test).

    python examples/lstm_sequence.py [--quick] [--epochs 20]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import flowgrad as fg

HIDDEN = 16


def chirps(n, length, rng, noise=0.1):
    """(x (n, length, 1), labels (n,)): sin of a phase whose frequency starts in
    [0.4, 0.6] rad/step and rises (label 1) or falls (label 0) by 0.25 every
    30 steps."""
    up = rng.integers(0, 2, size=n)
    w0 = rng.uniform(0.4, 0.6, size=n)[:, None]
    drift = np.where(up == 1, 1.0, -1.0)[:, None] * 0.25 / 30
    t = np.arange(length)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=n)[:, None] + w0 * t + 0.5 * drift * t ** 2
    x = np.sin(phase) + noise * rng.standard_normal(phase.shape)
    return x[:, :, None], up.astype(np.float64)


def build(seed=0):
    """Placeholders, the model, and the loss and accuracy nodes fit needs."""
    x = fg.placeholder("x", (None, None, 1))          # (batch, time, features)
    label = fg.placeholder("label", (None,))
    model = fg.nn.Sequential([fg.nn.LSTM(HIDDEN, seed=seed), fg.nn.Dense(1, seed=seed)])
    logit = fg.reshape(model(x), (-1,))
    loss = fg.bce_with_logits(logit, label).named("loss")
    acc = fg.mean(fg.astype(fg.equal(logit > 0, label > 0.5), "float64")).named("accuracy")
    return x, label, model, loss, acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    epochs, n_train = (6, 384) if args.quick else (args.epochs, 2048)
    rng = np.random.default_rng(0)
    X, y = chirps(n_train, 30, rng)
    X_val, y_val = chirps(256, 30, rng)
    X_long, y_long = chirps(256, 40, rng)          # longer: the drift goes on
    with fg.Graph():
        x, label, model, loss, acc = build()
        evaluate = fg.compile([loss, acc])
        before = float(evaluate(x=X_val, label=y_val)[0])
        print(f"validation loss before training: {before:.4f}")
        opt = fg.optim.Adam(model.variables, lr=0.01)
        history = opt.fit(loss, data={x: X, label: y}, epochs=epochs, batch_size=32,
                          val={x: X_val, label: y_val}, metrics={"acc": acc}, seed=0,
                          verbose=False)
        after, val_acc = (float(v) for v in evaluate(x=X_val, label=y_val))
        long_acc = float(evaluate(x=X_long, label=y_long)[1])
        print(history)
        print(f"validation loss after {epochs} epochs: {after:.4f}")
        print(f"validation accuracy (30 steps): {val_acc:.3f}")
        print(f"accuracy on sequences of 40 steps, same program: {long_acc:.3f}")
    ok = after < 0.5 * before and val_acc >= 0.9
    print("OK" if ok else "FAILED (the LSTM did not learn the task)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
