"""Seeing backprop: drawings with values and adjoints v̄, and step-by-step walkthroughs.

(a) The lecture notes' univariate logistic least squares example (z = wx + b, y = σ(z),
    L = ½(y − t)², R = ½w², 𝓛 = L + λR): its adjoints are checked against the lecture notes'
    hand formulas first, then drawn (forward graph with v̄ folded in, and with the
    backward graph), and walked through as HTML and as numbered SVG frames.
(b) A 2-layer MLP on a small batch, with name scopes: drawn with scopes open and
    collapsed, and walked through.
(c) A deep MLP of about 300 nodes drawn with its scopes collapsed (mlp_scopes.png).

    python examples/backprop_walkthrough.py [--out out/]

Prints the path of every file it writes. Needs Graphviz's `dot` (apt-get install graphviz).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import flowgrad as fg


def seed_example(w0=0.8, b0=-0.3, x0=1.5, t0=1.0, lam=0.1):
    """The lecture notes' graph, traced at one point, and the lecture notes' hand-computed adjoints."""
    with fg.Graph():
        nodes = fg.worked_example.univariate_logistic(w0, b0, lam, loss_name="𝓛")
        tr = fg.compile(nodes["loss"]).trace(x=x0, t=t0)
    hand = {nodes[s]: v for s, v in fg.worked_example.hand_adjoints(w0, b0, x0, t0, lam).items()}
    return tr, hand


def mlp_example(seed=0, batch=4, n_in=3, n_hidden=4):
    """A 2-layer tanh MLP with a squared-error loss and weight decay, traced on a batch."""
    rng = np.random.default_rng(seed)
    with fg.Graph():
        X = fg.placeholder("X", shape=(None, n_in))
        T = fg.placeholder("T", shape=(None,))
        with fg.name_scope("layer1"):
            W1 = fg.variable(rng.normal(0, 0.7, (n_in, n_hidden)), name="W1")
            b1 = fg.variable(np.zeros(n_hidden), name="b1")
            h = fg.tanh(X @ W1 + b1).named("h")
        with fg.name_scope("layer2"):
            w2 = fg.variable(rng.normal(0, 0.7, n_hidden), name="w2")
            b2 = fg.variable(0.0, name="b2")
            out = (h @ w2 + b2).named("out")
        with fg.name_scope("loss"):
            loss = (fg.mse(out, T) + 0.01 * (fg.l2(W1) + fg.l2(w2))).named("loss")
        return fg.compile(loss).trace(X=rng.normal(size=(batch, n_in)),
                                      T=rng.normal(size=batch))


def deep_mlp(n_blocks=16, width=8, batch=16, seed=0):
    """A deep MLP of ~300 nodes: blocks of dense → layer norm → tanh, each a nested scope."""
    rng = np.random.default_rng(seed)
    with fg.Graph():
        X = fg.placeholder("X", shape=(None, width))
        T = fg.placeholder("T", shape=(None, width))
        h = X
        with fg.name_scope("mlp"):
            for k in range(n_blocks):
                with fg.name_scope(f"block{k + 1}"):
                    with fg.name_scope("dense"):
                        W = fg.variable(rng.normal(0, width ** -0.5, (width, width)), name="W")
                        b = fg.variable(np.zeros(width), name="b")
                        a = h @ W + b
                    with fg.name_scope("norm"):
                        mu = fg.mean(a, axis=1, keepdims=True)
                        c = a - mu
                        var = fg.mean(c * c, axis=1, keepdims=True)
                        gamma = fg.variable(np.ones(width), name="gamma")
                        beta = fg.variable(np.zeros(width), name="beta")
                        a = gamma * c * (var + 1e-5) ** -0.5 + beta
                    with fg.name_scope("act"):
                        h = fg.tanh(a).named("h")  # the scope prefix is added
        with fg.name_scope("loss"):
            loss = fg.mse(h, T).named("loss")
        return fg.compile(loss).trace(X=rng.normal(size=(batch, width)),
                                      T=rng.normal(size=(batch, width)))


def draw_deep(tr):
    """The deep MLP with block1 open (its dense / norm / act scopes as nested clusters)
    and every other block collapsed into one box showing its output's numbers."""
    blocks = sorted({n.scope[:2] for n in tr.nodes if len(n.scope) >= 2})
    return fg.viz.draw(tr, collapse=["/".join(s) for s in blocks if s[1] != "block1"])


def check_seed(tr, hand):
    """Exit early, loudly, if the drawing would show numbers the lecture notes disagree with."""
    for node, value in hand.items():
        got = float(fg.to_numpy(tr.adjoint(node)))
        if not np.isclose(got, value, rtol=1e-12, atol=1e-15):
            raise SystemExit(f"adjoint of {node.name} is {got}, the lecture notes say {value}")
        print(f"  {node.name}: v̄ = {got:.6g}   (lecture notes' formula: {value:.6g})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out", help="folder for the drawings (default: out/)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    written = []

    tr, hand = seed_example()
    print("The lecture notes' worked example, 'Univariate logistic least squares regression':")
    check_seed(tr, hand)
    written.append(fg.viz.draw(tr, rankdir="LR").render(out("seed_graph"), format="svg"))
    written.append(fg.viz.draw(tr, backward=True, rankdir="LR").render(
        out("seed_backward_graph"), format="svg"))
    written.append(fg.viz.walkthrough(tr, out("seed_walkthrough.html")))
    frames = fg.viz.walkthrough(tr, out("seed_frames"))
    written.append(f"{os.path.dirname(frames[0])}{os.sep} ({len(frames)} numbered SVG frames)")

    tr = mlp_example()
    written.append(fg.viz.draw(tr).render(out("mlp_graph"), format="svg"))
    written.append(fg.viz.draw(tr, collapse=True, rankdir="LR").render(
        out("mlp_graph_collapsed"), format="svg"))
    written.append(fg.viz.walkthrough(tr, out("mlp_walkthrough.html")))

    tr = deep_mlp()
    print(f"Deep MLP: {len(tr.nodes)} nodes, drawn with all blocks but the first collapsed")
    written.append(draw_deep(tr).render(out("mlp_scopes"), format="png"))

    for path in written:
        print("wrote", path)


if __name__ == "__main__":
    main()
