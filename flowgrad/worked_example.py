"""The lecture notes' worked example, "Univariate logistic least squares regression", as a graph.

    z = w x + b,   y = σ(z),   L = ½ (y − t)²,   R = ½ w²,   𝓛 = L + λ R

Examples, drawings and tests of the teaching material all start from this graph;
``hand_adjoints`` is the lecture notes' backward pass written out by hand, for comparison.
"""
from __future__ import annotations

import math

from .leaves import placeholder, variable
from .ops import sigmoid


def univariate_logistic(w0=0.8, b0=-0.3, lam=0.1, loss_name="loss") -> dict:
    """Build the lecture notes' graph in the current graph; its nodes by the lecture notes' symbols:
    ``x t w b z y L R loss`` (x and t are placeholders, w and b variables)."""
    x = placeholder("x")
    t = placeholder("t")
    w = variable(w0, name="w")
    b = variable(b0, name="b")
    z = (w * x + b).named("z")
    y = sigmoid(z).named("y")
    L = (0.5 * (y - t) ** 2).named("L")
    R = (0.5 * w ** 2).named("R")
    loss = (L + lam * R).named(loss_name)
    return dict(x=x, t=t, w=w, b=b, z=z, y=y, L=L, R=R, loss=loss)


def hand_adjoints(w0=0.8, b0=-0.3, x0=1.5, t0=1.0, lam=0.1) -> dict:
    """The lecture notes' backward pass by hand: {symbol: v̄} for L R y z w b x."""
    y = 1 / (1 + math.exp(-(w0 * x0 + b0)))
    Lbar = 1.0                      # L̄ = 𝓛̄ d𝓛/dL
    Rbar = lam                      # R̄ = 𝓛̄ λ
    ybar = Lbar * (y - t0)          # ȳ = L̄ (y − t)
    zbar = ybar * y * (1 - y)       # z̄ = ȳ σ'(z)
    return {"L": Lbar, "R": Rbar, "y": ybar, "z": zbar,
            "w": zbar * x0 + Rbar * w0,   # w̄ = z̄ x + R̄ w
            "b": zbar,                    # b̄ = z̄
            "x": zbar * w0}               # x̄ = z̄ w

__all__ = ["univariate_logistic", "hand_adjoints"]


def __dir__():
    # the public names only: dir(fg.worked_example) shows no np, math or threading
    return sorted(__all__)
