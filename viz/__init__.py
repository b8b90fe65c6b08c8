"""Drawing graphs with values and adjoints (graphviz), and backprop walkthroughs.

``draw(trace)`` returns a ``graphviz.Digraph`` (shown inline in notebooks);
``walkthrough(trace, "backprop.html")`` writes the seed's algorithm one step per frame.
"""
from .dot import Drawing, GraphvizNotFoundError, dot_available, draw  # noqa: F401
from .walkthrough import walkthrough  # noqa: F401

__all__ = ["draw", "walkthrough", "dot_available", "Drawing", "GraphvizNotFoundError"]
from .formula import Formula, formula  # noqa: F401
