"""Write the example notebooks (without outputs) from the cells below:

    python examples/make_notebooks.py

``worked_example.ipynb``: the lecture's univariate logistic example end to end — build the
graph, its values, the adjoints by hand beside flowgrad's, the drawing, the walkthrough
and the derivatives as formulas. ``logistic_regression.ipynb``: a logistic regression on
two clouds of points, trained with Adam, with a loss plot and the decision boundary.
tests/test_notebooks.py executes both and checks they match this script.
"""
from __future__ import annotations

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent

WORKED = [
    ("md", """# The worked example: backpropagation by hand and by flowgrad

Univariate logistic regression with a squared-error loss and a weight penalty:

$$z = w x + b,\\quad y = \\sigma(z),\\quad L = \\tfrac12 (y - t)^2,\\quad R = \\tfrac12 w^2,
\\quad \\mathcal{L} = L + \\lambda R$$

We build it as a flowgrad graph, run it at one point, and compare every adjoint
$\\bar v = \\partial \\mathcal{L} / \\partial v$ that flowgrad computes with the same
backward pass written out by hand."""),
    ("code", """import numpy as np
import flowgrad as fg

w0, b0, x0, t0, lam = 0.8, -0.3, 1.5, 1.0, 0.1

g = fg.Graph()
with g:
    x = fg.placeholder("x")                 # fed at run time
    t = fg.placeholder("t")
    w = fg.variable(w0, name="w")           # trainable
    b = fg.variable(b0, name="b")
    z = (w * x + b).named("z")
    y = fg.sigmoid(z).named("y")
    L = (0.5 * (y - t) ** 2).named("L")
    R = (0.5 * w ** 2).named("R")
    loss = (L + lam * R).named("loss")
print(len(g), "nodes:", ", ".join(n.name for n in g.nodes))"""),
    ("md", """## Forward pass: the values

A *trace* runs the program once and keeps the value of every node and its adjoint."""),
    ("code", """tr = fg.compile(loss).trace(x=x0, t=t0)
for node in [x, t, w, b, z, y, L, R, loss]:
    print(f"{node.name:>4} = {float(tr[node]): .6f}")"""),
    ("md", """## Backward pass by hand

Start from $\\bar{\\mathcal{L}} = 1$ and walk back, each adjoint the sum over the node's
children of (child's adjoint) × (local derivative):

$\\bar R = \\lambda$, $\\bar L = 1$, $\\bar y = \\bar L (y - t)$, $\\bar z = \\bar y\\,\\sigma(z)(1-\\sigma(z))$,
$\\bar w = \\bar z x + \\bar R w$, $\\bar b = \\bar z$, $\\bar x = \\bar z w$."""),
    ("code", """yv = 1 / (1 + np.exp(-(w0 * x0 + b0)))
by_hand = {"L": 1.0, "R": lam}
by_hand["y"] = by_hand["L"] * (yv - t0)
by_hand["z"] = by_hand["y"] * yv * (1 - yv)
by_hand["w"] = by_hand["z"] * x0 + by_hand["R"] * w0     # w has two children: two terms
by_hand["b"] = by_hand["z"]
by_hand["x"] = by_hand["z"] * w0

nodes = {"L": L, "R": R, "y": y, "z": z, "w": w, "b": b, "x": x}
print(f"{'':>3} {'by hand':>12} {'flowgrad':>12}")
for k, node in nodes.items():
    print(f"{k + '̄':>3} {by_hand[k]:12.6f} {float(tr.adjoint(node)):12.6f}")
    assert np.isclose(by_hand[k], tr.adjoint(node), rtol=1e-12)"""),
    ("md", """## The drawing

Every box shows a node's value and adjoint v̄; edges carry the local derivatives.
(Rendering needs Graphviz's `dot`; without it we print the start of the DOT source.)"""),
    ("code", """drawing = fg.viz.draw(tr, rankdir="LR", precision=4)
if fg.viz.dot_available():
    from IPython.display import SVG, display
    display(SVG(drawing.pipe(format="svg")))
else:
    print(drawing.source[:400])"""),
    ("md", """## The walkthrough

One frame per step: the forward pass, the seed $\\bar{\\mathcal{L}} = 1$, then each adjoint
with its numbers, at the level of the op nodes (`level="primitives"` steps through every
node). It plays here, and `.save("backprop.html")` writes it as a self-contained page."""),
    ("code", """if fg.viz.dot_available():
    wt = fg.viz.walkthrough(tr)
    wt.save("backprop.html")
    display(wt)"""),
    ("md", """## Derivatives as formulas

flowgrad can print what a gradient node computes (after the compiler's simplification),
with the names used above. A subexpression used more than once is bound in a *where*
clause. Compare with the hand derivation: $\\bar w = \\bar z x + \\lambda w$ with
$\\bar z = (y - t)\\,y(1 - y)$."""),
    ("code", """with g:
    gw, gb = fg.grad(loss, [w, b])
f = fg.viz.formula(gw, lhs="∂loss/∂w", symbols={"λ": lam})
assert f.text == "∂loss/∂w = (y − t) · y(1 − y) · x + λ w   where y = σ(w x + b)"
f"""),
    ("code", """print(fg.viz.formula(gb, lhs="∂loss/∂b"))
print(fg.viz.formula(loss, lhs="loss"))"""),
]

LOGISTIC = [
    ("md", """# Logistic regression, trained

A linear classifier for two overlapping clouds of points in the plane, binary
cross-entropy with an L2 penalty, trained with Adam on mini-batches; then the loss curve
and the decision boundary."""),
    ("code", """import matplotlib
matplotlib.use("Agg")                     # draws without a display; we show the saved PNG
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import flowgrad as fg

rng = np.random.default_rng(0)
n = 400
T = (rng.random(n) < 0.5).astype(float)                     # class 0 or 1
centres = np.array([[-1.0, -0.5], [1.0, 0.8]])
X = centres[T.astype(int)] + rng.normal(scale=0.8, size=(n, 2))
X.shape, T.mean()"""),
    ("code", """lam = 1e-3
with fg.Graph() as g:
    x = fg.placeholder("X", shape=(None, 2))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(2), name="w")
    b = fg.variable(0.0, name="b")
    loss = fg.bce_with_logits(fg.linear(x, w, b), t) + lam * fg.l2(w)
    gw, gb = fg.grad(loss, [w, b])
fg.viz.formula(gw, lhs="∂loss/∂w", symbols={"λ": lam})"""),
    ("md", """The gradient reads as the textbook formula: $X^\\top(\\sigma(Xw + b) - t)/n + \\lambda w$.
Now train."""),
    ("code", """opt = fg.optim.Adam([w, b], lr=0.05)
step = opt.minimize(loss)
full = fg.compile(loss)
history = [float(full(X=X, t=T))]
for epoch in range(40):
    for xb, tb in fg.batches(X, T, batch_size=50, seed=epoch):
        step(X=xb, t=tb)
    history.append(float(full(X=X, t=T)))
print(f"loss: {history[0]:.4f} → {history[-1]:.4f}")
assert history[-1] < 0.2 < np.log(2) <= history[0] + 1e-12"""),
    ("code", """fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.plot(history, marker="o", ms=3)
ax1.set(xlabel="epoch", ylabel="loss (all points)", title="Training loss, Adam")
ax2.scatter(*X.T, c=T, cmap="coolwarm", s=10)
wv, bv = w.value, float(b.value)
xs = np.linspace(X[:, 0].min(), X[:, 0].max(), 2)
ax2.plot(xs, -(wv[0] * xs + bv) / wv[1], "k-", label="σ(x·w + b) = ½")
ax2.set(xlabel="x₁", ylabel="x₂", ylim=(X[:, 1].min(), X[:, 1].max()), title="Decision boundary")
ax2.legend(loc="lower right")
fig.tight_layout()
fig.savefig("loss.png", dpi=90)
display(Image("loss.png"))"""),
    ("code", """with g:
    predict = fg.compile(fg.sigmoid(fg.linear(x, w, b)))
accuracy = np.mean((predict(X=X) > 0.5) == T)
print(f"training accuracy: {accuracy:.3f}")
assert accuracy > 0.85"""),
]


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                             for kind, src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for k, cell in enumerate(nb.cells):      # stable ids: regenerating changes nothing
        cell["id"] = f"cell-{k:02d}"
    return nb


NOTEBOOKS = {"worked_example.ipynb": WORKED, "logistic_regression.ipynb": LOGISTIC}


def main():
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
