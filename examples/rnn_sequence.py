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
same RNN unrolled step by step in flowgrad, draws the training loss with ``--plot PATH``,
and with ``--draw PATH`` draws the model (one box, ``scan × T``) and, next to it, a run of
3 steps unrolled — the textbook BPTT picture, one copy of the cell per step with that
step's values and adjoints (``PATH``'s stem + ``_unrolled``) — and its walkthrough, the
forward pass and backpropagation through time one step per frame (``_walkthrough.html``).
It exits with status 1 when a check fails (the gradients differ by more than 1e-12, or
the test loss ends above 0.01 or above a tenth of where it started).

    python examples/rnn_sequence.py [--quick] [--steps 400] [--draw rnn.gv] [--plot loss.png]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import flowgrad as fg

HIDDEN = 16
# the checks (the script exits 1 when one fails): the scan's gradient and the drawn
# iterations agree with the unrolled RNN / a numpy loop to GRAD_TOL, and training takes
# the test loss below LOSS_TARGET and below a tenth of where it started
GRAD_TOL, LOSS_TARGET = 1e-12, 0.01


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


def draw_unrolled(loss, params, path):
    """A 3-step run of one sequence drawn unrolled, and its walkthrough, next to
    ``path``; returns the largest difference between the drawn h_t and a numpy loop."""
    seq = noisy_sine(1, 3, np.random.default_rng(2))
    tr = fg.compile(loss).trace(xs=seq[:-1], target=seq[1:])
    stem, ext = os.path.splitext(path)
    fg.viz.draw(tr, unroll=True).save(f"{stem}_unrolled{ext}")
    written = [f"{stem}_unrolled{ext}"]
    if fg.viz.dot_available():       # a walkthrough is laid out by Graphviz's dot
        fg.viz.walkthrough(tr, f"{stem}_walkthrough.html",
                           title="Backpropagation through time, step by step")
        written.append(f"{stem}_walkthrough.html")
    print("drew a 3-step run unrolled to " + " and ".join(written))
    W, U, b = (p.value for p in params[:3])
    h, drawn = np.zeros((1, HIDDEN)), fg.viz.unroll(tr)
    loop = next(n for n in tr.nodes if n.op is not None and n.op.name == "loop")
    out = loop.attrs["spec"].bodies[0].outs[0].id
    worst = 0.0
    for x, copy in zip(seq[:-1], drawn.iterations[loop.id]):
        h = np.tanh(h @ W + x @ U + b)
        worst = max(worst, float(np.max(np.abs(drawn[copy[out]] - h))))
    return worst


def plot_losses(path, losses):
    """The training loss per Adam step (matplotlib, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.semilogy(np.arange(1, len(losses) + 1), losses, lw=1)
    ax.axhline(0.0025, color="gray", ls="--", lw=1, label="the targets' noise")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("training loss (mean squared error)")
    ax.set_title("Elman RNN on a noisy sine, trained by BPTT through one scan node")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps (400)")
    parser.add_argument("--draw", metavar="PATH", help="draw the model to this file (and a "
                        "3-step unroll and its walkthrough next to it)")
    parser.add_argument("--plot", metavar="PATH", help="draw the training loss to this PNG")
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
        before = float(evaluate(feed_test))
        print(f"test loss before training: {before:.5f}")
        scan_vs_unrolled = check_against_unrolled(params, noisy_sine(4, 12, rng))
        print(f"largest difference scan vs unrolled gradient: {scan_vs_unrolled:.3g}")
        train = fg.optim.Adam(params, lr=0.02).minimize(loss)
        losses = []
        for k in range(steps):
            seq = noisy_sine(32, 40, rng)
            losses.append(float(train(xs=seq[:-1], target=seq[1:])))
        after = float(evaluate(feed_test))
        print(f"test loss after {steps} steps: {after:.5f} (the targets' noise alone: 0.0025)")
        # written so that a NaN anywhere fails
        ok = scan_vs_unrolled <= GRAD_TOL and after < LOSS_TARGET and after < 0.1 * before
        if args.draw:
            fg.viz.draw(loss).save(args.draw)
            print(f"drew the model to {args.draw}")
            drawn = draw_unrolled(loss, params, args.draw)
            print(f"largest difference drawn h_t vs a numpy loop: {drawn:.3g}")
            ok = ok and drawn <= GRAD_TOL
        if args.plot:
            plot_losses(args.plot, losses)
            print(f"drew the training loss to {args.plot}")
    print("OK" if ok else f"FAILED (gradients to {GRAD_TOL:g}; test loss below "
                          f"{LOSS_TARGET:g} and a tenth of its start)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
