"""Drawing graphs with values and adjoints (graphviz), and backprop walkthroughs.

``draw(trace)`` returns a ``graphviz.Digraph`` (shown inline in notebooks);
``walkthrough(trace)`` plays the lecture notes' algorithm one step per frame inline in a notebook
(``.save("backprop.html")``, or ``walkthrough(trace, "backprop.html")`` writes it at once).
"""
from .dot import Drawing, GraphvizNotFoundError, dot_available, draw  # noqa: F401
from .walkthrough import NeedsTraceError, Walkthrough, walkthrough  # noqa: F401

from .formula import Formula, formula  # noqa: F401
from .unroll import UnrolledTrace, UnrollError, unroll  # noqa: F401  (issue 20: BPTT drawn)

__all__ = ["draw", "walkthrough", "dot_available", "Drawing", "GraphvizNotFoundError",
           "Walkthrough", "NeedsTraceError", "formula", "Formula",
           "unroll", "UnrolledTrace", "UnrollError"]
