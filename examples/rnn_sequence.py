"""An Elman RNN trained by backpropagation through time, with the recurrence as ONE node.

The task: read a noisy sine wave and predict its next value at every step. The cell

    h_{t+1} = tanh(h_t W + x_t U + b)        ŷ_t = h_{t+1} · v + c

is the step function of ``fg.scan``: traced once, so the graph holds one ``scan`` node
whatever the sequence length, and the sequence length is a run-time length (``None``):
one compiled program trains on windows of 40 steps and evaluates on 200. The gradient of
the mean squared error is a scan backwards through time over the cell's vjp (BPTT); the
weights W, U, b, v, c are read inside the step, so they become the loop's inputs and
their gradients are summed over the steps.

It prints the loss before and after training, checks the scan's gradient against the
same RNN unrolled step by step in flowgrad, and draws the model (one box, ``scan × T``)
with ``--draw PATH``.

    python examples/rnn_sequence.py [--quick] [--steps 400] [--draw rnn.svg]
"""
from __future__ import annotations

import argparse

import numpy as np

import flowgrad as fg

HIDDEN = 16


def noisy_sine(n_seq, length, rng, noise=0.05):
    """``n_seq`` windows of a noisy sine, shape (length + 1, n_seq, 1): time on axis 0."""
    t0 = rng.uniform(0, 2 * np.pi, size=n_seq)
    t = t0[None, :] + 0.3 * np.arange(length + 1)[:, None]
    return (np.sin(t) + noise * rng.normal(size=t.shape))[:, :, None]


def cell(params):
    W, U, b, v, c = params

    def step(h, x):
        h = fg.tanh(h @ W + x @ U + b)
        return h, h @ v + c
    return step


def model(params, xs, h0, unrolled_steps=None):
    """(predictions (T, batch, 1)), by fg.scan, or by a Python loop when asked."""
    step = cell(params)
    if unrolled_steps is None:
        _, ys = fg.scan(step, h0, xs)
        return ys
    h, ys = h0, []
    for t in range(unrolled_steps):
        h, y = step(h, xs[t])
        ys.append(y)
    return fg.stack(ys)


def init_params(rng):
    return [fg.variable(rng.normal(size=(HIDDEN, HIDDEN)) * 0.3, name="W"),
            fg.variable(rng.normal(size=(1, HIDDEN)) * 0.5, name="U"),
            fg.variable(np.zeros(HIDDEN), name="b"),
            fg.variable(rng.normal(size=(HIDDEN, 1)) * 0.3, name="v"),
            fg.variable(np.zeros(1), name="c")]


def check_against_unrolled(params, seq):
    """Largest difference between the scan's gradients and the unrolled RNN's."""
    T = seq.shape[0] - 1
    grads = []
    for unrolled in (None, T):
        xs = fg.placeholder(f"x_{unrolled}", (T, None, 1))
        target = fg.placeholder(f"y_{unrolled}", (T, None, 1))
        h0 = fg.zeros_like(xs[0] @ params[0][:1])
        loss = fg.mean((model(params, xs, h0, unrolled) - target) ** 2)
        grads.append(fg.compile(fg.grad(loss, params))({xs: seq[:-1], target: seq[1:]}))
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*grads))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps (400)")
    parser.add_argument("--draw", metavar="PATH", help="draw the model to this file")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else args.steps
    rng = np.random.default_rng(0)
    with fg.Graph():
        params = init_params(rng)
        xs = fg.placeholder("xs", (None, None, 1))      # (time, batch, 1): both run-time
        target = fg.placeholder("target", (None, None, 1))
        h0 = fg.zeros_like(xs[0] @ params[0][:1])       # (batch, HIDDEN) zeros
        loss = fg.mean((model(params, xs, h0) - target) ** 2)
        evaluate = fg.compile(loss)
        test = noisy_sine(16, 200, np.random.default_rng(1))
        feed_test = {"xs": test[:-1], "target": test[1:]}
        print(f"test loss before training: {float(evaluate(feed_test)):.5f}")
        print(f"largest difference scan vs unrolled gradient: "
              f"{check_against_unrolled(params, noisy_sine(4, 12, rng)):.3g}")
        train = fg.optim.Adam(params, lr=0.02).minimize(loss)
        for k in range(steps):
            seq = noisy_sine(32, 40, rng)
            train(xs=seq[:-1], target=seq[1:])
        after = float(evaluate(feed_test))
        print(f"test loss after {steps} steps: {after:.5f} (the targets' noise alone: 0.0025)")
        if args.draw:
            fg.viz.draw(loss).save(args.draw)
            print(f"drew the model to {args.draw}")
    print("OK")


if __name__ == "__main__":
    main()
